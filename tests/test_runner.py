from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from helpers.media import clip_record, frame_dataset, read_jsonl, write_frames, write_jsonl
from video_aesthetics.capacity import check_nproc, cpus_present
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError, WeightsError
from video_aesthetics.files import PendingFile
from video_aesthetics.report import ReportOutput
from video_aesthetics.runner import score_file, score_records


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
        # Past the declared bound: refused before the CPUs are counted (test_capacity checks the CPU limit).
        assert "got 1000000" in str(raised.value)
    with pytest.raises(ConfigError, match="nproc"):
        check_nproc(cpus_present() + 1, "cpu")
    check_nproc(cpus_present(), "cpu")
    check_nproc(None, "cpu")


class _Unread(list):
    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the input was read before the options were checked")


@pytest.mark.parametrize(
    ("option", "value", "flag"),
    [
        ("decode", "gpu", "decode 'gpu'"),
        ("decode", "hardware", "decode 'hardware'"),
        ("precision", "bf16", "precision"),
        ("precision", "fp8", "precision"),
    ],
)
def test_gpu_only_options_on_the_cpu_are_refused_before_the_input_is_read(
    tmp_path: Path, model_args: dict, option: str, value: str, flag: str
) -> None:
    config = _config(model_args, tmp_path, device="cpu", **{option: value})
    with pytest.raises(ConfigError, match=flag) as raised:
        score_records(_Unread([clip_record("v.mp4", ["c"])]), config, list)
    assert "use " in str(raised.value)  # it says what to choose instead


def test_an_extra_output_of_the_run_is_held_to_the_same_checks(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    config = _config(model_args, root, skip_bad_records=True, mlp_checkpoint="/no/such/head.pth")
    out = tmp_path / "out.jsonl"
    for extra in (source, out, tmp_path / "out.rejects.jsonl", Path("/proc/va/report.html")):
        with pytest.raises(ConfigError, match="--report"):
            score_file(source, out, config, report=ReportOutput(extra, {}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "input.jsonl"]


def test_no_output_may_overwrite_a_weights_file_of_the_run(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    head = tmp_path / "head.pth"
    head.write_bytes(Path(model_args["mlp_checkpoint"]).read_bytes())
    clip = shutil.copytree(model_args["clip_model"], tmp_path / "clip")
    config = _config(model_args, root, clip_model=str(clip), mlp_checkpoint=str(head), skip_bad_records=True)
    weights = clip / "open_clip_config.json"
    for output, rejects, report in [
        (head, None, None),
        (tmp_path / "o.jsonl", head, None),
        (tmp_path / "o.jsonl", None, head),
        (tmp_path / "o.jsonl", None, weights),
    ]:
        with pytest.raises(ConfigError, match="would overwrite the input"):
            score_file(
                source, output, config, rejects_path=rejects, report=ReportOutput(report, {}) if report else None
            )
    assert head.read_bytes() == Path(model_args["mlp_checkpoint"]).read_bytes()
    assert weights.read_bytes() == (Path(model_args["clip_model"]) / weights.name).read_bytes()


class _ReportThatFails(ReportOutput):
    def pending(self, *args: object, **kwargs: object) -> PendingFile:
        raise OSError(28, "No space left on device", str(self.path))


def test_the_report_is_published_with_the_records_or_neither_is(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2)
    config = _config(model_args, root, skip_bad_records=True)
    out, report = tmp_path / "out.jsonl", tmp_path / "report.html"
    stats = score_file(source, out, config, report=ReportOutput(report, {"input": str(source)}))
    assert stats is not None
    page = report.read_text()
    # The report names the published output, never the temporary it was made from.
    assert str(out) in page and ".tmp" not in page
    published = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(OSError, match="No space left"):
        score_file(source, out, config.replace(reduction="max"), report=_ReportThatFails(report, {}))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == published
