"""files: atomic writes through links, outputs published together, run locks, spooled streams, writes below a root."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from video_aesthetics.files import (
    BusyError,
    LinkInTheWayError,
    PendingFile,
    atomic_writer,
    exclusive,
    is_remote_url,
    is_within,
    lock_path,
    looks_like_url,
    publish_together,
    same_file,
    spooled,
    write_below,
)
from video_aesthetics.stopping import Terminated, clear_stop, request_stop


def test_atomic_writer_through_a_symlink_keeps_the_link_and_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "data" / "real.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    with atomic_writer(link) as handle:
        handle.write("new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["real.jsonl"]


def test_atomic_writer_through_a_dangling_symlink_creates_the_target(tmp_path: Path) -> None:
    link = tmp_path / "out.jsonl"
    link.symlink_to(tmp_path / "later" / "made.jsonl")
    with atomic_writer(link) as handle:
        handle.write("x")
    assert link.is_symlink() and (tmp_path / "later" / "made.jsonl").read_text() == "x"


@pytest.mark.parametrize("interrupt", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_an_interrupted_write_leaves_no_temporary(tmp_path: Path, interrupt: type[BaseException]) -> None:
    with pytest.raises(interrupt), atomic_writer(tmp_path / "out.jsonl") as handle:
        handle.write("partial")
        raise interrupt()
    assert list(tmp_path.iterdir()) == []


def test_a_pending_file_exists_only_as_a_temporary_until_committed(tmp_path: Path) -> None:
    with PendingFile(tmp_path / "out.jsonl") as pending:
        pending.handle.write("x")
        assert not (tmp_path / "out.jsonl").exists() and pending.tmp.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_pending_file_in_an_unwritable_place_fails_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError):
        PendingFile(tmp_path / "a-file" / "out.jsonl")
    with pytest.raises(OSError):
        PendingFile("/proc/video-aesthetics-test/out.jsonl")


def test_publish_together_renames_in_order_and_only_after_everything_is_on_disk(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").write_text("old output\n")
    (tmp_path / "out.rejects.jsonl").write_text("old rejects\n")
    rejects, output = PendingFile(tmp_path / "out.rejects.jsonl"), PendingFile(tmp_path / "out.jsonl")
    rejects.handle.write("new rejects\n")
    output.handle.write("new output\n")
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        # Both temporaries are complete before the first rename.
        assert rejects.handle.closed and output.handle.closed
        seen.append(Path(dst).name)
        real_replace(src, dst)

    os.replace = replace  # type: ignore[assignment]
    try:
        publish_together([rejects, output])
    finally:
        os.replace = real_replace
    assert seen == ["out.rejects.jsonl", "out.jsonl"]
    assert (tmp_path / "out.jsonl").read_text() == "new output\n"
    assert (tmp_path / "out.rejects.jsonl").read_text() == "new rejects\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.rejects.jsonl"]


def test_a_lock_refuses_a_second_holder_at_once_and_is_removed_after(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with exclusive([out]):
        assert lock_path(out).read_text().strip() == str(os.getpid())
        with pytest.raises(BusyError, match=rf"pid {os.getpid()}.*{out}"), exclusive([out]):
            pass
        # Another name is another lock.
        with exclusive([tmp_path / "other.jsonl"]):
            pass
    assert list(tmp_path.iterdir()) == []
    with exclusive([out]):  # free again
        pass


def test_a_lock_through_a_symlink_is_the_targets_lock(tmp_path: Path) -> None:
    target = tmp_path / "real.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with exclusive([target]), pytest.raises(BusyError), exclusive([link]):
        pass


def test_a_lock_file_replaced_under_a_waiting_run_is_not_trusted(tmp_path: Path) -> None:
    """A run that opened a lock file which its holder then removed must not believe it holds the lock."""
    out = tmp_path / "out.jsonl"
    path = lock_path(out)
    stale = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    os.unlink(path)  # the holder finished and removed it; `stale` is the old, unnamed file
    try:
        with exclusive([out]):
            assert path.exists()
            assert os.fstat(stale).st_ino != path.stat().st_ino
    finally:
        os.close(stale)


def test_concurrent_lockers_never_both_hold(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    holders: list[int] = []
    overlap: list[bool] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        for _ in range(200):
            try:
                with exclusive([out]):
                    with lock:
                        holders.append(index)
                        overlap.append(len(holders) > 1)
                    with lock:
                        holders.remove(index)
            except BusyError:
                pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap and not any(overlap)
    assert list(tmp_path.iterdir()) == []


def test_same_file_follows_symlinks_and_hard_links(tmp_path: Path) -> None:
    real = tmp_path / "a.jsonl"
    real.write_text("x")
    (tmp_path / "sym.jsonl").symlink_to(real)
    os.link(real, tmp_path / "hard.jsonl")
    (tmp_path / "sub").mkdir()
    assert same_file(real, tmp_path / "sym.jsonl")
    assert same_file(real, tmp_path / "hard.jsonl")
    assert same_file(real, tmp_path / "sub" / ".." / "a.jsonl")
    assert same_file(tmp_path / "new.jsonl", tmp_path / "sub" / ".." / "new.jsonl")  # neither exists yet
    assert not same_file(real, tmp_path / "b.jsonl")


def test_is_within() -> None:
    assert is_within("/data/frames/a/img", "/data/frames")
    assert is_within("/data/frames", "/data/frames")
    assert not is_within("/data/frames2/a", "/data/frames")
    assert not is_within("/etc/passwd", "/data/frames")
    assert is_within("/etc", "/")


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("http://127.0.0.1:8765/x.mp4", True),
        ("pipe:0", True),
        ("file:/etc/passwd", True),
        ("concat:a.mp4|b.mp4", True),
        ("tcp://host:1", True),
        ("subfile,,start,0,end,0,,:x.mp4", False),  # no scheme: a (strange) local name
        ("C:\\videos\\a.mp4", False),
        ("videos/a:b.mp4", False),
        ("/abs/a.mp4", False),
    ],
)
def test_looks_like_url(text: str, url: bool) -> None:
    assert looks_like_url(text) is url


def test_spooled_copies_a_stream_once_and_removes_the_copy(tmp_path: Path) -> None:
    data = b'{"a": 1}\n' * 100_000
    with spooled(io.BytesIO(data), tmp_path, "out.jsonl") as path:
        assert path.read_bytes() == data and path.parent == tmp_path and path.name.startswith(".")
    assert list(tmp_path.iterdir()) == []


def test_spooled_removes_the_copy_when_interrupted(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), spooled(io.BytesIO(b"x"), tmp_path, "out.jsonl"):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_write_below_creates_real_folders_and_replaces_a_link_at_the_leaf(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"keep")
    path = write_below(root, ("v", "c", "img"), "frame_000000.jpg", b"one")
    assert path.read_bytes() == b"one"
    leaf = root / "v" / "c" / "img" / "frame_000001.jpg"
    leaf.symlink_to(outside)
    write_below(root, ("v", "c", "img"), "frame_000001.jpg", b"two")
    assert not leaf.is_symlink() and leaf.read_bytes() == b"two" and outside.read_bytes() == b"keep"


@pytest.mark.parametrize("linked", ["v", "c", "img"])
def test_write_below_never_writes_through_a_linked_folder(tmp_path: Path, linked: str) -> None:
    root, elsewhere = tmp_path / "frames", tmp_path / "elsewhere"
    elsewhere.mkdir()
    parts = ["v", "c", "img"]
    index = parts.index(linked)
    (root.joinpath(*parts[:index])).mkdir(parents=True, exist_ok=True)
    root.joinpath(*parts[: index + 1]).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(LinkInTheWayError, match="symbolic link"):
        write_below(root, tuple(parts), "frame_000000.jpg", b"x")
    assert list(elsewhere.rglob("*")) == []


def test_write_below_into_a_linked_root_is_allowed(tmp_path: Path) -> None:
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "root").symlink_to(real, target_is_directory=True)
    write_below(tmp_path / "root", ("v",), "f.jpg", b"x")
    assert (real / "v" / "f.jpg").read_bytes() == b"x"


def test_only_urls_of_other_stores_are_remote() -> None:
    assert is_remote_url("s3://bucket/frames") and is_remote_url("memory://b/f") and is_remote_url(" GS://b/x")
    assert not is_remote_url("/data/frames") and not is_remote_url("file:///data/frames")
    assert not is_remote_url("extract_frames") and not is_remote_url("C:\\frames") and not is_remote_url("local://x")


@pytest.mark.parametrize("target", ["/etc/passwd-like", "../outside/victim.txt", "../outside/dangling.txt"])
def test_no_writer_writes_through_a_link_that_leaves_its_folder(tmp_path: Path, target: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    link = runs / "out.jsonl"
    link.symlink_to(victim if target.startswith("/etc") else target)
    for write in (
        lambda: atomic_writer(link).__enter__(),
        lambda: PendingFile(link),
        lambda: exclusive([link]).__enter__(),
    ):
        with pytest.raises(LinkInTheWayError, match="leaves its folder"):
            write()
    assert victim.read_text() == "keep\n" and sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert sorted(p.name for p in runs.iterdir()) == ["out.jsonl"]


def test_atomic_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.jsonl"
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write("partial")
        raise RuntimeError("boom")
    assert list((tmp_path / "out").iterdir()) == []
    target.write_text("old")
    with atomic_writer(target) as handle:
        handle.write("new")
    assert target.read_text() == "new" and len(list(target.parent.iterdir())) == 1


def test_atomic_writer_respects_the_umask(tmp_path: Path) -> None:
    import os

    previous = os.umask(0o022)
    try:
        with atomic_writer(tmp_path / "x.jsonl") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "x.jsonl").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_a_replaced_file_keeps_its_permissions(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "private.jsonl"
    target.write_text("old")
    target.chmod(mode)
    previous = os.umask(0o022)
    try:
        with atomic_writer(target) as handle:
            handle.write("new")
    finally:
        os.umask(previous)
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == mode


def test_a_recorded_stop_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("previous")
    with pytest.raises(Terminated):
        request_stop(15)
    try:
        with PendingFile(out) as pending, pytest.raises(Terminated):
            pending.handle.write("new")
            publish_together([pending])
    finally:
        clear_stop()
    assert out.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
