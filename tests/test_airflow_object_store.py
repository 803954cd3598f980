"""Writes to the output store through Airflow's ObjectStoragePath: local folders and a remote (fsspec memory) store."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from helpers.airflow_env import use_private_airflow_home

use_private_airflow_home()

from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach
from fsspec.implementations.memory import MemoryFileSystem

from video_aesthetics.airflow import object_store as store


class Boom(RuntimeError):
    pass


def _write_then_fail(out) -> None:
    out.write(b"partial")
    raise Boom()


def remote(name: str) -> ObjectStoragePath:
    """A fresh location in fsspec's in-memory store: remote to the code under test, no network needed.

    Airflow knows only the schemes its providers register; attach() is its way to add another.
    """
    attach("memory", fs=MemoryFileSystem())
    return ObjectStoragePath(f"memory://bucket-{uuid.uuid4().hex[:8]}/{name}")


def test_local_paths_become_absolute_file_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = store.store_path("out/day")
    assert store.local_path(path) == tmp_path / "out" / "day"
    assert store.local_path(store.store_path(f"file://{tmp_path}/x")) == tmp_path / "x"
    assert store.local_path(store.store_path("memory://bucket/x")) is None
    assert store.is_local(tmp_path) and not store.is_local("s3://bucket/key")
    assert store.location_uri("out") == (tmp_path / "out").as_uri()
    assert store.location_uri("s3://bucket/prefix") == "s3://bucket/prefix"


def test_local_atomic_write_replaces_or_keeps(tmp_path: Path) -> None:
    dest = store.store_path(tmp_path / "day" / "scored.jsonl")
    assert store.write_atomic(dest, lambda out: out.write(b"first\n")) == 6
    with pytest.raises(Boom):
        store.write_atomic(dest, _write_then_fail)
    assert (tmp_path / "day" / "scored.jsonl").read_bytes() == b"first\n"
    assert sorted(p.name for p in (tmp_path / "day").iterdir()) == ["scored.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "day" / "scored.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask


def test_remote_atomic_write_appears_whole_or_not_at_all() -> None:
    dest = remote("day/scored.jsonl")
    store.write_atomic(dest, lambda out: out.write(b"one\ntwo\n"))
    assert dest.read_bytes() == b"one\ntwo\n"

    with pytest.raises(Boom):
        store.write_atomic(dest, _write_then_fail)
    assert dest.read_bytes() == b"one\ntwo\n"
    assert [p.name for p in dest.parent.iterdir()] == ["scored.jsonl"]
    assert store.remove(dest) and not dest.exists() and not store.remove(dest)


def test_remote_input_and_output_are_staged_locally() -> None:
    source, target = remote("in.jsonl"), remote("out/scored.jsonl")
    source.write_bytes(b'{"a": 1}\n')
    with store.local_input(source) as local:
        assert local.read_bytes() == b'{"a": 1}\n'
        staged = local
    assert not staged.exists()
    with store.local_output(target) as local:
        local.write_bytes(b'{"b": 2}\n')
        assert not target.exists()
    assert target.read_bytes() == b'{"b": 2}\n'
    with pytest.raises(Boom), store.local_output(remote("never.jsonl")) as local:
        local.write_bytes(b"x")
        raise Boom()


def test_local_input_and_output_are_the_files_themselves(tmp_path: Path) -> None:
    with store.local_input(tmp_path / "in.jsonl") as local:
        assert local == tmp_path / "in.jsonl"
    with store.local_output(f"file://{tmp_path}/out.jsonl") as local:
        assert local == tmp_path / "out.jsonl"


# --- remote inputs and staging (no shared disk) ---------------------------------------------------------


def test_remote_inputs_resolve_as_local_ones(tmp_path: Path) -> None:
    folder = remote("day")
    for name in ("b.jsonl", "a.jsonl", "notes.txt"):
        (folder / name).write_bytes(b'{"n": 1}\n')
    url = str(folder)
    assert [p.name for p in store.resolve_inputs(url)] == ["a.jsonl", "b.jsonl"]
    assert [p.name for p in store.resolve_inputs(f"{url}/b.jsonl")] == ["b.jsonl"]
    assert [p.name for p in store.resolve_inputs(f"{url}/*.jsonl")] == ["a.jsonl", "b.jsonl"]
    with store.local_inputs(store.resolve_inputs(url)) as local:
        assert [p.name for p in local] == ["a.jsonl", "b.jsonl"]
        assert all(p.read_bytes() == b'{"n": 1}\n' for p in local)
    with pytest.raises(Exception, match="no object matches the input glob"):
        store.resolve_inputs(f"{url}/*.csv")
    # A local spec gives sharding's own paths, untouched.
    (tmp_path / "x.jsonl").write_text("{}\n")
    with store.local_inputs(store.resolve_inputs(str(tmp_path))) as local:
        assert local == [tmp_path / "x.jsonl"]


# --- links: a publish never writes through one ----------------------------------------------------------


def _file(path: Path) -> ObjectStoragePath:
    """``path`` as a store path with its links left in place (store_path would resolve them)."""
    return ObjectStoragePath(f"file://{path}")


def test_a_local_write_replaces_a_link_and_never_its_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious\n")
    (tmp_path / "root").mkdir()
    link = tmp_path / "root" / "_manifest.json"
    link.symlink_to(outside)
    store.write_atomic(_file(link), lambda out: out.write(b"new\n"), root=_file(tmp_path / "root"))
    assert outside.read_bytes() == b"precious\n"
    assert not link.is_symlink() and link.read_bytes() == b"new\n"
    # Without a root too: the final name's link is replaced, not followed.
    link.unlink()
    link.symlink_to(outside)
    store.write_atomic(_file(link), lambda out: out.write(b"again\n"))
    assert outside.read_bytes() == b"precious\n" and link.read_bytes() == b"again\n"


@pytest.mark.parametrize("depth", [0, 1])
def test_a_linked_folder_below_the_root_is_refused_and_nothing_is_written(tmp_path: Path, depth: int) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "partition").mkdir(parents=True)
    linked = root / "partition" if depth == 0 else root / "partition" / "v-20240101T000000Z-abcd0123"
    if depth == 0:
        linked.rmdir()
    linked.symlink_to(outside)
    dest = _file(root / "partition" / "v-20240101T000000Z-abcd0123" / "scored.jsonl")
    with pytest.raises(store.LinkInTheWay, match="symbolic link") as info:
        store.write_atomic(dest, lambda out: out.write(b"x"), root=_file(root))
    assert str(linked) in str(info.value)
    assert list(outside.iterdir()) == []


def test_the_root_itself_may_be_a_link_and_a_path_outside_it_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "root").symlink_to(real)
    root = _file(tmp_path / "root")
    store.write_atomic(root / "p" / "v" / "f.txt", lambda out: out.write(b"ok"), root=root)
    assert (real / "p" / "v" / "f.txt").read_bytes() == b"ok"
    with pytest.raises(Exception, match="not inside"):
        store.write_atomic(_file(tmp_path / "elsewhere.txt"), lambda out: out.write(b"x"), root=root)
    assert not (tmp_path / "elsewhere.txt").exists()


def test_removing_a_tree_that_is_a_link_removes_the_link_only(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data").write_text("keep")
    link = tmp_path / "v-20240101T000000Z-abcd0123"
    link.symlink_to(target)
    store.remove_tree(_file(link))
    assert not link.exists() and not link.is_symlink()
    assert (target / "data").read_text() == "keep"
