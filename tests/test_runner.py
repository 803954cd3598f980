from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest

from helpers.media import clip_record, frame_dataset, read_jsonl, write_frames, write_jsonl
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError, WeightsError
from video_aesthetics.runner import Progress, check_nproc, cpus_available, duration, score_file, score_records


def _config(model_args: dict, root: Path, **changes: object) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": str(root), "num_workers": 0, "device": "cpu", **changes})


def test_every_record_comes_out_in_order_with_other_fields_unchanged(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=3, clips_per_video=2, frames_per_clip=3)
    records = read_jsonl(source)
    records.insert(1, {"caption": "no video here", "n": 1})
    records.append({"video": "x.mp4", "video_clips": {"clips": "not a list"}})
    write_jsonl(source, records)
    out = tmp_path / "out.jsonl"
    stats = score_file(source, out, _config(model_args, root))
    got = read_jsonl(out)
    assert len(got) == len(records)
    assert got[1] == records[1] and got[-1] == records[-1]
    for before, after in zip(records, got, strict=False):
        assert {k: v for k, v in after.items() if k != "video_clips"} == {
            k: v for k, v in before.items() if k != "video_clips"
        }
    for record in (got[0], got[2], got[3]):
        for clip in record["video_clips"]["clips"]:
            assert isinstance(clip["aesthetic_score"], float)
    assert (stats.records, stats.clips, stats.scored, stats.failed, stats.passthrough) == (5, 6, 6, 0, 2)
    assert stats.model["head"]["sha256"] and stats.clips_per_s > 0


def test_rerun_gives_the_same_bytes(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    score_file(source, first, _config(model_args, root))
    score_file(source, second, _config(model_args, root, num_workers=2))
    score_file(source, first, _config(model_args, root))
    assert first.read_bytes() == second.read_bytes()


def test_malformed_line_stops_before_anything_is_written(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2)
    write_jsonl(source, [*read_jsonl(source), '{"video": '])
    out = tmp_path / "out.jsonl"
    out.write_text("previous run\n")
    with pytest.raises(InputError, match=r"input\.jsonl:3"):
        score_file(source, out, _config(model_args, root))
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "input.jsonl", "out.jsonl"]


def test_skip_bad_records_writes_and_counts_rejects(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2)
    write_jsonl(source, ["not json", *read_jsonl(source), "[1]"])
    out = tmp_path / "out.jsonl"
    stats = score_file(source, out, _config(model_args, root, skip_bad_records=True))
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [(r["line"], r["raw"]) for r in rejects] == [(1, "not json"), (4, "[1]")]
    assert (stats.records, stats.rejected) == (2, 2)
    assert stats.records + stats.rejected == 4


def test_a_bad_head_leaves_no_output(tmp_path: Path, model_args: dict) -> None:
    import torch

    source, root = frame_dataset(tmp_path, videos=1)
    bad_head = tmp_path / "bad.pth"
    torch.save({"net.0.weight": torch.zeros(2, 2)}, bad_head)
    out = tmp_path / "out.jsonl"
    with pytest.raises(WeightsError):
        score_file(source, out, _config(model_args, root, mlp_checkpoint=str(bad_head)))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_output_key_and_frame_scores(tmp_path: Path, model_args: dict) -> None:
    write_frames(tmp_path, "v", "v_0", count=4, seed=1)
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["v_0"])])
    out = tmp_path / "out.jsonl"
    score_file(source, out, _config(model_args, tmp_path, output_key="scored", frame_scores=True, load_num=2))
    [record] = read_jsonl(out)
    assert "aesthetic_score" not in record["video_clips"]["clips"][0]
    clip = record["scored"]["clips"][0]
    assert len(clip["aesthetic_frame_scores"]) == 2
    assert clip["aesthetic_score"] == pytest.approx(sum(clip["aesthetic_frame_scores"]) / 2, abs=1e-6)


def test_run_scoring_accepts_any_reiterable_source(tmp_path: Path, model_args: dict) -> None:
    write_frames(tmp_path, "v", "v_0", count=2, seed=1)
    collected: list[dict] = []
    stats = score_records([clip_record("v.mp4", ["v_0", "v_1"])], _config(model_args, tmp_path), collected.extend)
    assert [c.get("aesthetic_error") for c in collected[0]["video_clips"]["clips"]] == [None, "no_frames"]
    assert stats.errors == {"no_frames": 1}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _eta_seconds(line: str) -> float:
    match = re.search(r"ETA (?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", line)
    assert match, line
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _run(progress: Progress, clock: FakeClock, arrivals: list[float], until: float) -> list[tuple[float, str]]:
    """Feed results arriving at ``arrivals`` and heartbeat ticks every simulated second; (time, line) of each line."""
    lines: list[tuple[float, str]] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((clock.now, record.getMessage()))  # type: ignore[method-assign]
    logger = logging.getLogger("video_aesthetics.runner")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        events = sorted([(t, "result") for t in arrivals] + [(float(s), "tick") for s in range(1, int(until) + 1)])
        for when, kind in events:
            clock.now = when
            progress.update() if kind == "result" else progress.tick()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return lines


def test_first_eta_is_not_hours_for_a_minute_of_work() -> None:
    # 40 batches of 64: the first ready after 45 s (workers starting, first decode), then one every 1.5 s.
    batches = [45.0 + 1.5 * b for b in range(40)]
    arrivals = [t for t in batches for _ in range(64)]
    clock = FakeClock()
    lines = _run(Progress(len(arrivals), interval=10.0, clock=clock), clock, arrivals, until=120)
    end = arrivals[-1]
    assert [t for t, _ in lines] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, end]
    assert all("waiting for the first batch" in line for t, line in lines if t < 45)
    assert "measuring speed" in lines[4][1]  # 5 s after the first batch: too early to tell
    with_eta = [(t, line) for t, line in lines[:-1] if "clips/s" in line]
    assert len(with_eta) == 5
    # Within a batch's worth of the truth (a line can fall mid-batch); counting from the start gave 7m30s here.
    for when, line in with_eta:
        assert abs(_eta_seconds(line) - (end - when)) <= 0.2 * (end - when) + 1, line
    assert lines[-1][1] == "scored 2560/2560 clips (100.0%) in 1m44s, 24.7 clips/s, ETA 0s"


def test_lines_keep_a_steady_rate_through_bursts_and_stalls() -> None:
    # 3000 results in a steady trickle, then nothing for 55 s, then the rest.
    arrivals = [0.5 + 0.01 * i for i in range(3000)] + [90.0 + 0.01 * i for i in range(1000)]
    clock = FakeClock()
    lines = _run(Progress(4000, interval=10.0, clock=clock, unit="videos"), clock, arrivals, until=120)
    assert [t for t, _ in lines] == [10, 20, 30, 40, 50, 60, 70, 80, 90, arrivals[-1]]
    # The stall shows as lines with the same count, not as silence and not as a burst afterwards.
    stalled = [line for t, line in lines if 40 <= t <= 80]
    assert all(line.startswith("scored 3000/4000 videos (75.0%) after ") for line in stalled)
    assert lines[-1][1].startswith("scored 4000/4000 videos (100.0%) in 1m40s")


def test_a_run_too_short_for_an_eta_ends_with_one_line() -> None:
    clock = FakeClock()
    lines = _run(Progress(4, interval=10.0, clock=clock), clock, [2.0, 2.0, 2.0, 2.0], until=3)
    assert lines == [(2.0, "scored 4/4 clips (100.0%) in 2s, 2.0 clips/s, ETA 0s")]


def test_heartbeat_logs_while_no_result_arrives(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(5, interval=0.02)
    with caplog.at_level(logging.INFO, logger="video_aesthetics.runner"), progress.heartbeat():
        for _ in range(500):
            if caplog.messages:
                break
            threading.Event().wait(0.01)
    assert caplog.messages and "waiting for the first batch" in caplog.messages[0]
    assert not [t for t in threading.enumerate() if t.name == "video-aesthetics-progress"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (45, "45s"), (200, "3m20s"), (3599.6, "1h00m"), (7500, "2h05m"), (3 * 86400 + 4 * 3600, "3d04h")],
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize("field", ["video_clips_key", "input_video_key"])
def test_a_misspelt_field_name_is_warned_about_not_passed_silently(
    tmp_path: Path, model_args: dict, caplog: pytest.LogCaptureFixture, field: str
) -> None:
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=1, frames_per_clip=2)
    misspelt = {"video_clips_key": "clips", "input_video_key": "videos"}[field]
    with caplog.at_level(logging.WARNING, logger="video_aesthetics.runner"):
        stats = score_file(source, tmp_path / "out.jsonl", _config(model_args, root, **{field: misspelt}))
    assert (stats.records, stats.clips, stats.passthrough) == (2, 0, 2)
    [warning] = [m for m in caplog.messages if "none of the 2 records holds clips" in m]
    assert repr(misspelt) in warning and "check the field names" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="video_aesthetics.runner"):
        score_file(source, tmp_path / "right.jsonl", _config(model_args, root))
    assert not [m for m in caplog.messages if "holds clips" in m]


@pytest.mark.parametrize("nproc", [0, -3, 10**6, "2", False])
def test_nproc_is_refused_outside_one_to_the_cpus_before_anything_is_read(
    tmp_path: Path, model_args: dict, nproc: object
) -> None:
    config = _config(model_args, tmp_path, mlp_checkpoint="/no/such/head.pth")
    with pytest.raises(ConfigError, match="nproc") as raised:
        score_records([clip_record("v.mp4", ["c"])], config, list, nproc=nproc)  # type: ignore[arg-type]
    if nproc == 10**6:
        assert f"may use {cpus_available()} CPU(s)" in str(raised.value)
    with pytest.raises(ConfigError, match="nproc"):
        check_nproc(cpus_available() + 1, "cpu")
    check_nproc(cpus_available(), "cpu")
    check_nproc(None, "cpu")


def test_an_extra_output_of_the_run_is_held_to_the_same_checks(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    config = _config(model_args, root, skip_bad_records=True, mlp_checkpoint="/no/such/head.pth")
    out = tmp_path / "out.jsonl"
    for extra in (source, out, tmp_path / "out.rejects.jsonl", Path("/proc/va/emb.npy")):
        with pytest.raises(ConfigError, match="--embeddings"):
            score_file(source, out, config, also_writes=[("--embeddings", extra)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "input.jsonl"]
