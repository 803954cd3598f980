"""outputs.check_outputs, the one guard of every output, tried as an attacker would: every way two names meet one file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from video_aesthetics.errors import ConfigError
from video_aesthetics.outputs import check_outputs


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _aliases(tmp_path: Path, real: Path) -> dict[str, Path]:
    """Every spelling of ``real`` that names the same file: after links, ``..``, ``//`` and ``.``."""
    (tmp_path / "sub").mkdir(exist_ok=True)
    (tmp_path / "sym.jsonl").symlink_to(real)
    (tmp_path / "chain.jsonl").symlink_to(tmp_path / "sym.jsonl")
    os.link(real, tmp_path / "hard.jsonl")
    (tmp_path / "dirlink").symlink_to(real.parent, target_is_directory=True)
    return {
        "same": real,
        "symlink": tmp_path / "sym.jsonl",
        "symlink-chain": tmp_path / "chain.jsonl",
        "hardlink": tmp_path / "hard.jsonl",
        "dotdot": tmp_path / "sub" / ".." / real.name,
        "double-slash": Path(str(real.parent) + "//" + real.name),
        "dot": Path(str(real.parent) + "/./" + real.name),
        "folder-link": tmp_path / "dirlink" / real.name,
    }


ALIASES = ["same", "symlink", "symlink-chain", "hardlink", "dotdot", "double-slash", "dot", "folder-link"]


@pytest.mark.parametrize("how", ALIASES)
def test_an_output_that_is_an_input_by_any_name_is_refused(tmp_path: Path, how: str) -> None:
    real = tmp_path / "in.jsonl"
    real.write_text("precious\n")
    alias = _aliases(tmp_path, real)[how]
    with pytest.raises(ConfigError, match=r"the --report .* is the input .*\(--input\).*give --report another path"):
        check_outputs([("--output", tmp_path / "out.jsonl"), ("--report", alias)], [("--input", real)])
    assert real.read_text() == "precious\n"
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("how", ALIASES)
def test_two_outputs_that_are_one_file_by_any_name_are_refused(tmp_path: Path, how: str) -> None:
    real = tmp_path / "out.jsonl"
    real.write_text("last run\n")
    alias = _aliases(tmp_path, real)[how]
    with pytest.raises(ConfigError, match=r"is the output"):
        check_outputs([("--output", real), ("--embeddings", alias)])
    assert real.read_text() == "last run\n"


def test_outputs_that_do_not_exist_yet_collide_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d", target_is_directory=True)
    for first, second in [
        ("out.rejects.jsonl", str(tmp_path / "out.rejects.jsonl")),  # relative and absolute
        ("d/r.html", "link/r.html"),  # through a folder link
        ("d/r.html", "d/../d/r.html"),
    ]:
        with pytest.raises(ConfigError, match="is the output"):
            check_outputs([("--rejects", first), ("--report", second)])
    assert _listing(tmp_path) == ["d", "link"] and _listing(tmp_path / "d") == []


def test_inputs_may_share_a_file_and_distinct_outputs_pass(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("x\n")
    check_outputs(
        [("--output", tmp_path / "o.jsonl"), ("--rejects", tmp_path / "o.rejects.jsonl"), ("--report", None)],
        [("--input", source), ("--run-info", source), ("--input", "-")],
    )
    # The probe leaves nothing behind: no temporary, no output.
    assert _listing(tmp_path) == ["in.jsonl"]


def test_the_report_may_not_take_the_default_rejects_path(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(ConfigError, match=r"--report .*out\.rejects\.jsonl is the output .*\(--rejects\)"):
        check_outputs(
            [
                ("--output", out),
                ("--rejects", tmp_path / "out.rejects.jsonl"),
                ("--report", f"{tmp_path}/x/../out.rejects.jsonl"),
            ]
        )


@pytest.mark.parametrize("where", ["absolute", "parent", "dangling-outside", "sibling-folder"])
def test_an_output_link_that_leaves_its_folder_is_never_written_through(tmp_path: Path, where: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    target = {
        "absolute": victim,
        "parent": Path("..") / "outside" / "victim.txt",
        "dangling-outside": outside / "not-yet.txt",
        "sibling-folder": Path("../outside/new.txt"),
    }[where]
    link = runs / "report.html"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link .* outside .*give --report the real path"):
        check_outputs([("--report", link)])
    assert victim.read_text() == "keep\n" and _listing(outside) == ["victim.txt"]


def test_an_output_link_into_its_own_folder_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "published").mkdir()
    (tmp_path / "out.jsonl").symlink_to(tmp_path / "published" / "scores.jsonl")
    check_outputs([("--output", tmp_path / "out.jsonl")])


@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "parent-is-file", "proc", "socket"])
def test_an_output_that_is_not_a_writable_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    import socket

    (tmp_path / "file").write_text("")
    path = {
        "folder": tmp_path,
        "fifo": tmp_path / "fifo",
        "device": Path("/dev/null"),
        "parent-is-file": tmp_path / "file" / "report.html",
        "proc": Path("/proc/video-aesthetics/report.html"),
        "socket": tmp_path / "sock",
    }[kind]
    held = None
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "socket":
        held = socket.socket(socket.AF_UNIX)
        held.bind(str(path))
    try:
        with pytest.raises(ConfigError, match="--report") as raised:
            check_outputs([("--report", path)])
        assert any(words in str(raised.value) for words in ("folder", "not a regular file", "cannot write"))
    finally:
        if held is not None:
            held.close()


def test_remote_outputs_are_compared_by_text_and_not_probed(tmp_path: Path) -> None:
    check_outputs([("--output", "s3://bucket/a.jsonl"), ("--report", "s3://bucket/b.html")])
    with pytest.raises(ConfigError, match="is the output"):
        check_outputs([("--output", "s3://bucket/a.jsonl"), ("--report", "s3://bucket/a.jsonl")])


@pytest.mark.parametrize("role", ["--output", "--rejects", "--report", "--embeddings"])
def test_an_output_named_dash_is_refused_as_it_would_be_a_file_not_standard_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"{role} - would write a file named '-'.*\./-"):
        check_outputs([("--output", "o.jsonl"), (role, "-")] if role != "--output" else [(role, "-")])
    assert _listing(tmp_path) == []


def test_a_file_named_dash_is_compared_like_any_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("-").write_text("records\n")
    with pytest.raises(ConfigError, match="would overwrite the input"):
        check_outputs([("--output", "./-")], [("SCORED.jsonl", "-")])
    with pytest.raises(ConfigError, match="would overwrite the output"):
        check_outputs([("--output", "./-"), ("--report", f"{tmp_path}/-")])
    assert Path("-").read_text() == "records\n"
