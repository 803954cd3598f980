"""Reading and writing through Airflow's ObjectStoragePath: local folders, s3://, gs://, and whatever fsspec reaches.

The library scores local files; this module moves them to and from an object store and makes
every write all-or-nothing: a local file is renamed into place, a remote object is uploaded under a
temporary name and moved onto its final key only once complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
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
