"""The aesthetic head: LAION's exact layout, strict loading, and the official file when it is at hand."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.clip_models import build_head, save_head
from video_aesthetics.errors import WeightsError
from video_aesthetics.files import sha256_file
from video_aesthetics.head import (
    OFFICIAL_HEAD_FILENAME,
    OFFICIAL_HEAD_SHA256,
    AestheticHead,
    expected_shapes,
    fold_head,
    head_scores,
    load_head,
    reduce_scores,
)

OFFICIAL_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / OFFICIAL_HEAD_FILENAME
LAION_KEYS = {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


def _outputs(head: torch.nn.Module, dim: int = 768) -> torch.Tensor:
    x = torch.randn(5, dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return head(x)


def test_layout_is_laions() -> None:
    head = AestheticHead(768)
    assert set(head.state_dict()) == LAION_KEYS
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == expected_shapes(768)
    assert head.input_dim == 768
    assert [type(m).__name__ for m in head.layers] == ["Linear", "Dropout"] * 3 + ["Linear", "Linear"]
    assert [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2, 0.1]
    assert head.eval()(torch.zeros(4, 768)).shape == (4, 1)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    original = build_head(768, seed=4)
    path = save_head(original, tmp_path / f"head{suffix}")
    loaded = load_head(path, embed_dim=768)
    assert loaded.input_dim == 768 and loaded.module.input_dim == 768
    assert not loaded.module.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in loaded.module.parameters())
    torch.testing.assert_close(_outputs(loaded.module), _outputs(original), rtol=0, atol=0)
    assert loaded.identity == {"path": str(path.resolve()), "sha256": sha256_file(path), "official": False}


def test_other_width_is_read_from_the_file(tmp_path: Path) -> None:
    loaded = load_head(save_head(build_head(512, seed=1), tmp_path / "head512.pth"))
    assert loaded.input_dim == 512
    assert _outputs(loaded.module, 512).shape == (5, 1)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapper_and_module_prefix_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    original = build_head(768, seed=2)
    state = {f"module.{k}": v for k, v in original.state_dict().items()}
    path = tmp_path / "wrapped.pth"
    torch.save({wrapper: state, "epoch": 7}, path)
    torch.testing.assert_close(_outputs(load_head(path).module), _outputs(original), rtol=0, atol=0)


def test_seed_naming_is_refused_with_the_keys_listed(tmp_path: Path) -> None:
    # The seed's head called its Sequential "net" and loaded with strict=False: nothing loaded.
    state = {k.replace("layers.", "net."): v for k, v in build_head(768).state_dict().items()}
    path = tmp_path / "seed.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_head(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys" in message and "layers.0.weight" in message and "layers.7.bias" in message
    assert "unexpected keys" in message and "net.0.weight" in message


def test_wrong_shape_is_refused_with_expected_and_found(tmp_path: Path) -> None:
    state = build_head(768).state_dict()
    state["layers.2.weight"] = torch.zeros(64, 1024)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"layers\.2\.weight: expected \(128, 1024\), found \(64, 1024\)"):
        load_head(path)


def test_extra_key_is_refused(tmp_path: Path) -> None:
    state = build_head(768).state_dict()
    state["layers.1.weight"] = torch.zeros(3)
    path = tmp_path / "extra.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(WeightsError, match=r"unexpected keys \['layers\.1\.weight'\]"):
        load_head(path)


def test_embed_dim_mismatch_names_both_widths(tmp_path: Path) -> None:
    path = save_head(build_head(512), tmp_path / "head512.pth")
    with pytest.raises(WeightsError) as info:
        load_head(path, embed_dim=768)
    assert "512" in str(info.value) and "768" in str(info.value)


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth"):
        load_head(missing)


def test_pickled_code_is_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"layers.0.weight": Path("/etc/passwd")}, path)  # any non-tensor object needs unpickling code
    with pytest.raises(WeightsError, match="tensors-only"):
        load_head(path)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    state = build_head(768).state_dict()
    state["layers.4.bias"][0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="NaN"):
        load_head(path)


@pytest.mark.parametrize("checkpoint", [None, ""])
def test_default_offline_without_cache_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: str | None
) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError) as info:
        load_head(checkpoint)
    message = str(info.value)
    for part in (
        OFFICIAL_HEAD_FILENAME,
        str(tmp_path / "empty-cache" / OFFICIAL_HEAD_FILENAME),
        "VIDEO_AESTHETICS_CACHE",
        "mlp_checkpoint",
        "github.com",
    ):
        assert part in message


def test_default_refuses_a_cached_file_with_the_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path))
    impostor = save_head(build_head(768), tmp_path / OFFICIAL_HEAD_FILENAME)
    with pytest.raises(WeightsError) as info:
        load_head(None)
    message = str(info.value)
    assert OFFICIAL_HEAD_SHA256 in message and sha256_file(impostor) in message and str(impostor) in message


@pytest.mark.skipif(
    not OFFICIAL_FILE.is_file(), reason="the official head is not beside the checkout (../shared/weights)"
)
def test_official_file_loads_on_cpu(tmp_path: Path) -> None:
    loaded = load_head(OFFICIAL_FILE, embed_dim=768)
    assert loaded.input_dim == 768
    assert loaded.identity["sha256"] == OFFICIAL_HEAD_SHA256 and loaded.identity["official"] is True
    assert next(loaded.module.parameters()).device.type == "cpu"
    embeddings = torch.nn.functional.normalize(torch.randn(8, 768, generator=torch.Generator().manual_seed(0)), dim=-1)
    with torch.no_grad():
        scores = loaded.module(embeddings)
    assert scores.shape == (8, 1) and torch.isfinite(scores).all()


@pytest.mark.skipif(
    not OFFICIAL_FILE.is_file(), reason="the official head is not beside the checkout (../shared/weights)"
)
def test_default_uses_the_official_file_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path))
    shutil.copy(OFFICIAL_FILE, tmp_path / OFFICIAL_HEAD_FILENAME)
    loaded = load_head(None, embed_dim=768)
    assert loaded.identity["official"] is True
    assert loaded.identity["path"] == str((tmp_path / OFFICIAL_HEAD_FILENAME).resolve())


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e300])
def test_weights_that_are_not_finite_in_float32_are_refused(tmp_path: Path, value: float) -> None:
    # 1e300 is finite in the file's float64 and infinite once the head runs in float32.
    state = {key: tensor.double() for key, tensor in build_head(768).state_dict().items()}
    state["layers.7.weight"][0, 3] = value
    path = tmp_path / "head.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="NaN or infinite"):
        load_head(path)


def _heads() -> list[tuple[str, AestheticHead]]:
    """A seeded head, and LAION's official one where the shared weights are here."""
    found = [("seeded", build_head(768, seed=5))]
    if OFFICIAL_FILE.is_file():
        found.append(("official", load_head(OFFICIAL_FILE).module))
    return found


def _unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, 768)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _layer_by_layer_float64(head: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head.double().eval()(torch.from_numpy(rows.astype(np.float64))).squeeze(-1).numpy()


@pytest.mark.parametrize(("name", "head"), _heads())
def test_the_folded_head_is_within_half_a_float32_unit_of_the_head_in_float64(name: str, head: AestheticHead) -> None:
    rows = _unit_rows(4096, seed=1)
    folded = fold_head(head)
    scores = head_scores(folded, rows)
    in_float32 = _outputs_of(head, rows)
    reference = _layer_by_layer_float64(head, rows)
    gap = np.abs(scores.astype(np.float64) - reference)
    half_unit = np.spacing(np.abs(reference).astype(np.float32)).astype(np.float64) / 2
    print(f"\n{name}: folded float64 head, largest change from layer-by-layer float64: {gap.max():.3g} "
          f"({(gap / half_unit).max():.3f} half float32 units); layer-by-layer float32: "
          f"{np.abs(in_float32 - reference).max():.3g}")  # fmt: skip
    assert scores.dtype == np.float32
    # Rounded once from a float64 sum whose own error is ~1e-13: at most half a unit, and a hair for double rounding.
    assert np.all(gap <= half_unit * (1 + 1e-6))
    assert abs(rows.astype(np.float64) @ folded.weight + folded.bias - reference).max() < 1e-12


def _outputs_of(head: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head.float().eval()(torch.from_numpy(rows)).squeeze(-1).double().numpy()


def test_a_rows_score_does_not_depend_on_the_rows_around_it() -> None:
    folded = fold_head(build_head(768, seed=2))
    rows = _unit_rows(1000, seed=2)
    together = head_scores(folded, rows)
    alone = np.concatenate([head_scores(folded, rows[i : i + 1]) for i in range(len(rows))])
    assert together.tobytes() == alone.tobytes()
    # Unaligned, odd-sized slices of a larger array; float16 rows give their float32 values' scores.
    for start, stop in ((1, 2), (3, 300), (257, 999)):
        assert head_scores(folded, rows[start:stop]).tobytes() == together[start:stop].tobytes()
    half = rows.astype(np.float16)
    assert head_scores(folded, half).tobytes() == head_scores(folded, half.astype(np.float32)).tobytes()
    assert head_scores(folded, rows[:0]).shape == (0,)
    with pytest.raises(ValueError, match="do not fit a head for 768-wide"):
        head_scores(folded, rows[:, :512])


def test_fold_head_refuses_a_head_with_an_activation() -> None:
    head = build_head(768, seed=2)
    head.layers[1] = torch.nn.ReLU()
    with pytest.raises(TypeError, match="only a head of linear and dropout layers"):
        fold_head(head)


@pytest.mark.parametrize("reduction", ["mean", "min", "max"])
def test_reduce_scores_reduces_each_clip_on_its_own(reduction: str) -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 12, 200)
    scores = (rng.standard_normal(int(counts.sum())) * 3 + 5).astype(np.float32)
    together = reduce_scores(scores, counts, reduction)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    alone = np.concatenate(
        [reduce_scores(scores[a:b], np.array([b - a]), reduction) for a, b in itertools.pairwise(bounds)]
    )
    assert together.dtype == np.float32 and together.tobytes() == alone.tobytes()
    python = {"mean": lambda v: sum(v) / len(v), "min": min, "max": max}[reduction]
    expected = [python([float(x) for x in scores[a:b]]) for a, b in itertools.pairwise(bounds)]
    assert together.tolist() == np.array(expected, dtype=np.float32).tolist()


def test_reduce_scores_keeps_nan_and_refuses_bad_counts() -> None:
    scores = np.array([1.0, np.nan, 2.0, 3.0], np.float32)
    assert np.isnan(reduce_scores(scores, np.array([2, 2]), "min")).tolist() == [True, False]
    assert reduce_scores(scores, np.zeros(0, np.int64), "mean").shape == (0,)
    with pytest.raises(ValueError, match="do not split 4 frame scores"):
        reduce_scores(scores, np.array([2, 1]), "mean")
    with pytest.raises(ValueError, match="reduction must be one of mean, min, max"):
        reduce_scores(scores, np.array([4]), "median")
