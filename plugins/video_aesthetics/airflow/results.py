"""What a run published, found from the deployment's configuration, never from data a user can write.

The results view serves files; anyone who may edit a DAG's runs can write its XCom, and anyone with
write access to the output store can write its manifests. So nothing here takes a location from
XCom, a manifest or a record. The run's partition folder is computed as the DAG computes it (its
conf's ``partition``, else its logical date, else its run id) under the output store of the
deployment's ``output_root`` setting (or the run's own ``output_root`` when it lies inside the
``allowed_roots``); the manifest there is read; and a file the manifest names is offered only when
it is exactly ``<partition>/<version>/<name>`` and, locally, resolves (after links) inside that
version folder as a regular file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from video_aesthetics.airflow import object_store, publishing, roots
from video_aesthetics.airflow.conf import setting
from video_aesthetics.airflow.publishing import MANIFEST_NAME
from video_aesthetics.config import optional_text
from video_aesthetics.errors import ConfigError
from video_aesthetics.files import is_remote_url, is_within

log = logging.getLogger(__name__)

# A manifest is a few KB to a few MB (per-shard checksums, the report's summary); anything far
# larger is not one, and would only cost the api-server memory.
MANIFEST_MAX_BYTES = 64 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# The order downloads are offered in; any other file the manifest names comes after these.
KNOWN_FILES = ("scored.jsonl", "kept.jsonl", "rejects.jsonl", "report.html", MANIFEST_NAME)


# Where a run's own output_root may point for the view to read it (the deployment's setting is trusted).
STORE_SCHEMES = frozenset({"", "file", "local", "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl"})


class Refused(Exception):
    """The run's result cannot be served safely; the message says why, for the page and the log."""


@dataclass(frozen=True)
class RunFacts:
    """The database's record of a run: what the partition and output store are computed from."""

    dag_id: str
    run_id: str
    run_type: str
    logical_date: datetime | None
    conf: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Store:
    """The output store the view reads a run's partition from, and why that one."""

    root: str
    conn_id: str | None
    from_conf: bool


@dataclass(frozen=True)
class Published:
    """A partition's current publish: its manifest and the files it may serve, by name."""

    partition: str
    version: str
    manifest: dict[str, Any]
    files: dict[str, ObjectStoragePath]
    published_at: datetime | None

    def _run_field(self, key: str) -> str | None:
        run = self.manifest.get("run")
        value = run.get(key) if isinstance(run, dict) else None
        return value if isinstance(value, str) else None

    @property
    def run_id(self) -> str | None:
        return self._run_field("run_id")

    @property
    def dag_id(self) -> str | None:
        return self._run_field("dag_id")

    def belongs_to(self, dag_id: str, run_id: str) -> bool:
        """Whether this publish is the given run's: DAGs that share an output store may share partition
        names and even run ids (scheduled__<date>), and one DAG's readers must not get another's files."""
        return self.run_id == run_id and self.dag_id == dag_id


def output_store(conf: Mapping[str, Any]) -> Store:
    """The run's output store: its conf's output_root only when allowed_roots is unset or contains it.

    A refused conf root is not an error here: the DAG's first task refuses such a run, so it
    published nothing there; the view falls back to the deployment's own store.
    """
    wanted = optional_text(conf.get("output_root")) if isinstance(conf, Mapping) else None
    if isinstance(wanted, str) and wanted and _store_scheme(wanted) and roots.is_allowed(wanted):
        conn = optional_text(conf.get("output_conn_id"))
        return Store(wanted, conn if isinstance(conn, str) else None, True)
    root = setting("output_root")
    if not root:
        raise Refused("the output_root setting (VIDEO_AESTHETICS_OUTPUT_ROOT) is empty")
    return Store(root, setting("output_conn_id"), False)


def _store_scheme(location: str) -> bool:
    """Whether ``location`` is local or in an object store: never http(s), ftp or another fetch by URL.

    With allowed_roots unset a run's conf may name any output_root, and the view must not become a
    way to make the api-server fetch a URL of the user's choosing.
    """
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    return scheme in STORE_SCHEMES


def partition_of(run: RunFacts) -> str:
    """The run's partition, by the DAG's own rule (``publishing.partition_name``)."""
    named = run.conf.get("partition") if isinstance(run.conf, Mapping) else None
    ds = run.logical_date.astimezone(timezone.utc).strftime("%Y-%m-%d") if run.logical_date is not None else None
    try:
        return publishing.partition_name(
            optional_text(named) if isinstance(named, str) else None, run.run_type, ds, run.run_id
        )
    except ConfigError as err:
        raise Refused(f"the run's partition is refused: {err}") from None


def find_published(run: RunFacts) -> Published | None:
    """The current publish of the run's partition, or None when it has no manifest."""
    store = output_store(run.conf)
    if not roots.is_allowed(store.root):
        raise Refused(f"output_root {store.root!r} is outside the allowed roots (setting allowed_roots)")
    partition = partition_of(run)
    try:
        base = object_store.store_path_with(store.root, store.conn_id)
    except ConfigError as err:
        raise Refused(str(err)) from None
    part = base / partition
    local_base = object_store.local_path(base)
    if local_base is not None:
        return _find_local(os.path.realpath(local_base), partition)
    return _find_remote(part, partition)


def _find_local(base: str, partition: str) -> Published | None:
    folder = os.path.join(base, partition)
    real_folder = os.path.realpath(folder)
    if not is_within(real_folder, base) or real_folder == base:
        raise Refused(f"the partition folder {partition} leads out of the output store through a link")
    manifest_path = os.path.join(real_folder, MANIFEST_NAME)
    if not os.path.lexists(manifest_path):
        return None
    real_manifest = os.path.realpath(manifest_path)
    if os.path.dirname(real_manifest) != real_folder:
        raise Refused(f"{MANIFEST_NAME} of partition {partition} is a link to another place")
    with _open_regular(real_manifest, f"{MANIFEST_NAME} of partition {partition}") as handle:
        raw = handle.read(MANIFEST_MAX_BYTES + 1)
    manifest = _parse_manifest(raw, partition)
    version = _version_of(manifest, partition)
    real_version = os.path.realpath(os.path.join(real_folder, version))
    if os.path.dirname(real_version) != real_folder:
        raise Refused(f"the version folder {version} of partition {partition} is a link to another place")
    files: dict[str, ObjectStoragePath] = {}
    for name, value in _named_files(manifest):
        if not _in_version(value, name, real_version):
            log.warning(
                "partition %s: the manifest names %r, not a file of version %s: not served", partition, value, version
            )
            continue
        real = os.path.realpath(os.path.join(real_version, name))
        if os.path.dirname(real) != real_version:
            log.warning("partition %s: %s leads out of version %s through a link: not served", partition, name, version)
            continue
        files[name] = object_store.store_path(real)
    files[MANIFEST_NAME] = object_store.store_path(real_manifest)
    return Published(partition, version, manifest, files, _version_time(version))


def _find_remote(part: ObjectStoragePath, partition: str) -> Published | None:
    manifest_path = part / MANIFEST_NAME
    try:
        with manifest_path.open("rb") as handle:
            raw = handle.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Refused(f"cannot read {MANIFEST_NAME} of partition {partition}: {err}") from None
    manifest = _parse_manifest(raw, partition)
    version = _version_of(manifest, partition)
    files: dict[str, ObjectStoragePath] = {}
    for name, value in _named_files(manifest):
        expected = part / version / name
        # Keys compared as text, scheme, bucket and key, with the connection left out: a manifest
        # naming another bucket, an http:// URL or a key outside the version is not served.
        if roots.same_location(value, str(expected)):
            files[name] = expected
        else:
            log.warning(
                "partition %s: the manifest names %r, not a file of version %s: not served", partition, value, version
            )
    files[MANIFEST_NAME] = manifest_path
    return Published(partition, version, manifest, files, _version_time(version))


def _parse_manifest(raw: bytes, partition: str) -> dict[str, Any]:
    if len(raw) > MANIFEST_MAX_BYTES:
        raise Refused(f"{MANIFEST_NAME} of partition {partition} is larger than {MANIFEST_MAX_BYTES >> 20} MiB")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(f"{MANIFEST_NAME} of partition {partition} is not JSON") from None
    if not isinstance(manifest, dict):
        raise Refused(f"{MANIFEST_NAME} of partition {partition} is not a JSON object")
    return manifest


def _version_of(manifest: Mapping[str, Any], partition: str) -> str:
    run = manifest.get("run")
    version = run.get("version") if isinstance(run, dict) else None
    if not isinstance(version, str) or not _NAME.match(version) or publishing.version_time(version) is None:
        raise Refused(f"{MANIFEST_NAME} of partition {partition} names no valid version folder")
    return version


def _named_files(manifest: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(file name, location as written) for each file the manifest's output section names."""
    output = manifest.get("output")
    if not isinstance(output, dict):
        return
    for key, value in output.items():
        location = value.get("path") if isinstance(value, dict) else value
        if key in ("sha256", "bytes", "records") or not isinstance(location, str) or not location:
            continue
        name = location.rstrip("/").rsplit("/", 1)[-1]
        if _NAME.match(name) and name != MANIFEST_NAME:
            yield name, location


def _in_version(value: str, name: str, real_version: str) -> bool:
    """Whether the manifest's ``value`` names ``name`` in the version folder (through any link to its folder)."""
    text = value[len("file://") :] if value.startswith("file://") else value
    if is_remote_url(text) or "://" in text or not os.path.isabs(text) or "\x00" in text:
        return False
    return os.path.basename(text) == name and os.path.realpath(os.path.dirname(text)) == real_version


def _version_time(version: str) -> datetime | None:
    seconds = publishing.version_time(version)
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None


class _Regular:
    """A regular file opened without following a link and without blocking on a FIFO."""

    def __init__(self, path: str, what: str) -> None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except OSError as err:
            raise Refused(f"cannot open {what}: {err.strerror}") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise Refused(f"{what} is not a regular file")
        os.set_blocking(fd, True)
        self.handle: IO[bytes] = os.fdopen(fd, "rb")

    def __enter__(self) -> IO[bytes]:
        return self.handle

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _open_regular(path: str, what: str) -> _Regular:
    return _Regular(path, what)


def open_file(published: Published, name: str) -> IO[bytes]:
    """A binary handle on the published file ``name``; Refused when the manifest names no such file."""
    path = published.files.get(name)
    if path is None:
        raise Refused(f"partition {published.partition} has published no file named {name!r}")
    local = object_store.local_path(path)
    if local is not None:
        # Checked again at open: the folder may have changed since the manifest was read.
        real = os.path.realpath(local)
        if real != str(local):
            raise Refused(f"{name} of partition {published.partition} changed into a link")
        return _Regular(real, f"{name} of partition {published.partition}").handle
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise Refused(f"{name} of partition {published.partition} is gone: a later publish pruned it") from None
