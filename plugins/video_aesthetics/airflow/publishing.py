"""Versioned publishing: a partition's result appears whole or not at all, on object stores too.

A partition's result is several files (scored records, rejects, report) and a manifest that must
appear together or not at all, on object stores too, where nothing renames a folder atomically.
So each publish writes a new version folder <partition>/v-<UTC time>-<random>/ and then replaces
<partition>/_manifest.json, one object, atomically: the manifest is the commit point, and names
the version folder's files. A failed or killed publish never touches the manifest; the previous
result stays as it was. Older versions are pruned after a publish (see prune_versions).
"""

from __future__ import annotations

import calendar
import re
import time
import uuid

from airflow.sdk import ObjectStoragePath

from video_aesthetics.airflow.object_store import remove_tree
from video_aesthetics.errors import ConfigError
from video_aesthetics.sharding import safe_name

VERSION_PREFIX = "v-"
MANIFEST_NAME = "_manifest.json"
# Runs whose partition is their logical date: a rerun or backfill of a day replaces that day's result.
DATED_RUN_TYPES = frozenset({"scheduled", "backfill"})
# A plain folder name; never "_staging" or a version's name, which start otherwise.
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_VERSION_TIME = "%Y%m%dT%H%M%SZ"


def partition_name(named: str | None, run_type: str, ds: str | None, run_id: str) -> str:
    """A run's partition: ``named`` (the partition param) when given, else the logical date ``ds`` for
    scheduled runs and backfills, else the run id made safe as a file name.

    The one rule for the DAG, which publishes there, and the results view, which reads there.
    """
    if named:
        if not _PARTITION.match(named) or named.startswith(VERSION_PREFIX):
            raise ConfigError(
                f"partition {named!r} is not a plain folder name: use letters, digits, '.', '_' and '-' "
                f"(not starting with {VERSION_PREFIX!r} or '_'), e.g. 2024-01-31 or reprocess-1"
            )
        return named
    if run_type in DATED_RUN_TYPES and ds:
        return ds
    return safe_name(run_id)


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
