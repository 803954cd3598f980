"""score_file against hostile inputs: nothing lost, nothing escapes, nothing crashes after the work is done."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers.clip_models import build_head, save_head
from helpers.media import clip_record, frame_dataset, read_jsonl, write_frames, write_jpeg, write_jsonl
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import BusyError, exclusive
from video_aesthetics.jsonl import raw_line
from video_aesthetics.runner import score_file

NO_HEAD = "/no/such/head.pth"  # loading it fails: a check that raises anything else ran before any model loaded


def _config(model_args: dict, root: Path, **changes: object) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": str(root), "num_workers": 0, "device": "cpu", **changes})


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- every input line ends in the output or the rejects file, byte-exact ---------------------------------


HOSTILE = [
    b'{"a": NaN}',
    b'{"b": Infinity}',
    b'{"c": 1e400}',
    b'{"d": "\\ud800"}',
    b'{"e": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"f": ' + b"1" * 5000 + b"}",
    b'{"g": "\xff\xfe\xfd"}',
    b'{"h": 1, "h": 2}',
    b"[1, 2]",
    b'"just text"',
    b'{"video": ',
    b"\x00\x01\x02",
]


def test_every_line_ends_in_the_output_or_the_rejects_file_byte_exact(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=1, frames_per_clip=2)
    good = source.read_bytes().splitlines()
    lines = [b"\xef\xbb\xbf" + good[0], *HOSTILE[:6], good[1] + b"\r", *HOSTILE[6:], b"", b"  \t"]
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"

    stats = score_file(source, out, _config(model_args, root, skip_bad_records=True))

    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [raw_line(r) for r in rejects] == HOSTILE
    assert [r["line"] for r in rejects] == [*range(2, 8), *range(9, 15)]
    scored = read_jsonl(out)
    assert [r["meta"] for r in scored] == [{"n": 0}, {"n": 1}]
    assert (stats.records, stats.rejected, stats.scored) == (2, len(HOSTILE), 2)
    assert stats.records + stats.rejected == sum(1 for line in lines if line.strip())


def test_a_hostile_line_without_skip_stops_the_run_before_anything_is_written(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2)
    for bad in HOSTILE:
        source.write_bytes(source.read_bytes().splitlines()[0] + b"\n" + bad + b"\n")
        out = tmp_path / "out.jsonl"
        out.write_text("previous run\n")
        with pytest.raises(InputError, match=r"input\.jsonl:2: .*--skip-bad-records"):
            score_file(source, out, _config(model_args, root))
        assert out.read_text() == "previous run\n"
        assert _listing(tmp_path) == ["frames", "input.jsonl", "out.jsonl"]


def test_a_clobbered_output_key_is_refused_or_rejected(tmp_path: Path, model_args: dict) -> None:
    write_frames(tmp_path / "frames", "v", "v_0", count=1)
    records = [clip_record("v.mp4", ["v_0"], caption="keep me"), clip_record("v.mp4", ["v_0"])]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    config = _config(model_args, tmp_path / "frames", output_key="caption")
    with pytest.raises(InputError, match=r"in\.jsonl:1: field 'caption' \(output_key\)"):
        score_file(source, tmp_path / "out.jsonl", config)
    stats = score_file(source, tmp_path / "out.jsonl", config.replace(skip_bad_records=True))
    [reject] = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert json.loads(reject["raw"]) == records[0]
    assert (stats.records, stats.rejected) == (1, 1)
    with pytest.raises(ConfigError, match="video field"):
        _config(model_args, tmp_path, output_key="video")


# --- inputs read once or spooled --------------------------------------------------------------------------


def _feed(fd: int, data: bytes) -> threading.Thread:
    def write() -> None:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["fifo", "process-substitution", "stdin"])
def test_streams_are_read_once_and_give_the_same_output(
    tmp_path: Path, model_args: dict, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import sys

    source, root = frame_dataset(tmp_path, videos=3, clips_per_video=2, frames_per_clip=2)
    data = source.read_bytes() + b"not json\n"
    config = _config(model_args, root, skip_bad_records=True, num_workers=2, batch_size=2)
    expected = tmp_path / "expected.jsonl"
    score_file(source, expected, config)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    if kind == "fifo":
        fifo = tmp_path / "in.fifo"
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.write_bytes(data))
        writer.start()
        given: str = str(fifo)
    else:
        read_end, write_end = os.pipe()
        writer = _feed(write_end, data)
        if kind == "stdin":
            monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "r"))
            given = "-"
        else:
            given = f"/dev/fd/{read_end}"  # what bash's <(...) hands over
    try:
        stats = score_file(given, outputs / "out.jsonl", config)
    finally:
        writer.join()
        if kind == "process-substitution":
            os.close(read_end)
    assert (outputs / "out.jsonl").read_bytes() == expected.read_bytes()
    assert (stats.records, stats.rejected) == (3, 1)
    rejects = read_jsonl(outputs / "out.rejects.jsonl")
    assert rejects[0]["source"] == ("<stdin>" if kind == "stdin" else given)
    assert _listing(outputs) == ["out.jsonl", "out.rejects.jsonl"]  # the spooled copy is gone


def test_stdin_that_is_a_terminal_is_refused_at_once(
    tmp_path: Path, model_args: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pty
    import sys

    leader, follower = pty.openpty()
    try:
        monkeypatch.setattr(sys, "stdin", os.fdopen(follower, "r"))
        with pytest.raises(InputError, match="terminal"):
            score_file("-", tmp_path / "out.jsonl", _config(model_args, tmp_path, mlp_checkpoint=NO_HEAD))
    finally:
        os.close(leader)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("device", "is a device"),
        ("unreadable", "cannot read input /proc/self/mem"),
    ],
)
def test_unusable_inputs_are_refused_with_what_to_change(
    tmp_path: Path, model_args: dict, kind: str, message: str
) -> None:
    given = {
        "missing": str(tmp_path / "nope.jsonl"),
        "folder": str(tmp_path),
        "device": "/dev/zero",
        "unreadable": "/proc/self/mem",
    }[kind]
    out = tmp_path / "out" / "o.jsonl"
    # An unreadable file gets past the checks (it opens) and fails on its first read: still an InputError.
    head = model_args["mlp_checkpoint"] if kind == "unreadable" else NO_HEAD
    with pytest.raises(InputError, match=message):
        score_file(given, out, _config(model_args, tmp_path, mlp_checkpoint=head))
    assert not out.exists() and (not out.parent.exists() or _listing(out.parent) == [])


# --- paths never collide -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "how"),
    [
        ("output", "same"),
        ("output", "symlink"),
        ("output", "hardlink"),
        ("output", "dotdot"),
        ("rejects", "same"),
        ("rejects", "hardlink"),
        ("rejects-default", "same"),
        ("rejects-is-output", "same"),
        ("rejects-is-output", "symlink"),
    ],
)
def test_input_output_and_rejects_must_be_three_files(tmp_path: Path, model_args: dict, role: str, how: str) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    source.write_bytes(source.read_bytes() + b"a bad line\n")
    before = source.read_bytes()

    def alias(path: Path) -> Path:
        if how == "symlink":
            (tmp_path / "alias.jsonl").symlink_to(path)
            return tmp_path / "alias.jsonl"
        if how == "hardlink":
            os.link(path, tmp_path / "alias.jsonl")
            return tmp_path / "alias.jsonl"
        if how == "dotdot":
            return tmp_path / "frames" / ".." / path.name
        return path

    out, rejects = tmp_path / "out.jsonl", None
    if role == "output":
        out = alias(source)
    elif role == "rejects":
        rejects = alias(source)
    elif role == "rejects-default":
        # Rescoring a rejects file into the output it came from: the default rejects path is the input.
        source = source.rename(tmp_path / "out.rejects.jsonl")
    else:
        out.write_text("")
        rejects = alias(out)
    config = _config(model_args, root, skip_bad_records=True, mlp_checkpoint=NO_HEAD)
    with pytest.raises(ConfigError, match="is the input|is the output"):
        score_file(source, out, config, rejects_path=rejects)
    assert source.read_bytes() == before


@pytest.mark.parametrize("kind", ["folder", "parent-is-file", "device", "proc"])
def test_an_output_that_cannot_be_written_is_refused_before_scoring(
    tmp_path: Path, model_args: dict, kind: str
) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    (tmp_path / "file").write_text("")
    out = {
        "folder": tmp_path / "frames",
        "parent-is-file": tmp_path / "file" / "out.jsonl",
        "device": Path("/dev/null"),
        "proc": Path("/proc/video-aesthetics/out.jsonl"),
    }[kind]
    with pytest.raises(ConfigError, match="folder|is a file|not a regular file|cannot write"):
        score_file(source, out, _config(model_args, root, mlp_checkpoint=NO_HEAD))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_scoring(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="cannot write"):
        score_file(source, locked / "out.jsonl", _config(model_args, root, mlp_checkpoint=NO_HEAD))


def test_an_output_symlink_keeps_the_link_and_replaces_its_target(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    real = tmp_path / "published" / "scores.jsonl"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    score_file(source, link, _config(model_args, root, skip_bad_records=True))
    assert link.is_symlink() and len(read_jsonl(real)) == 1
    # The rejects path is taken from the name given, beside the link.
    assert (tmp_path / "out.rejects.jsonl").read_text() == ""
    assert _listing(real.parent) == ["scores.jsonl"]


@pytest.mark.parametrize("held", ["output", "rejects"])
def test_a_run_on_an_output_another_run_is_writing_is_refused(tmp_path: Path, model_args: dict, held: str) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "shared.rejects.jsonl"
    out.write_text("the other run's\n")
    with exclusive([out if held == "output" else rejects]), pytest.raises(BusyError, match="another run"):
        score_file(source, out, _config(model_args, root, skip_bad_records=True), rejects_path=rejects)
    assert out.read_text() == "the other run's\n" and not rejects.exists()
    assert _listing(tmp_path) == ["frames", "input.jsonl", "out.jsonl"]


def test_output_and_rejects_are_published_together_rejects_first(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=1)
    source.write_bytes(source.read_bytes() + b"bad\n")
    out, rejects = tmp_path / "out.jsonl", tmp_path / "out.rejects.jsonl"
    seen: list[tuple[str, bool, bool]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        # Both complete on disk before either is renamed; then rejects, then output.
        seen.append((Path(dst).name, Path(src).stat().st_size > 0, out.exists()))
        real_replace(src, dst)

    os.replace = replace  # type: ignore[assignment]
    try:
        score_file(source, out, _config(model_args, root, skip_bad_records=True))
    finally:
        os.replace = real_replace
    assert seen == [("out.rejects.jsonl", True, False), ("out.jsonl", True, False)]
    assert len(read_jsonl(rejects)) == 1


# --- nothing outside figure_root is read ---------------------------------------------------------------


def test_links_out_of_figure_root_are_not_read(tmp_path: Path, model_args: dict) -> None:
    root = tmp_path / "frames"
    secret = tmp_path / "secret"
    write_frames(secret, "s", "c", count=2, seed=9)
    write_frames(root, "v", "v_ok", count=2, seed=1)
    write_frames(root, "v", "v_mixed", count=1, seed=2)
    (root / "v" / "v_mixed" / "img" / "frame_000999.jpg").symlink_to(secret / "s" / "c" / "img" / "frame_000000.jpg")
    (root / "v" / "v_clip").symlink_to(secret / "s" / "c", target_is_directory=True)
    (root / "w").symlink_to(secret / "s", target_is_directory=True)
    (root / "v" / "v_alias").symlink_to(root / "v" / "v_ok", target_is_directory=True)  # stays inside
    write_jpeg(root / "v" / "v_ok" / "img" / "._frame_000001.jpg", seed=3)  # macOS metadata: not a frame
    records = [clip_record("v.mp4", ["v_ok", "v_mixed", "v_clip", "v_alias"]), clip_record("w.mp4", ["c"])]
    source = write_jsonl(tmp_path / "in.jsonl", records)

    stats = score_file(source, tmp_path / "out.jsonl", _config(model_args, root, frame_scores=True, load_num=5))

    got = read_jsonl(tmp_path / "out.jsonl")
    clips = got[0]["video_clips"]["clips"] + got[1]["video_clips"]["clips"]
    assert [c.get("aesthetic_error") for c in clips] == [None, None, "unsafe_path", None, "unsafe_path"]
    assert [len(c.get("aesthetic_frame_scores") or []) for c in clips] == [2, 1, 0, 2, 0]
    assert clips[3]["aesthetic_score"] == clips[0]["aesthetic_score"]
    assert stats.errors == {"unsafe_path": 2}


# --- non-finite scores ----------------------------------------------------------------------------------


def test_a_head_that_overflows_gives_null_scores_counted_as_failed(tmp_path: Path, model_args: dict) -> None:
    from video_aesthetics.merging import MergeResult, ShardSummary, _count_clips

    head = build_head(768, seed=2)
    with torch.no_grad():
        for index in (0, 2, 4):
            head.layers[index].weight.fill_(1e30)  # finite weights whose products overflow float32
    path = save_head(head, tmp_path / "overflow.pth")
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=2, frames_per_clip=2)
    config = _config(model_args, root, mlp_checkpoint=str(path), frame_scores=True)

    stats = score_file(source, tmp_path / "out.jsonl", config)

    got = read_jsonl(tmp_path / "out.jsonl")
    clips = [c for r in got for c in r["video_clips"]["clips"]]
    assert all(c["aesthetic_score"] is None and c["aesthetic_error"] == "non_finite_score" for c in clips)
    assert all(c["aesthetic_frame_scores"] == [None, None] for c in clips)
    assert (stats.clips, stats.scored, stats.failed, stats.errors) == (4, 0, 4, {"non_finite_score": 4})
    # The DAG's merge counts the same way, so its cross-check with the shards' stats holds.
    merged = MergeResult()
    summary = ShardSummary("shard-00000", 0, 0, 0, 0, 0, "")
    for number, (original, scored) in enumerate(zip(read_jsonl(source), got, strict=True)):
        _count_clips(original, scored, number, config, summary, merged)
    assert (merged.scored, merged.failed, merged.errors) == (stats.scored, stats.failed, stats.errors)


# --- the weaker spots ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["missing", "file", "empty", "relative"])
def test_one_warning_names_the_resolved_figure_root_when_no_clip_has_frames(
    tmp_path: Path, model_args: dict, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["v_0", "v_1"])])
    root = tmp_path / "frames"
    if state == "file":
        root.write_text("")
    elif state == "empty":
        root.mkdir()
    given = str(root)
    if state == "relative":
        monkeypatch.chdir(tmp_path)
        given = "extract_frames"
    with caplog.at_level(logging.WARNING, logger="video_aesthetics"):
        stats = score_file(source, tmp_path / "out.jsonl", _config(model_args, Path(given)))
    assert stats.errors == {"no_frames": 2}
    warnings = [r.getMessage() for r in caplog.records if "had frames" in r.getMessage()]
    assert len(warnings) == 1
    resolved = os.path.realpath(given)
    expected = {"missing": "does not exist", "file": "is not a folder", "empty": "holds no frames"}
    assert resolved in warnings[0] and expected.get(state, "does not exist") in warnings[0]


def test_no_warning_when_some_clips_have_frames(
    tmp_path: Path, model_args: dict, caplog: pytest.LogCaptureFixture
) -> None:
    write_frames(tmp_path / "frames", "v", "v_0", count=1)
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["v_0", "v_1"])])
    with caplog.at_level(logging.WARNING, logger="video_aesthetics"):
        score_file(source, tmp_path / "out.jsonl", _config(model_args, tmp_path / "frames"))
    assert not [r for r in caplog.records if "had frames" in r.getMessage()]


def test_num_workers_is_capped_at_the_cpus_available_with_one_log_line(
    tmp_path: Path, model_args: dict, caplog: pytest.LogCaptureFixture
) -> None:
    cpus = len(os.sched_getaffinity(0))
    source, root = frame_dataset(tmp_path, videos=2)
    with caplog.at_level(logging.INFO, logger="video_aesthetics"):
        score_file(source, tmp_path / "many.jsonl", _config(model_args, root, num_workers=cpus + 30))
    lines = [r.getMessage() for r in caplog.records if "capped" in r.getMessage()]
    assert lines == [f"num_workers {cpus + 30} capped at {cpus}, the CPUs this process may use"]
    score_file(source, tmp_path / "none.jsonl", _config(model_args, root, num_workers=0))
    assert (tmp_path / "many.jsonl").read_bytes() == (tmp_path / "none.jsonl").read_bytes()


# --- an input that changes during the run stops it; nothing is published -----------------------------------


class _AfterCounting(logging.Handler):
    """Runs ``change`` once, when the runner logs the input's counts: after the counting pass, before
    the decoding and merging passes read the input again."""

    def __init__(self, change: Callable[[], None]) -> None:
        super().__init__(logging.INFO)
        self.change: Callable[[], None] | None = change

    def emit(self, record: logging.LogRecord) -> None:
        if self.change is not None and record.getMessage().startswith("input: "):
            change, self.change = self.change, None
            change()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("change", ["rewrite in place", "truncate", "append", "rename into place"])
def test_an_input_changed_during_the_run_stops_it_and_publishes_nothing(
    tmp_path: Path, model_args: dict, change: str, workers: int
) -> None:
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=1, frames_per_clip=2)
    first = source.read_bytes()
    # The same size, each record naming the other video: scores would go to the wrong records.
    second = first.replace(b"video0", b"video#").replace(b"video1", b"video0").replace(b"video#", b"video1")
    assert len(second) == len(first) and second != first
    an_hour_ago = os.stat(source).st_mtime_ns - 3600 * 10**9
    os.utime(source, ns=(an_hour_ago, an_hour_ago))  # any write now moves its times, however coarse the clock
    out = tmp_path / "out.jsonl"
    out.write_text("previous run\n")

    def rewrite() -> None:
        if change == "rewrite in place":
            with open(source, "r+b") as handle:  # cat second > input.jsonl
                handle.write(second)
        elif change == "truncate":
            source.write_bytes(first.splitlines(keepends=True)[0])
        elif change == "append":
            with open(source, "ab") as handle:
                handle.write(first.splitlines(keepends=True)[0])
        else:
            (tmp_path / "next.jsonl").write_bytes(second)
            os.replace(tmp_path / "next.jsonl", source)

    runner_log = logging.getLogger("video_aesthetics.runner")
    handler, level = _AfterCounting(rewrite), runner_log.level
    runner_log.addHandler(handler)
    runner_log.setLevel(logging.INFO)
    try:
        with pytest.raises(InputError, match=r"input .*input\.jsonl changed while the run was reading it") as err:
            score_file(source, out, _config(model_args, root, num_workers=workers, skip_bad_records=True))
    finally:
        runner_log.removeHandler(handler)
        runner_log.setLevel(level)
    assert handler.change is None, "the input was not changed: the runner's counting log line was not seen"
    assert "write inputs to a new file and rename them into place, then rerun" in str(err.value)
    assert out.read_text() == "previous run\n"
    assert _listing(tmp_path) == ["frames", "input.jsonl", "out.jsonl"]  # no rejects, no temporaries


def test_an_input_left_alone_scores_the_same_after_the_check(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=1, frames_per_clip=2)
    config = _config(model_args, root, skip_bad_records=True)
    stats = score_file(source, tmp_path / "a.jsonl", config)
    os.utime(source)  # read again later (atime) or touched between runs: each run takes the file as it finds it
    score_file(source, tmp_path / "b.jsonl", config)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (stats.records, stats.scored, stats.rejected) == (2, 2, 0)
