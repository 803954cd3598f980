"""Reading and writing through Airflow's ObjectStoragePath: local folders, s3://, gs://, and whatever fsspec reaches.

The library scores local files; this module moves them to and from an object store and makes
every write all-or-nothing: a local file is renamed into place, a remote object is uploaded under a
temporary name and moved onto its final key only once complete.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from airflow.sdk import ObjectStoragePath

from video_aesthetics.errors import ConfigError
from video_aesthetics.files import atomic_writer

log = logging.getLogger(__name__)

T = TypeVar("T")
_LOCAL_PROTOCOLS = ("", "file", "local")


def store_path(location: str | os.PathLike[str] | ObjectStoragePath) -> ObjectStoragePath:
    """``location`` as an ObjectStoragePath; a plain local path is made absolute first (file URIs need it)."""
    if isinstance(location, ObjectStoragePath):
        return location
    text = os.fspath(location).strip()
    if not text:
        raise ConfigError("a storage location is empty: give a local folder or a URL such as s3://bucket/prefix")
    if "://" not in text:
        text = str(Path(text).expanduser().resolve())
    return ObjectStoragePath(text)


def location_uri(location: str | os.PathLike[str]) -> str:
    """``location`` as a URI, without touching any store: a local path becomes an absolute file:// URI."""
    text = os.fspath(location).strip()
    return text if "://" in text else Path(text).expanduser().resolve().as_uri()


def local_path(path: ObjectStoragePath) -> Path | None:
    """The local file system path behind ``path``, or None when it lives in a remote store."""
    if path.protocol in _LOCAL_PROTOCOLS:
        return Path(path.path)
    return None


def is_local(location: str | os.PathLike[str] | ObjectStoragePath) -> bool:
    return local_path(store_path(location)) is not None


def write_atomic(dest: ObjectStoragePath, fill: Callable[[IO[bytes]], T]) -> T:
    """Call ``fill`` with a binary handle whose bytes become ``dest`` only if ``fill`` returns normally."""
    local = local_path(dest)
    if local is not None:
        with atomic_writer(local, "wb") as handle:
            return fill(handle)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        with temporary.open("wb") as handle:
            result = fill(handle)
        temporary.move(dest)
    except BaseException:
        with contextlib.suppress(Exception):
            temporary.unlink(missing_ok=True)
        raise
    return result


def remove(path: ObjectStoragePath) -> bool:
    """Delete ``path`` if it exists (a stale file of an earlier run); whether there was one."""
    try:
        if path.exists():
            path.unlink()
            return True
    except FileNotFoundError:
        pass
    return False


@contextlib.contextmanager
def local_input(location: str | os.PathLike[str] | ObjectStoragePath) -> Iterator[Path]:
    """A local path holding ``location``'s bytes: the file itself when local, else a temporary download."""
    path = store_path(location)
    local = local_path(path)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="video-aesthetics-in-") as folder:
        target = Path(folder) / (path.name or "input.jsonl")
        log.info("downloading %s to %s", path, target)
        with path.open("rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
        yield target


@contextlib.contextmanager
def local_output(location: str | os.PathLike[str] | ObjectStoragePath) -> Iterator[Path]:
    """A local path to write ``location`` to; a remote target is uploaded atomically when the block succeeds.

    A local target is handed out as it is: the library already writes it atomically.
    """
    path = store_path(location)
    local = local_path(path)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="video-aesthetics-out-") as folder:
        target = Path(folder) / (path.name or "output.jsonl")
        yield target
        log.info("uploading %s to %s", target, path)
        with target.open("rb") as source:
            write_atomic(path, lambda sink: shutil.copyfileobj(source, sink, length=1 << 20))


# --- versioned publishing -------------------------------------------------------------------------
#
# A partition's result is several files (scored records, rejects, report) and a manifest that must
# appear together or not at all, on object stores too, where nothing renames a folder atomically.
# So each publish writes a new version folder <partition>/v-<UTC time>-<random>/ and then replaces
# <partition>/_manifest.json, one object, atomically: the manifest is the commit point, and names
# the version folder's files. A failed or killed publish never touches the manifest; the previous
# result stays as it was. Older versions are pruned after a publish (see prune_versions).

VERSION_PREFIX = "v-"
_VERSION_TIME = "%Y%m%dT%H%M%SZ"


def new_version(partition: ObjectStoragePath) -> ObjectStoragePath:
    """A fresh version folder under ``partition``; names sort by creation time."""
    stamp = time.strftime(_VERSION_TIME, time.gmtime())
    return partition / f"{VERSION_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}"


def version_time(name: str) -> float | None:
    """When version ``name`` was created (seconds since the epoch), or None when it is not a version name."""
    if not name.startswith(VERSION_PREFIX):
        return None
    try:
        return calendar.timegm(time.strptime(name[len(VERSION_PREFIX) :].split("-", 1)[0], _VERSION_TIME))
    except ValueError:
        return None


def remove_tree(path: ObjectStoragePath) -> None:
    """Delete ``path`` and everything under it, if it exists; best effort (cleanup must not hide the cause)."""
    try:
        local = local_path(path)
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
        elif path.exists():
            path.fs.rm(path.path, recursive=True)
    except Exception as err:  # noqa: BLE001 - a failed cleanup is logged, never raised over the real error
        log.warning("could not remove %s: %s", path, err)


def prune_versions(partition: ObjectStoragePath, current: str, keep: int, min_age_s: float) -> list[str]:
    """Remove version folders of ``partition`` beyond the ``keep`` newest, never ``current``.

    A version younger than ``min_age_s`` is kept whatever its rank: it may be a concurrent run's
    publish in progress. Returns the names removed.
    """
    now = time.time()
    versions = sorted(
        (p for p in partition.iterdir() if version_time(p.name) is not None), key=lambda p: p.name, reverse=True
    )
    removed = []
    for path in versions[keep:]:
        created = version_time(path.name) or now
        if path.name == current or now - created < min_age_s:
            continue
        remove_tree(path)
        removed.append(path.name)
    return removed
