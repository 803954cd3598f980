"""Generic file helpers: all-or-nothing writes, files published together, run locks, spooled streams, checksums.

Every output of the project (scored records, rejects, manifests, downloaded weights) goes through
``atomic_writer`` or ``PendingFile`` so that a reader never sees a half-written file under its final
name, and an interrupted run (an exception, SIGTERM turned into one) leaves no temporary behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import stat
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from video_aesthetics.errors import VideoAestheticsError
from video_aesthetics.stopping import check_stop

_CHUNK = 1 << 20
# "http:", "pipe:", "file:", "concat:"...: what FFmpeg and URL libraries read as a protocol. One
# letter is left out: "C:\\x.mp4" is a Windows drive, not a scheme.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")


class BusyError(VideoAestheticsError):
    """Another run holds the lock on an output: two runs must never interleave their writes."""


def looks_like_url(text: str) -> bool:
    """Whether ``text`` starts with a URL scheme or an FFmpeg protocol name rather than naming a local file."""
    return bool(_SCHEME.match(text))


# URL schemes that name the local file system: file:///data is as local as /data.
LOCAL_SCHEMES = frozenset({"", "file", "local"})


def is_remote_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL of a store other than the local file system (s3://, gs://, memory://...).

    Decided from the text alone: nothing is opened.
    """
    text = os.fspath(location).strip()
    return "://" in text and text.split("://", 1)[0].lower() not in LOCAL_SCHEMES


def write_target(path: Path | str) -> Path:
    """Where writing ``path`` lands: a symbolic link's target (the link itself is kept), else ``path``.

    Raises LinkInTheWayError for a link whose target lies outside the folder holding the link
    (``/etc/passwd``, ``../elsewhere``): no output is ever written through a link that leaves its
    folder, whichever writer (atomic_writer, PendingFile, a lock) is asked to.
    """
    path = Path(path)
    if not path.is_symlink():
        return path
    target, folder = os.path.realpath(path), os.path.realpath(path.parent)
    if not is_within(target, folder):
        raise LinkInTheWayError(
            f"{path} is a symbolic link to {target}, outside {folder}: outputs are never written through a "
            "link that leaves its folder; give the real path"
        )
    return Path(target)


def is_within(path: str, folder: str) -> bool:
    """Whether the resolved ``path`` is ``folder`` or below it (both already resolved)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # one relative, one absolute
        return False


def same_file(first: Path | str, second: Path | str) -> bool:
    """Whether two paths name one file, through symbolic links and hard links, existing or not."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        a, b = os.stat(first), os.stat(second)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class PendingFile:
    """A temporary file beside ``path`` (a symlink's target) that becomes ``path`` only when committed.

    Creating it proves that the folder is writable, before any work is done. Leaving its ``with``
    block without ``commit`` (an error, SIGTERM raised as an exception) removes the temporary.
    """

    def __init__(self, path: Path | str, mode: str = "w") -> None:
        self.path = write_target(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}.tmp"
        # Not mkstemp: its 0600 would make outputs private; 0666 lets the umask decide, as for any file.
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            _keep_permissions(fd, self.path)
            self.handle: IO[Any] = os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")
        except BaseException:
            os.close(fd)
            self._unlink()
            raise
        self.committed = False

    def __enter__(self) -> PendingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.discard()

    def finish(self) -> None:
        """Flush the contents to disk (idempotent); the file is not yet visible under its name."""
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()

    def commit(self) -> None:
        self.finish()
        os.replace(self.tmp, self.path)
        self.committed = True

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def atomic_writer(path: Path | str, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place only if the block succeeds.

    A ``path`` that is a symbolic link keeps the link: its target is replaced, atomically.
    """
    with PendingFile(path, mode) as pending:
        yield pending.handle
        pending.commit()


def publish_together(files: Iterable[PendingFile]) -> None:
    """Commit ``files`` in the order given, with SIGTERM and SIGINT held back until all are in place.

    Everything is flushed to disk before the first rename, so a pair of outputs (records and their
    rejects) is never left half-replaced by an interrupt between the renames.
    """
    files = list(files)
    for pending in files:
        pending.finish()
    with _signals_deferred():
        check_stop()  # a stop that a library swallowed on the way must still keep the previous outputs
        for pending in files:
            pending.commit()


def _keep_permissions(fd: int, path: Path) -> None:
    """Give the file ``fd`` the permissions of the file it will replace: a rerun must not widen a private output."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISREG(mode):
        os.fchmod(fd, mode & 0o777)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def lock_path(path: Path | str) -> Path:
    target = write_target(path)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive(paths: Iterable[Path | str]) -> Iterator[None]:
    """Hold a lock for each of ``paths`` (a hidden ``.<name>.lock`` beside it) or raise BusyError at once.

    The lock files are removed on release. A run that opened a lock file just before its holder
    removed it notices (the name now points elsewhere) and tries again, so two runs never both hold
    one path.
    """
    held: list[tuple[Path, int]] = []
    try:
        for path in sorted({lock_path(p) for p in paths}, key=str):
            held.append((path, _acquire(path)))
        yield
    finally:
        for path, fd in reversed(held):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)


def _acquire(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            target = path.parent / path.name[1 : -len(".lock")]
            raise BusyError(
                f"another run (pid {holder}) is writing {target}: wait for it to finish, or choose another output; "
                f"the lock is released when that process exits, so there is no stale lock to delete: if the run "
                f"seems gone, look for process {holder} (another program, or a child it left behind, still holds {path})"
            ) from None
        try:
            mine = os.fstat(fd)
            named = os.stat(path, follow_symlinks=False)
            current = (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)


class LinkInTheWayError(OSError):
    """A symbolic link where a folder was to be written into: writing through it could land anywhere."""


def write_below(root: Path | str, parts: Sequence[str], name: str, data: bytes) -> Path:
    """Write ``data`` atomically to ``root/<parts...>/name``, never through a symbolic link below ``root``.

    Folders are created as needed; each is opened relative to its parent without following links
    (so swapping one for a link mid-way changes nothing), and the file is renamed into place, which
    replaces a link of that name rather than writing through it. ``root`` itself may be a link.
    Raises LinkInTheWayError when one of ``parts`` is a symbolic link.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise LinkInTheWayError(
                        f"{root.joinpath(*parts)}: {part} is a symbolic link; frames are written only into real folders"
                    ) from None
                raise
            os.close(fd)
            fd = child
        tmp = f".{name}.{uuid.uuid4().hex}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
            raise
    finally:
        os.close(fd)
    return root.joinpath(*parts, name)


def is_stream(mode: int) -> bool:
    """Whether a file of this st_mode can be read only once (a pipe, a FIFO, a socket)."""
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextlib.contextmanager
def spooled(stream: BinaryIO, folder: Path | str, name: str) -> Iterator[Path]:
    """The whole of ``stream`` copied once into a temporary file in ``folder``, removed afterwards.

    For inputs that can be read only once (pipes, FIFOs, standard input) but are read several
    times by the caller.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Never committed: the temporary is the spool, and leaving the block removes it.
    with PendingFile(folder / f"{name}.spool", "wb") as pending:
        shutil.copyfileobj(stream, pending.handle, _CHUNK)
        pending.finish()
        yield pending.tmp


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks so that a 1 GB checkpoint costs no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
