"""Frames in an object store: a figure_root given as a URL (s3://bucket/frames, gs://...).

The library reaches the store through fsspec alone, with the storage options the config carries
(the Airflow wing makes them from a connection). A clip's frames are listed, the selected ones
fetched side by side on a small per-process thread pool, and handed to the same decoders as local
files, as frames.FetchedFrame: a frame that is missing (gone between listing and fetching) or does
not decode is skipped exactly as a local one.

A store that refuses or fails a read (access denied, expired credentials, unreachable, server errors
after the client's retries) is no damaged frame: it raises StoreAccessError, which fails the run (the
Airflow task, for a retry) instead of marking every clip corrupt_frames while the store is down.
"""

from __future__ import annotations

import builtins
import json
import os
import posixpath
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from video_aesthetics.errors import ConfigError, StoreAccessError
from video_aesthetics.files import is_remote_url
from video_aesthetics.frames import IMAGE_SUFFIXES, FetchedFrame, is_readable, natural_key, select_frames

if TYPE_CHECKING:
    from video_aesthetics.config import ScoringConfig

# Frames fetched at once from a remote figure_root by one process (a decoding worker): enough to hide
# an object store's latency, few enough that N workers do not open N x many connections.
FETCH_THREADS = 8
# A remote frame is read into memory whole (a local one can be streamed): larger objects are refused.
MAX_REMOTE_FRAME_BYTES = 256 << 20
# Errors that concern one object, not the store: it is gone, or a folder where a file was listed.
# Every other error of a read is the store's (StoreAccessError).
_OBJECT_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class RemoteFrames:
    """The frames below a remote figure_root: listed and fetched with fsspec.

    ``records.samples_of`` names a clip's folder as ``Path(figure_root) / stem / clip / "img"`` (a
    Path folds the URL's "//"): ``url`` maps such a folder back to its URL.
    """

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self.folded = Path(root)
        # Kept as given, read once per process: a mapping may build a session of its own in each one.
        self.storage_options: Mapping[str, Any] = storage_options if storage_options is not None else {}
        self._opened: tuple[int, Any, str] | None = None
        self.fs  # noqa: B018 - a store fsspec cannot open is a ConfigError here, not a skipped frame per clip

    @property
    def fs(self) -> Any:
        """The fsspec file system, opened once per process: a forked decoding worker must not share its connections."""
        return self._open()[1]

    @property
    def root_path(self) -> str:
        return self._open()[2]

    def _open(self) -> tuple[int, Any, str]:
        """This process's (pid, file system, root path), opened here the first time the process asks."""
        if self._opened is None or self._opened[0] != os.getpid():
            try:
                import fsspec

                fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            except (ImportError, ValueError) as err:
                raise ConfigError(
                    f"figure_root {self.root!r}: fsspec cannot open this store ({err}); install its package "
                    "(s3fs for s3://: pip install 'video-aesthetics[s3]') or give a local folder"
                ) from err
            self._opened = (os.getpid(), fs, path)
        return self._opened

    def relative(self, folder: Path | str) -> str:
        return Path(folder).relative_to(self.folded).as_posix()

    def url(self, folder: Path | str) -> str:
        relative = self.relative(folder)
        return self.root if relative == "." else f"{self.root}/{relative}"

    def list(self, folder: Path | str) -> list[PurePosixPath]:
        """The image files directly in ``folder``, in frame order; empty when there are none (as list_frames)."""
        relative = self.relative(folder)
        target = self.root_path.rstrip("/") if relative == "." else f"{self.root_path.rstrip('/')}/{relative}"
        fs = self.fs  # a store fsspec cannot open stays a ConfigError
        try:
            entries = fs.ls(target, detail=True)
        except _OBJECT_ERRORS:
            return []
        except Exception as err:
            raise self.access_error("list", target, err) from err
        frames = []
        for entry in entries:
            name = posixpath.basename(str(entry.get("name", "")).rstrip("/"))
            if entry.get("type") != "file" or name.startswith("."):
                continue
            if posixpath.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                frames.append(PurePosixPath(str(entry["name"])))
        return sorted(frames, key=natural_key)

    # builtins.list: in this class body, "list" is the method above.
    def fetch(self, paths: Sequence[PurePosixPath | str]) -> builtins.list[FetchedFrame]:
        """The frames at ``paths``, fetched concurrently (at most FETCH_THREADS at once), in order."""
        if len(paths) <= 1:
            return [self._fetch_one(path) for path in paths]
        return list(_fetch_pool().map(self._fetch_one, paths))

    def _fetch_one(self, path: PurePosixPath | str) -> FetchedFrame:
        location = f"{self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]}://{path}"
        try:
            # A ranged read: an object far larger than any frame is refused without holding it all.
            data = self.fs.cat_file(str(path), start=0, end=MAX_REMOTE_FRAME_BYTES + 1)
            if len(data) > MAX_REMOTE_FRAME_BYTES:
                return FetchedFrame(
                    location, None, f"larger than {MAX_REMOTE_FRAME_BYTES >> 20} MiB, not a video frame"
                )
            return FetchedFrame(location, data)
        except _OBJECT_ERRORS as err:
            return FetchedFrame(location, None, f"{type(err).__name__}: {err}")
        except Exception as err:
            raise self.access_error("read", location, err) from err

    def access_error(self, action: str, what: str, err: BaseException) -> StoreAccessError:
        """The error for a store that refused or failed a request: names the store and the cause, not a frame's fault."""
        return StoreAccessError(
            f"figure_root {self.root}: the store failed to {action} {what} ({_describe(err)}); "
            "this is a store or credentials problem, not a damaged frame: no clip was marked, retry once "
            "the store is reachable with valid credentials"
        )


def _describe(err: BaseException) -> str:
    """An error and, where the store's client gave one, the store's own code (AccessDenied, ExpiredToken...)."""
    text = f"{type(err).__name__}: {err}"
    for cause in (err, err.__cause__, err.__context__):
        response = getattr(cause, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code:
            return f"{text}; the store said {code}"
    return text


_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def _fetch_pool() -> ThreadPoolExecutor:
    """This process's fetch threads; a forked decoding worker makes its own (threads do not survive a fork)."""
    with _pool_lock:
        pid = os.getpid()
        if pid not in _pools:
            _pools.clear()
            _pools[pid] = ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="frame-fetch")
        return _pools[pid]


def remote_frames(config: ScoringConfig) -> RemoteFrames | None:
    """The store of ``config``'s frames when figure_root is a URL, else None (local frames).

    One per process and store: each sample of a run asks for it.
    """
    if not is_remote_url(config.figure_root):
        return None
    given = config.frames_storage_options
    options: Mapping[str, Any] = {} if given is None else given
    # A plain dict is keyed by its values; another mapping (one that builds its session per process,
    # whose values are not to be read here) by itself.
    key = (config.figure_root, json.dumps(options, sort_keys=True, default=repr) if type(options) is dict else options)
    with _pool_lock:
        store = _stores.get(key)
    if store is None:
        store = RemoteFrames(config.figure_root, options)
        with _pool_lock:
            if len(_stores) >= 8:
                _stores.clear()
            _stores[key] = store
    return store


_stores: dict[tuple[str, Any], RemoteFrames] = {}


def remote_has_frames(store: RemoteFrames, folder: Path, load_num: int) -> bool:
    """Whether the frames the scorer would read from remote ``folder`` exist and all decode (extraction.has_frames)."""
    selected = select_frames(store.list(folder), load_num)
    return bool(selected) and all(is_readable(frame) for frame in store.fetch(selected))
