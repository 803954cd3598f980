"""video_aesthetics.rescore: stored embeddings rescored with a head, reduction or threshold, without frames or CLIP."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.clip_models import build_head, save_head
from helpers.media import clip_record, frame_dataset, read_jsonl, write_frames, write_jsonl
from video_aesthetics.cli import main
from video_aesthetics.config import ScoringConfig
from video_aesthetics.embeddings import EmbeddingsOutput
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.records import clip_list
from video_aesthetics.report import ReportOutput
from video_aesthetics.rescore import rescore_file
from video_aesthetics.runner import score_file

SHARED_HEAD = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "sac+logos+ava1-l14-linearMSE.pth"


def _config(model_args: dict[str, str], root: Path, **changes: Any) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": str(root), "num_workers": 0, "device": "cpu", **changes})


def _scores(path: Path, key: str = "video_clips") -> list[float | None]:
    return [clip.get("aesthetic_score") for record in read_jsonl(path) for clip in clip_list(record, key) or []]


def _max_gap(first: list[float | None], second: list[float | None]) -> float:
    assert len(first) == len(second)
    assert [a is None for a in first] == [b is None for b in second]
    return max((abs(a - b) for a, b in zip(first, second, strict=True) if a is not None), default=0.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four videos of three clips (five frames each), plus clips that cannot be scored, with reasons."""
    root = tmp_path_factory.mktemp("rescore")
    source, frames = frame_dataset(root, videos=4, clips_per_video=3, frames_per_clip=5)
    broken = write_frames(frames, "broken", "broken_0", 2, seed=7)
    for path in broken:
        path.write_bytes(b"not a jpeg")
    records = [
        *read_jsonl(source),
        clip_record("./videos/broken.mp4", ["broken_0", "absent"]),
        {"caption": "no clips: passes through"},
    ]
    return write_jsonl(root / "input.jsonl", records), frames


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Another seeded head, scaled, and LAION's official head when the shared weights are here.

    A seeded head's scores barely move from clip to clip (about 1e-4): scaled so that its folded weight
    vector is as long as LAION's (18; the seeded one is 0.063), float16's deviation is measured at the
    scale of real scores, as it is with the official head where the shared weights are.
    """
    import torch

    folder = tmp_path_factory.mktemp("heads")
    scaled = build_head(768, seed=5)
    with torch.no_grad():
        scaled.layers[0].weight.mul_(287.0)
    found = {"scaled": save_head(scaled, folder / "scaled.pth")}
    if SHARED_HEAD.is_file():
        found["official"] = SHARED_HEAD
    return found


_RUNS: dict[str, Path] = {}


def _score(
    dataset: tuple[Path, Path], out: Path, model_args: dict[str, str], dtype: str | None = None, **changes: Any
) -> Path:
    """A full scoring run of the dataset; runs are kept for the module (scoring is the slow part), copied to ``out``."""
    import shutil

    key = json.dumps([str(dataset[0]), dtype, changes], sort_keys=True, default=str)
    if key not in _RUNS or not _RUNS[key].exists():
        source, frames = dataset
        kept = source.parent / f"run{len(_RUNS)}.jsonl"
        embeddings = EmbeddingsOutput(kept.with_suffix(".parquet"), dtype) if dtype else None
        score_file(source, kept, _config(model_args, frames, **changes), embeddings=embeddings)
        _RUNS[key] = kept
    shutil.copyfile(_RUNS[key], out)
    if dtype:
        shutil.copyfile(_RUNS[key].with_suffix(".parquet"), out.with_suffix(".parquet"))
    return out


def _head_change(heads: dict[str, Path], name: str) -> dict[str, Any]:
    if name == "test":
        return {}
    if name not in heads:
        pytest.skip("LAION's head is not in ../shared/weights on this machine")
    return {"mlp_checkpoint": str(heads[name])}


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 1e-3), ("float32", 1e-5)])
@pytest.mark.parametrize("head", ["test", "scaled", "official"])
def test_rescore_with_the_same_head_matches_the_direct_run(
    tmp_path: Path,
    dataset: tuple[Path, Path],
    model_args: dict[str, str],
    heads: dict[str, Path],
    head: str,
    dtype: str,
    tolerance: float,
) -> None:
    changes = {"frame_scores": True, **_head_change(heads, head)}
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, dtype, **changes)
    again = tmp_path / "again.jsonl"
    stats = rescore_file(direct, direct.with_suffix(".parquet"), again, _config(model_args, dataset[1], **changes))
    gap = _max_gap(_scores(direct), _scores(again))
    print(f"\nsame head ({head}), {dtype}: largest score change after rescoring: {gap:.3g}")
    assert gap <= tolerance
    before, after = read_jsonl(direct), read_jsonl(again)
    # Everything but the numbers is the same: fields, order, errors, passthrough records.
    for old, new in zip(before, after, strict=True):
        assert old.keys() == new.keys()
        for a, b in zip(clip_list(old, "video_clips") or [], clip_list(new, "video_clips") or [], strict=True):
            assert a.keys() == b.keys()
            assert a.get("aesthetic_error") == b.get("aesthetic_error")
            if a.get("aesthetic_frame_scores"):
                assert (
                    max(map(abs, map(float.__sub__, a["aesthetic_frame_scores"], b["aesthetic_frame_scores"])))
                    <= tolerance
                )
    assert stats.errors == {"corrupt_frames": 1, "no_frames": 1}
    assert (stats.records, stats.clips, stats.scored, stats.passthrough) == (6, 14, 12, 1)


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 1e-3), ("float32", 1e-5)])
@pytest.mark.parametrize("change", ["scaled", "official", "min", "max"])
def test_another_head_or_reduction_equals_a_full_run_with_it(
    tmp_path: Path,
    dataset: tuple[Path, Path],
    model_args: dict[str, str],
    heads: dict[str, Path],
    change: str,
    dtype: str,
    tolerance: float,
) -> None:
    changes = {"reduction": change} if change in ("min", "max") else _head_change(heads, change)
    first = _score(dataset, tmp_path / "first.jsonl", model_args, dtype)
    full = _score(dataset, tmp_path / "full.jsonl", model_args, None, aes_min=0.0, **changes)
    rescored = tmp_path / "rescored.jsonl"
    rescore_file(
        first, first.with_suffix(".parquet"), rescored, _config(model_args, dataset[1], aes_min=0.0, **changes)
    )
    gap = _max_gap(_scores(full), _scores(rescored))
    print(f"\n{change}, {dtype}: largest difference from a full run: {gap:.3g}")
    assert gap <= tolerance
    # The filter marks the same clips; a changed head really changed the scores.
    flags = [[c.get("filtered") for c in clip_list(r, "video_clips") or []] for r in read_jsonl(full)]
    assert flags == [[c.get("filtered") for c in clip_list(r, "video_clips") or []] for r in read_jsonl(rescored)]
    assert _max_gap(_scores(first), _scores(full)) > (tolerance if change in ("scaled", "official") else 0)


def test_rescore_loads_neither_clip_nor_a_frame(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    """In a fresh interpreter, with the frames gone: open_clip is never imported and the run succeeds."""
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    code = (
        "import sys\n"
        "from video_aesthetics.cli import main\n"
        f"rc = main(['rescore', '--input', {str(direct)!r}, '--embeddings', {str(direct.with_suffix('.parquet'))!r},"
        f" '--output', {str(tmp_path / 'out.jsonl')!r}, '--mlp-checkpoint', {model_args['mlp_checkpoint']!r},"
        f" '--figure-root', {str(tmp_path / 'no-frames-here')!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'open_clip' not in sys.modules, 'open_clip was imported'\n"
        "assert 'video_aesthetics.clip_loader' not in sys.modules\n"
        "assert 'video_aesthetics.scoring' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _max_gap(_scores(direct), _scores(tmp_path / "out.jsonl")) <= 1e-3


def test_clips_without_embeddings_keep_their_null_and_reason(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    out = tmp_path / "out.jsonl"
    rescore_file(direct, direct.with_suffix(".parquet"), out, _config(model_args, dataset[1]))
    broken = read_jsonl(out)[4]["video_clips"]["clips"]
    assert [(c["aesthetic_score"], c["aesthetic_error"]) for c in broken] == [
        (None, "corrupt_frames"),
        (None, "no_frames"),
    ]
    # From the unscored input, the reason is not known: the clip says it was not scored.
    out2 = tmp_path / "from-input.jsonl"
    rescore_file(dataset[0], direct.with_suffix(".parquet"), out2, _config(model_args, dataset[1]))
    assert [c["aesthetic_error"] for c in read_jsonl(out2)[4]["video_clips"]["clips"]] == ["unscored", "unscored"]
    assert _scores(out2)[:12] == _scores(out)[:12]


def _mismatched(records: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    records = [json.loads(json.dumps(r)) for r in records]
    if how == "swapped":
        records[0], records[1] = records[1], records[0]
    elif how == "clip removed":
        del records[2]["video_clips"]["clips"][1]
    elif how == "record removed":
        del records[3]
    elif how == "record added":
        records.append(records[0])
    elif how == "other video":
        records[1]["video"] = ["./videos/elsewhere.mp4"]
    elif how == "clip renamed":
        records[0]["video_clips"]["clips"][2]["id"] = "video0_renamed"
    elif how == "scored but no embeddings":
        records[4]["video_clips"]["clips"][0]["aesthetic_score"] = 5.0
        del records[4]["video_clips"]["clips"][0]["aesthetic_error"]
    return records


@pytest.mark.parametrize(
    "how",
    [
        "swapped",
        "clip removed",
        "record removed",
        "record added",
        "other video",
        "clip renamed",
        "scored but no embeddings",
    ],
)
def test_records_that_do_not_match_the_embeddings_are_refused_before_writing(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str], how: str
) -> None:
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    edited = write_jsonl(tmp_path / "edited.jsonl", _mismatched(read_jsonl(direct), how))
    out = tmp_path / "out" / "out.jsonl"
    out.parent.mkdir()
    out.write_text("previous\n")
    with pytest.raises(InputError, match="does not match the embeddings|were written for") as caught:
        rescore_file(edited, direct.with_suffix(".parquet"), out, _config(model_args, dataset[1]))
    assert "nothing was written" in str(caught.value)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]


def test_embeddings_of_another_clip_are_refused_naming_both(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    from helpers.clip_models import build_tiny_clip, save_open_clip_dir, tiny_clip_config

    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    embeddings = direct.with_suffix(".parquet")
    other = save_open_clip_dir(build_tiny_clip(seed=9), tiny_clip_config(), tmp_path / "other-clip")
    config = _config(model_args, dataset[1])
    with pytest.raises(ConfigError) as caught:
        rescore_file(direct, embeddings, tmp_path / "out.jsonl", config, clip_model=str(other))
    message = str(caught.value)
    assert model_args["clip_model"] in message and str(other) in message
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(ConfigError, match="ViT-L/14"):
        rescore_file(direct, embeddings, tmp_path / "out.jsonl", config, clip_model="ViT-L/14")
    # The same model, named by folder, by weights file or by SHA-256, is accepted.
    weights = Path(model_args["clip_model"]) / "open_clip_model.safetensors"
    from video_aesthetics.files import sha256_file

    for name in (model_args["clip_model"], str(weights), sha256_file(weights)):
        rescore_file(direct, embeddings, tmp_path / "out.jsonl", config, clip_model=name)


def test_a_head_for_another_width_is_refused(tmp_path: Path, dataset: tuple[Path, Path], model_args: dict) -> None:
    from video_aesthetics.errors import WeightsError

    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    narrow = save_head(build_head(512, seed=1), tmp_path / "narrow.pth")
    with pytest.raises(WeightsError, match="512"):
        rescore_file(
            direct,
            direct.with_suffix(".parquet"),
            tmp_path / "o.jsonl",
            _config(model_args, dataset[1], mlp_checkpoint=str(narrow)),
        )


def test_outputs_that_collide_with_the_inputs_are_refused(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    embeddings = direct.with_suffix(".parquet")
    config = _config(model_args, dataset[1])
    head = tmp_path / "head.pth"
    shutil.copyfile(model_args["mlp_checkpoint"], head)
    config = config.replace(mlp_checkpoint=str(head))
    parts = tmp_path / "parts"
    parts.mkdir()
    shutil.copyfile(embeddings, parts / "part-00000.parquet")
    inputs = [embeddings, direct, head, parts / "part-00000.parquet"]
    before = [p.read_bytes() for p in inputs]
    for location, output, report in [
        (embeddings, embeddings, None),
        (embeddings, direct, None),
        (embeddings, head, None),
        (embeddings, tmp_path / "out.jsonl", embeddings),
        (embeddings, tmp_path / "out.jsonl", head),
        (parts, parts / "part-00000.parquet", None),
        (parts, tmp_path / "out.jsonl", parts / "part-00000.parquet"),
    ]:
        with pytest.raises(ConfigError, match="would overwrite the input"):
            rescore_file(direct, location, output, config, report=ReportOutput(report, {}) if report else None)
    assert [p.read_bytes() for p in inputs] == before
    assert not (tmp_path / "out.jsonl").exists()


def test_a_dataset_of_parts_rescores_the_concatenated_file(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    """Shards scored separately: their parts, in name order, line up with the shards' outputs one after another."""
    source, frames = dataset
    records = read_jsonl(source)
    parts = tmp_path / "embeddings"
    parts.mkdir()
    outputs = []
    for index, chunk in enumerate((records[:2], records[2:5], records[5:])):
        shard = write_jsonl(tmp_path / f"shard{index}.jsonl", chunk)
        out = tmp_path / f"scored{index}.jsonl"
        score_file(
            shard,
            out,
            _config(model_args, frames),
            embeddings=EmbeddingsOutput(parts / f"part-{index:05d}.parquet", "float32"),
        )
        outputs.append(out)
    merged = tmp_path / "merged.jsonl"
    merged.write_bytes(b"".join(out.read_bytes() for out in outputs))
    again = tmp_path / "again.jsonl"
    rescore_file(merged, parts, again, _config(model_args, frames))
    assert _max_gap(_scores(merged), _scores(again)) <= 1e-5


def test_cli_rescore_prints_counts_and_writes_a_report(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    args = [
        "rescore",
        "--input", str(direct),
        "--embeddings", str(direct.with_suffix(".parquet")),
        "--output", str(tmp_path / "out.jsonl"),
        "--mlp-checkpoint", model_args["mlp_checkpoint"],
        "--reduction", "max",
        "--aes-min", "0",
        "--report", str(tmp_path / "report.html"),
    ]  # fmt: skip
    assert main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["clips"] == 14 and line["scored"] == 12 and line["report"] == str(tmp_path / "report.html")
    assert line["model"]["head"]["path"] == str(Path(model_args["mlp_checkpoint"]).resolve())
    assert (tmp_path / "report.html").read_text().lower().startswith("<!doctype html>")
    assert all(isinstance(s, float) and math.isfinite(s) for s in _scores(tmp_path / "out.jsonl")[:12])
    # Bad input is an exit 2 with a message, not a traceback.
    args[2] = str(tmp_path / "missing.jsonl")
    assert main(args) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_whole_video_embeddings_rescore(tmp_path: Path, model_args: dict[str, str]) -> None:
    from helpers.media import write_video

    videos = [write_video(tmp_path / f"v{i}.mp4", frames=12, seed=i) for i in range(2)]
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"video": str(v)} for v in videos] + [{"video": str(tmp_path / "gone.mp4")}]
    )
    out = tmp_path / "out.jsonl"
    config = _config(model_args, tmp_path, video_clips_key="")
    score_file(source, out, config, embeddings=EmbeddingsOutput(tmp_path / "e.parquet", "float32"))
    again = tmp_path / "again.jsonl"
    rescore_file(out, tmp_path / "e.parquet", again, config)
    first, second = read_jsonl(out), read_jsonl(again)
    assert abs(first[0]["aesthetic_score"] - second[0]["aesthetic_score"]) <= 1e-5
    assert second[2]["aesthetic_score"] is None and second[2]["aesthetic_error"] == first[2]["aesthetic_error"]
    with pytest.raises(ConfigError, match="whole videos"):
        rescore_file(out, tmp_path / "e.parquet", tmp_path / "x.jsonl", _config(model_args, tmp_path))


# --- the DAG: publishing embeddings, and rescore runs -------------------------------------------------


@pytest.fixture(scope="module")
def dag_runs(
    tmp_path_factory: pytest.TempPathFactory,
    dataset: tuple[Path, Path],
    model_args: dict[str, str],
    heads: dict[str, Path],
) -> dict[str, Any]:
    """dag.test() runs in one process: scoring with embeddings, without, and rescore runs of both."""
    from helpers.airflow_env import airflow_env, dag_test, new_home

    root = tmp_path_factory.mktemp("dag_rescore")
    source, frames = dataset
    out = root / "out"
    base = {
        "input_path": str(source),
        "output_root": str(out),
        "figure_root": str(frames),
        "on_missing_frames": "skip",
        "chunk_size": 2,
        "num_workers": 0,
        "device": "cpu",
        "batch_size": 2,
        "reduction": "mean",
        "aes_min": None,
        "embeddings": "off",
        "rescore_from": None,
        **model_args,
    }
    rescore = {**base, "mlp_checkpoint": str(heads["scaled"]), "reduction": "max", "aes_min": -14.0}
    plan = [
        ("scored", {**base, "partition": "scored", "embeddings": "float32"}),
        ("plain", {**base, "partition": "plain"}),
        ("rescored", {**rescore, "partition": "rescored", "rescore_from": str(out / "scored")}),
        ("refused", {**rescore, "partition": "refused", "rescore_from": str(out / "plain" / "_manifest.json")}),
    ]
    env = airflow_env(new_home(tmp_path_factory, "dag_rescore_home"))
    results = dag_test(
        env, "video_aesthetic_scoring", [{"conf": conf, "logical_date": None} for _, conf in plan], timeout=1200
    )
    return {"out": out, "runs": dict(zip([name for name, _ in plan], results, strict=True)), "rescore": rescore}


@pytest.mark.slow
def test_the_dag_publishes_embeddings_named_in_the_manifest(
    dag_runs: dict[str, Any], dataset: tuple[Path, Path], model_args: dict
) -> None:
    from helpers.airflow_env import published
    from video_aesthetics.files import sha256_file

    run = dag_runs["runs"]["scored"]
    assert run.get("state") == "success", run.get("message") or run["log"][-5000:]
    manifest, scored = published(dag_runs["out"] / "scored")
    embedded = manifest["output"]["embeddings"]
    assert embedded["dtype"] == "float32" and len(embedded["parts"]) == 3  # 6 records, 2 per shard
    assert Path(embedded["path"]) == scored.parent / "embeddings"
    assert [p["first_line"] for p in embedded["parts"]] == [0, 2, 4]
    for index, part in enumerate(embedded["parts"]):
        assert Path(part["path"]).name == f"part-{index:05d}.parquet"
        assert part["sha256"] == sha256_file(part["path"])
    assert embedded["rows"] == sum(p["rows"] for p in embedded["parts"]) == 12 * 3  # 12 clips, 3 frames each
    # The published parts are one dataset for rescore, aligned with the published scored.jsonl.
    again = scored.parent.parent / "again.jsonl"
    rescore_file(scored, Path(embedded["path"]), again, _config(model_args, dataset[1]))
    assert _max_gap(_scores(scored), _scores(again)) <= 1e-5
    plain, _ = published(dag_runs["out"] / "plain")
    assert plain["output"]["embeddings"] is None
    assert not (Path(plain["output"]["path"]).parent / "embeddings").exists()


@pytest.mark.slow
def test_a_rescore_run_publishes_what_a_full_run_with_its_head_would(
    tmp_path: Path, dag_runs: dict[str, Any], dataset: tuple[Path, Path], model_args: dict, heads: dict[str, Path]
) -> None:
    from helpers.airflow_env import published

    run = dag_runs["runs"]["rescored"]
    assert run.get("state") == "success", run.get("message") or run["log"][-5000:]
    states = {t["task_id"]: t["state"] for t in run["tasks"]}
    assert states["merge"] == "success" and states.get("score_shard") in (None, "skipped")
    manifest, rescored = published(dag_runs["out"] / "rescored")
    direct = _score(
        dataset,
        tmp_path / "direct.jsonl",
        model_args,
        None,
        mlp_checkpoint=str(heads["scaled"]),
        reduction="max",
        aes_min=-14.0,
    )
    assert _max_gap(_scores(direct), _scores(rescored)) <= 1e-5
    assert [r.keys() for r in read_jsonl(direct)] == [r.keys() for r in read_jsonl(rescored)]
    flags = [[c.get("filtered") for c in clip_list(r, "video_clips") or []] for r in read_jsonl(rescored)]
    assert flags == [[c.get("filtered") for c in clip_list(r, "video_clips") or []] for r in read_jsonl(direct)]
    assert manifest["model"]["head"]["path"] == str(heads["scaled"].resolve())
    assert manifest["config"]["reduction"] == "max"
    embedded = manifest["output"]["embeddings"]
    assert embedded["rescored_from"] == str(dag_runs["out"] / "scored" / "_manifest.json")
    assert len(embedded["parts"]) == 3 and all(Path(p["path"]).is_file() for p in embedded["parts"])
    # A partition published without embeddings cannot be rescored: the run says what to do.
    refused = dag_runs["runs"]["refused"]
    assert refused.get("state") == "failed"
    assert "published without embeddings" in refused["log"]
    assert not (dag_runs["out"] / "refused" / "_manifest.json").exists()


@pytest.mark.parametrize("change", ["same", "scaled", "official", "min", "max"])
def test_float32_embeddings_rescore_to_the_bytes_of_a_direct_run(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str], heads: dict[str, Path], change: str
) -> None:
    """Scoring and rescore apply the head and the reduction through the same functions (head.py): from float32
    embeddings, a rescore writes the very bytes a direct run with its head and reduction writes."""
    changes = (
        {"reduction": change}
        if change in ("min", "max")
        else _head_change(heads, "test" if change == "same" else change)
    )
    first = _score(dataset, tmp_path / "first.jsonl", model_args, "float32", frame_scores=True)
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, None, frame_scores=True, **changes)
    rescored = tmp_path / "rescored.jsonl"
    rescore_file(
        first, first.with_suffix(".parquet"), rescored, _config(model_args, dataset[1], frame_scores=True, **changes)
    )
    assert rescored.read_bytes() == direct.read_bytes()
    assert (change == "same") == (first.read_bytes() == direct.read_bytes())


def test_score_then_rescore_on_the_command_line_writes_the_same_bytes(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    source, frames = dataset
    common = ["--figure-root", str(frames), "--mlp-checkpoint", model_args["mlp_checkpoint"], "--frame-scores"]
    scored, embeddings = tmp_path / "scored.jsonl", tmp_path / "e.parquet"
    assert main(["score", "--input", str(source), "--output", str(scored), "--clip-model", model_args["clip_model"],
                 "--device", "cpu", "--num-workers", "0", "--embeddings", str(embeddings),
                 "--embeddings-dtype", "float32", *common]) == 0  # fmt: skip
    again = tmp_path / "again.jsonl"
    assert (
        main(["rescore", "--input", str(scored), "--embeddings", str(embeddings), "--output", str(again), *common]) == 0
    )
    assert again.read_bytes() == scored.read_bytes()


def test_a_rescore_into_another_field_than_the_scoring_runs_is_refused(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    """Scores written into output_key 'scored': a rescore into video_clips would leave them beside its own."""
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float32", output_key="scored")
    again = tmp_path / "again.jsonl"
    with pytest.raises(ConfigError, match=r"wrote its scores into 'scored': rescore with --output-key scored"):
        rescore_file(direct, direct.with_suffix(".parquet"), again, _config(model_args, dataset[1]))
    assert not again.exists()
    stats = rescore_file(
        direct, direct.with_suffix(".parquet"), again, _config(model_args, dataset[1], output_key="scored")
    )
    assert stats.scored > 0 and again.read_bytes() == direct.read_bytes()
    # The run says how its scores were computed; so do its embeddings.
    assert stats.model["precision"] == "fp32"


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("other video", "record 2 does not match the embeddings {e}: its clip 0 is video './videos/elsewhere.mp4'"),
        ("scored but no embeddings", "record 5 does not match the embeddings {e}: its clip 0 has a score but no"),
        ("failed", "record 1 does not match the embeddings {e}: its clip 0 failed (decode_failed) but has embeddings"),
        ("last clip removed", "record 1 does not match the embeddings {e}: it has no clip {last}, but the embeddings"),
    ],
)
def test_a_mismatch_names_the_record_the_clip_and_what_differs(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str], how: str, problem: str
) -> None:
    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    records = read_jsonl(direct)
    last = len(records[0]["video_clips"]["clips"]) - 1
    if how == "failed":
        records[0]["video_clips"]["clips"][0]["aesthetic_error"] = "decode_failed"
    elif how == "last clip removed":
        del records[0]["video_clips"]["clips"][-1]
    else:
        records = _mismatched(records, how)
    edited = write_jsonl(tmp_path / "edited.jsonl", records)
    embeddings = direct.with_suffix(".parquet")
    with pytest.raises(InputError) as caught:
        rescore_file(edited, embeddings, tmp_path / "out.jsonl", _config(model_args, dataset[1]))
    assert problem.format(e=embeddings, last=last) in str(caught.value)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_cycle_collector_is_left_as_it_was(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str], enabled: bool
) -> None:
    import gc

    direct = _score(dataset, tmp_path / "direct.jsonl", model_args, "float16")
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        rescore_file(direct, direct.with_suffix(".parquet"), tmp_path / "out.jsonl", _config(model_args, dataset[1]))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
