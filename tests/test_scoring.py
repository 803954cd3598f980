from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from helpers.daemonic import run_daemonic, score_results
from helpers.media import clip_record, write_frames
from helpers.reference import reference_clip_score
from video_aesthetics.batches import RankShare
from video_aesthetics.clip_loader import load_clip
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.head import head_scores, load_head
from video_aesthetics.scoring import Scorer, iter_results, resolve_device


def _config(model_args: dict[str, str], root: Path, **changes: object) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": str(root), "num_workers": 0, "device": "cpu", **changes})


@pytest.mark.parametrize("reduction", ["mean", "min", "max"])
def test_clip_score_equals_an_independent_computation(
    tmp_path: Path, model_args: dict, scorer: Scorer, reference: torch.nn.Module, reduction: str
) -> None:
    frames = write_frames(tmp_path, "vid", "vid_0", count=7, seed=11, width=640, height=360)
    config = _config(model_args, tmp_path, reduction=reduction, load_num=3)
    [result] = list(iter_results([clip_record("x/vid.mp4", ["vid_0"])], config, scorer))
    # 7 frames, load_num 3: the first, the middle and the last.
    expected = reference_clip_score(
        reference, Path(model_args["mlp_checkpoint"]), [frames[0], frames[3], frames[6]], reduction
    )
    assert result.error is None
    assert result.score == pytest.approx(expected, abs=1e-5)
    assert len(result.frame_scores) == 3


def test_missing_and_corrupt_frames(
    tmp_path: Path, model_args: dict, scorer: Scorer, reference: torch.nn.Module
) -> None:
    good = write_frames(tmp_path, "v", "v_partly", count=3, seed=2)
    good[1].write_bytes(good[1].read_bytes()[:300])  # truncated: skipped, the other two still count
    broken = write_frames(tmp_path, "v", "v_broken", count=2, seed=3)
    for path in broken:
        path.write_bytes(b"not a jpeg")
    (tmp_path / "v" / "v_empty" / "img").mkdir(parents=True)
    record = clip_record("v.mp4", ["v_partly", "v_broken", "v_empty", "v_absent"])
    results = list(iter_results([record], _config(model_args, tmp_path), scorer))
    assert [r.error for r in results] == [None, "corrupt_frames", "no_frames", "no_frames"]
    expected = reference_clip_score(reference, Path(model_args["mlp_checkpoint"]), [good[0], good[2]])
    assert results[0].score == pytest.approx(expected, abs=1e-5)
    assert all(r.score is None for r in results[1:])


def _dataset(root: Path, videos: int, clips: int) -> list[dict]:
    records = []
    for v in range(videos):
        ids = [f"v{v}_{c}" for c in range(clips)]
        for c, cid in enumerate(ids):
            write_frames(root, f"v{v}", cid, count=2, seed=v * 10 + c, width=96, height=64)
        records.append(clip_record(f"v{v}.mp4", ids))
    return records


def test_workers_and_shards_give_the_same_results_in_order(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    records = _dataset(tmp_path, videos=5, clips=3)
    base = _config(model_args, tmp_path, batch_size=2)
    in_process = list(iter_results(records, base, scorer))
    with_workers = list(iter_results(records, base.replace(num_workers=2), scorer))
    assert [r.seq for r in in_process] == list(range(15))
    assert [(r.seq, r.score) for r in with_workers] == [(r.seq, r.score) for r in in_process]
    halves = [list(iter_results(records, base, scorer, RankShare(rank, 2))) for rank in (0, 1)]
    merged = sorted(halves[0] + halves[1], key=lambda r: r.seq)
    assert [(r.seq, r.score) for r in merged] == [(r.seq, r.score) for r in in_process]
    assert not {r.seq for r in halves[0]} & {r.seq for r in halves[1]}


def test_a_killed_decoding_worker_does_not_end_the_run(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    records = _dataset(tmp_path, videos=8, clips=4)
    config = _config(model_args, tmp_path, batch_size=1, num_workers=2)
    expected = [(r.seq, r.score) for r in iter_results(records, config.replace(num_workers=0), scorer)]
    results = iter_results(records, config, scorer)
    got = [next(results)]
    victims = psutil.Process().children()
    assert victims, "the DataLoader should have started worker processes"
    os.kill(victims[0].pid, signal.SIGKILL)
    got.extend(results)
    assert [(r.seq, r.score) for r in got] == expected


def test_score_pixels_shapes(scorer: Scorer) -> None:
    pixels = torch.randint(0, 255, (4, 224, 224, 3), dtype=torch.uint8)
    scores = scorer.score_pixels(pixels)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert scorer.score_pixels(pixels[:0]).shape == (0,)


def test_a_bf16_tower_keeps_the_head_in_fp32_and_stays_close_to_fp32(
    tmp_path: Path, model_args: dict, scorer: Scorer
) -> None:
    """What GPUs run (a bf16 tower, an fp32 head), run here on the CPU through the same code."""
    clip, head = load_clip(model_args["clip_model"]), load_head(model_args["mlp_checkpoint"])
    half = Scorer(clip.model, head.module, clip.preprocess, "cpu", precision="bf16")
    assert {p.dtype for p in half.tower.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.head.parameters()} == {torch.float32}
    assert scorer.dtype == torch.float32 and {p.dtype for p in scorer.tower.parameters()} == {torch.float32}
    frames = write_frames(tmp_path, "v", "v_0", count=8, seed=5, width=320, height=240)
    records = [clip_record("v.mp4", ["v_0"])]
    config = _config(model_args, tmp_path, load_num=8)
    [full] = list(iter_results(records, config, scorer))
    [reduced] = list(iter_results(records, config, half))
    assert len(frames) == 8 and reduced.error is None
    assert all(isinstance(score, float) for score in reduced.frame_scores)
    # bf16 keeps 8 bits of mantissa: close to fp32, and not the same bits (it really ran in bf16).
    assert reduced.frame_scores == pytest.approx(full.frame_scores, abs=5e-3)
    assert reduced.frame_scores != full.frame_scores


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_scores_do_not_depend_on_which_clips_share_a_batch(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    """Splitting the input by records (as the DAG's shards do) regroups batches; no score may change."""
    records = _dataset(tmp_path, videos=5, clips=3)
    config = _config(model_args, tmp_path, batch_size=4)
    whole = [r.score for r in iter_results(records, config, scorer)]
    parts = [r.score for part in (records[:1], records[1:4], records[4:]) for r in iter_results(part, config, scorer)]
    assert parts == whole


@pytest.mark.parametrize("forward_batch", [6, 8, 10])
@pytest.mark.parametrize("images", [1, 6, 11, 19])
def test_cpu_scores_are_the_same_bits_whatever_the_thread_count(
    scorer: Scorer, images: int, forward_batch: int
) -> None:
    # MKL's SGEMM rounds differently with the threads it splits a matrix over (5-7 or 9-11 rows on
    # 2 threads, say); processes with other thread counts (ranks, taskset, cgroups) must agree anyway.
    pixels = torch.from_numpy(np.random.default_rng(images).integers(0, 256, (images, 224, 224, 3), dtype=np.uint8))
    before = torch.get_num_threads()
    outputs = set()
    try:
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            fresh = Scorer(scorer.tower, scorer.head, scorer.preprocess, "cpu", forward_batch=forward_batch)
            assert fresh.cpu_threads == threads
            outputs.add(fresh.score_pixels(pixels).numpy().tobytes())
            assert torch.get_num_threads() == threads  # the scorer restores the process's setting
    finally:
        torch.set_num_threads(before)
    assert len(outputs) == 1


def test_decoding_workers_start_inside_a_daemonic_process(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    # A Celery prefork pool process, and Airflow's task process forked from it, are daemonic:
    # multiprocessing refuses them children unless the library lets its own start.
    records = _dataset(tmp_path, videos=3, clips=3)
    config = _config(model_args, tmp_path, batch_size=2)
    expected = [(r.seq, r.score, r.error) for r in iter_results(records, config, scorer)]
    assert run_daemonic(score_results, records, config.replace(num_workers=2)) == expected


@pytest.mark.parametrize("reduction", ["mean", "max"])
def test_exact_decode_equals_an_independent_computation(
    tmp_path: Path, model_args: dict, scorer: Scorer, reference: torch.nn.Module, reduction: str
) -> None:
    """The exact path (PIL, as open_clip's own transform) stays the reference, whatever decode is the default."""
    frames = write_frames(tmp_path, "vid", "vid_0", count=5, seed=12, width=640, height=360)
    config = _config(model_args, tmp_path, reduction=reduction, load_num=3, decode="exact")
    [result] = list(iter_results([clip_record("x/vid.mp4", ["vid_0"])], config, scorer))
    expected = reference_clip_score(
        reference, Path(model_args["mlp_checkpoint"]), [frames[0], frames[2], frames[4]], reduction
    )
    assert result.error is None and result.score == pytest.approx(expected, abs=1e-5)


def test_the_default_decode_on_cpu_is_the_measured_cpu_default(
    tmp_path: Path, model_args: dict, scorer: Scorer
) -> None:
    from video_aesthetics.decoding import CPU_DEFAULT

    write_frames(tmp_path, "v", "v_0", count=3, seed=5, width=640, height=360)
    records = [clip_record("v.mp4", ["v_0"])]
    default = _config(model_args, tmp_path)
    assert default.decode == "auto"
    chosen = [r.frame_scores for r in iter_results(records, default.replace(decode=CPU_DEFAULT), scorer)]
    assert [r.frame_scores for r in iter_results(records, default, scorer)] == chosen
    other = "exact" if CPU_DEFAULT == "fast" else "fast"
    assert [r.frame_scores for r in iter_results(records, default.replace(decode=other), scorer)] != chosen


def test_gpu_decode_without_cuda_is_a_config_error(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    config = _config(model_args, tmp_path, decode="gpu")
    with pytest.raises(ConfigError, match="decode 'gpu' decodes JPEGs on the scoring GPU.*no CUDA device"):
        list(iter_results([clip_record("v.mp4", ["v_0"])], config, scorer))
    with pytest.raises(ConfigError, match="decode 'gpu'"):
        Scorer.load(config.replace(device="auto"))


def test_score_and_embed_returns_what_the_head_saw_from_the_same_pass(scorer: Scorer) -> None:
    pixels = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (11, 224, 224, 3), dtype=np.uint8))
    scores, embeddings = scorer.score_and_embed(pixels)
    assert embeddings.shape == (11, 768) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(11), atol=1e-6)
    assert torch.equal(scores, scorer.score_pixels(pixels))
    # The head is applied folded in float64 (head.head_scores): within half a float32 unit of the head
    # applied layer by layer in float64, and exactly what head_scores gives for the returned embeddings.
    with torch.inference_mode():
        reference = copy.deepcopy(scorer.head).double()(embeddings.double()).squeeze(-1)
    half_unit = torch.from_numpy(np.spacing(reference.abs().float().numpy())).double() / 2
    assert ((scores.double() - reference).abs() <= half_unit * (1 + 1e-6)).all()
    assert scores.numpy().tobytes() == head_scores(scorer.folded_head, embeddings.numpy()).tobytes()
    empty_scores, empty = scorer.score_and_embed(pixels[:0])
    assert empty_scores.shape == (0,) and empty.shape[0] == 0


def test_results_carry_frame_names_and_embeddings_only_when_asked(
    tmp_path: Path, model_args: dict, scorer: Scorer
) -> None:
    frames = write_frames(tmp_path, "vid", "vid_0", count=7, seed=11)
    frames[3].write_bytes(b"damaged")  # the middle frame is selected, then skipped: its name must not appear
    record = clip_record("x/vid.mp4", ["vid_0", "vid_absent"])
    config = _config(model_args, tmp_path, load_num=3)
    plain = list(iter_results([record], config, scorer))
    assert all(r.embeddings is None and r.frames is None for r in plain)
    embedded = list(iter_results([record], config, scorer, embed=True))
    assert embedded[0].frames == [frames[0].name, frames[6].name]
    assert embedded[0].embeddings.shape == (2, 768)
    assert [r.score for r in embedded] == [r.score for r in plain]
    assert embedded[1].embeddings is None and embedded[1].error == "no_frames"
