"""Reading and writing through Airflow's ObjectStoragePath: local folders, s3://, gs://, and whatever fsspec reaches.

The library scores local files; this module moves them to and from an object store and makes
every write all-or-nothing: a local file is renamed into place, a remote object is uploaded under a
temporary name and moved onto its final key only once complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from airflow.sdk import ObjectStoragePath

from video_aesthetics import sharding
from video_aesthetics.config import optional_text
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import LOCAL_SCHEMES, is_remote_url

log = logging.getLogger(__name__)

T = TypeVar("T")


def store_path(location: str | os.PathLike[str] | ObjectStoragePath) -> ObjectStoragePath:
    """``location`` as an ObjectStoragePath; a plain local path is made absolute first (file URIs need it).

    Links are left in place, not resolved: a writer that must not follow them (write_atomic with a
    root) can only refuse a link it still sees.
    """
    if isinstance(location, ObjectStoragePath):
        return location
    text = os.fspath(location).strip()
    if not text:
        raise ConfigError("a storage location is empty: give a local folder or a URL such as s3://bucket/prefix")
    if "://" not in text:
        text = os.path.abspath(os.path.expanduser(text))
    return ObjectStoragePath(text)


def location_uri(location: str | os.PathLike[str]) -> str:
    """``location`` as a URI, without touching any store: a local path becomes an absolute file:// URI."""
    text = os.fspath(location).strip()
    return text if "://" in text else Path(text).expanduser().resolve().as_uri()


def local_path(path: ObjectStoragePath) -> Path | None:
    """The local file system path behind ``path``, or None when it lives in a remote store."""
    if path.protocol in LOCAL_SCHEMES:
        return Path(path.path)
    return None


def is_local(location: str | os.PathLike[str] | ObjectStoragePath) -> bool:
    return local_path(store_path(location)) is not None


class LinkInTheWay(InputError):
    """A symbolic link where the publish was to create or enter a folder: writing through it could land anywhere."""


def write_atomic(
    dest: ObjectStoragePath, fill: Callable[[IO[bytes]], T], *, root: ObjectStoragePath | None = None
) -> T:
    """Call ``fill`` with a binary handle whose bytes become ``dest`` only if ``fill`` returns normally.

    A local ``dest`` is never written through a link: the bytes go to a temporary beside it that is
    renamed over it, which replaces a link of that name, not its target. With ``root`` (the store's
    root, e.g. output_root), every folder from ``root`` down to ``dest`` is created or entered without
    following links, and a link on the way raises LinkInTheWay naming it: nothing is written outside
    ``root``. ``root`` itself may be a link (an admin's choice). Remote stores have no links.
    """
    local = local_path(dest)
    if local is not None:
        base = local_path(root) if root is not None else None
        return _write_local(local, fill, base)
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


def _write_local(path: Path, fill: Callable[[IO[bytes]], T], root: Path | None) -> T:
    top = root if root is not None else path.parent
    try:
        parts = path.parent.relative_to(top).parts
    except ValueError:
        raise ConfigError(f"{path} is not inside {top}: refusing to write it") from None
    if ".." in parts or not path.name or path.name in (".", ".."):
        raise ConfigError(f"{path} is not a plain path below {top}: refusing to write it")
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            child = _enter_folder(fd, part, top.joinpath(*parts[: index + 1]), top)
            os.close(fd)
            fd = child
        return _replace_in(fd, path.name, fill)
    finally:
        os.close(fd)


def _enter_folder(parent_fd: int, name: str, where: Path, root: Path) -> int:
    """The folder ``name`` of ``parent_fd``, created if absent, opened without following a link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent_fd)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError:
        if stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            raise LinkInTheWay(
                f"{where} is a symbolic link (to {os.path.realpath(where)}): the publish never writes through "
                f"a link below {root}; replace the link with a real folder or remove it"
            ) from None
        raise


def _replace_in(folder_fd: int, name: str, fill: Callable[[IO[bytes]], T]) -> T:
    """Write ``name`` in the open folder: a temporary, flushed to disk, renamed over whatever ``name`` was."""
    temporary = f".{name}.{uuid.uuid4().hex}.tmp"
    # 0666: the umask decides, as for any file (mkstemp's 0600 would make outputs private).
    out = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=folder_fd
    )
    try:
        with os.fdopen(out, "wb") as handle:
            result = fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder_fd)
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


def remove_tree(path: ObjectStoragePath) -> None:
    """Delete ``path`` and everything under it, if it exists; best effort (cleanup must not hide the cause)."""
    try:
        local = local_path(path)
        if local is not None and local.is_symlink():
            local.unlink()  # the link itself, never what it points to
        elif local is not None:
            shutil.rmtree(local, ignore_errors=True)
        elif path.exists():
            path.fs.rm(path.path, recursive=True)
    except Exception as err:  # noqa: BLE001 - a failed cleanup is logged, never raised over the real error
        log.warning("could not remove %s: %s", path, err)


# --- connections and remote inputs ------------------------------------------------------------------
#
# Versioned publishing is publishing.py's; a run's staging in a store (shards up, scored shards
# down) is staging.py's. Both move files with download/upload and write_atomic from here.


def connection_id(conn_id: Any, param: str) -> str | None:
    """``conn_id`` checked to name an Airflow connection; None when unset.

    Without this check a typo would fall back silently to anonymous access (Airflow's S3 file system
    does), and fail later with a network error that names neither the param nor the connection.
    """
    name = optional_text(conn_id)
    if name is None:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(name)
    except AirflowNotFoundException:
        env = "AIRFLOW_CONN_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        raise ConfigError(
            f"{param} {name!r} names no Airflow connection: create it (Admin > Connections, "
            f"`airflow connections add {name} ...` or the environment variable {env}), or clear {param}"
        ) from None
    return name


def store_path_with(location: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None) -> ObjectStoragePath:
    """store_path, reaching a remote location through Airflow connection ``conn_id`` when given."""
    if conn_id and not isinstance(location, ObjectStoragePath):
        text = os.fspath(location).strip()
        if is_remote_url(text):
            return ObjectStoragePath(text, conn_id=conn_id)
    return store_path(location)


def storage_options(location: str, conn_id: str | None) -> Mapping[str, Any]:
    """fsspec storage options that reach ``location`` as connection ``conn_id`` does, for the library.

    S3 (and GCS, where the Google provider is installed) get their provider's own options, rebuilt in
    each decoding process with refreshable credentials (credentials.storage_options); other stores
    get the options of Airflow's file system for them, without its session objects.
    """
    if not conn_id:
        return {}
    path = store_path_with(location, conn_id)
    from video_aesthetics.airflow import credentials

    options = credentials.storage_options(path.protocol, conn_id)
    if options is not None:
        return options
    return {key: value for key, value in dict(path.fs.storage_options).items() if key != "session"}


def resolve_inputs(spec: str, conn_id: str | None = None) -> list[Path | ObjectStoragePath]:
    """sharding.resolve_inputs for local or remote specs: a file, a folder's *.jsonl (not recursive) or a glob, sorted.

    Local specs give sharding's own paths, unchanged; remote ones give store paths.
    """
    text = str(spec).strip()
    if not text or is_local(text):
        return list(sharding.resolve_inputs(text))
    path = store_path_with(text, conn_id)
    if re.search(r"[*?\[]", text) and not path.exists():
        found = [key for key in sorted(path.fs.glob(path.path)) if path.fs.isfile(key)]
        if not found:
            raise InputError(f"no object matches the input glob {text!r}; check input_path (or the partition folder)")
        return [_sibling(path, key) for key in found]
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.suffix.lower() in sharding.INPUT_SUFFIXES and p.is_file()), key=str
        )
        if not files:
            raise InputError(f"input folder {text} holds no *.jsonl file; check input_path (or the partition folder)")
        return list(files)
    if path.is_file():
        return [path]
    raise InputError(f"input {text!r} is neither a file, a folder nor a glob that matches anything; check input_path")


def _sibling(path: ObjectStoragePath, key: str) -> ObjectStoragePath:
    """The object ``key`` of ``path``'s store, through the same connection."""
    return ObjectStoragePath(f"{path.protocol}://{key}", conn_id=getattr(path, "conn_id", None))


@contextlib.contextmanager
def local_inputs(paths: list[Path | ObjectStoragePath]) -> Iterator[list[Path]]:
    """Local files holding ``paths``' bytes: local ones as they are, remote ones downloaded to a temporary folder.

    Each download keeps its own name in its own folder, so error messages name the file a line came from.
    """
    with tempfile.TemporaryDirectory(prefix="video-aesthetics-inputs-") as folder:
        local = []
        for index, path in enumerate(paths):
            if not isinstance(path, ObjectStoragePath):
                local.append(path)
                continue
            found = local_path(path)
            if found is None:
                found = Path(folder) / f"{index:05d}" / (path.name or "input.jsonl")
                found.parent.mkdir()
                download(path, found)
            local.append(found)
        yield local


def is_remote_input(paths: list[Path | ObjectStoragePath]) -> bool:
    return any(isinstance(path, ObjectStoragePath) and local_path(path) is None for path in paths)


def download(source: ObjectStoragePath, target: Path) -> None:
    log.info("downloading %s to %s", source, target)
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, length=1 << 20)


def upload(source: Path, target: ObjectStoragePath) -> None:
    with source.open("rb") as reader:
        write_atomic(target, lambda writer: shutil.copyfileobj(reader, writer, length=1 << 20))
