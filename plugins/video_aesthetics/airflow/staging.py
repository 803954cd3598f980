"""The staging folders of a DAG's runs: stamped when planned, moved to and from a store, pruned once old.

A run stages its shards in ``<work_root>/<dag_id>/<run id>/``; a successful merge removes the
folder. A failed run's folder is kept so that clearing its tasks can still finish it from its
shards, but not forever: each plan of a later run of the same DAG removes the folders of other
runs whose stamp (written here at plan time) is older than the setting ``staging_retention``
(default 7 days). Never the planning run's own folder, never one younger than the retention, and
never one whose run is still queued or running.

Staging never deletes what it did not create: a folder is pruned only when it carries this
project's stamp (``STAMP_NAME``, a small regular file) naming the DAG and the run that its place in
the layout says (``<safe dag id>/<safe run id>``). A folder without such a stamp is never removed,
whatever its age: it is not ours, or its stamp was damaged, and a person must look at it. (A plan
writes its stamp before anything else, so a folder of ours that lacks one holds nothing either.)
``layout.run_layout`` also refuses a work_root whose DAG folder would lie among output_root's
published partitions, so no published version can ever sit where staging is pruned.

Works on a local folder and an object store alike (``object_store``): the age is the stamp's
content, not a folder's modification time, which object stores do not keep. With no disk shared
between workers, a run's staging lives in the store: ``publish_staging`` uploads the plan's shards
and ``fetch_staging`` brings them and the scored shards back for the merge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from video_aesthetics import merging, settings, sharding
from video_aesthetics.airflow import object_store
from video_aesthetics.airflow.conf import setting
from video_aesthetics.errors import ConfigError

log = logging.getLogger(__name__)

STAMP_NAME = "_staged.json"
# A stamp is a few dozen bytes of JSON; anything much larger is not one of ours.
MAX_STAMP_BYTES = 4096
NEVER = frozenset({"never", "none", "off"})
# Runs in these states may still read their shards.
ACTIVE_STATES = frozenset({"queued", "running"})
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")

RunState = Callable[[str], "str | None"]


def retention_seconds(value: str | None = None) -> float | None:
    """The ``staging_retention`` setting in seconds; None when pruning is off ("never")."""
    text = str(value if value is not None else setting("staging_retention")).strip().lower()
    if text in NEVER:
        return None
    match = _DURATION.match(text)
    if match is None:
        env = settings.SETTINGS["staging_retention"].env
        raise ConfigError(
            f"setting staging_retention ({env}) must be an age such as 7d, 36h, 90m or 3600 (seconds), "
            f"or never, got {text!r}"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def stamp(
    work_dir: str | os.PathLike[str] | ObjectStoragePath, dag_id: str, run_id: str, now: float | None = None
) -> None:
    """Record in the run's staging folder which run it belongs to and when it was planned."""
    planned_at = time.time() if now is None else now
    data = json.dumps({"dag_id": dag_id, "run_id": run_id, "planned_at": planned_at}).encode("utf-8")
    target = object_store.store_path(work_dir) / STAMP_NAME
    local = object_store.local_path(target)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
    object_store.write_atomic(target, lambda out: out.write(data))


def prune(
    work_dir: str | os.PathLike[str] | ObjectStoragePath,
    retention_s: float | None,
    run_state: RunState | None = None,
    now: float | None = None,
) -> list[str]:
    """Remove the staging folders beside ``work_dir`` (other runs of its DAG) older than ``retention_s``.

    ``run_state`` answers a run id's state ("running", "failed", ... or None when the run is gone);
    a run it reports queued or running keeps its folder whatever its age. Returns the names removed.
    """
    if retention_s is None:
        return []
    current = object_store.store_path(work_dir)
    dag_dir = current.parent
    if not dag_dir.exists():
        return []
    now = time.time() if now is None else now
    removed = []
    for folder in sorted(dag_dir.iterdir(), key=lambda p: p.name):
        if folder.name == current.name or _is_link(folder) or not folder.is_dir():
            continue  # a link is not a folder this project made: its target is never pruned
        owner, since = _staged(folder)
        if since is None or now - since < retention_s:
            continue
        if owner is not None and run_state is not None and _active(owner, run_state):
            log.info("keeping %s: run %s is still active", folder, owner)
            continue
        object_store.remove_tree(folder)
        removed.append(folder.name)
    if removed:
        days = retention_s / 86400
        log.info("removed %d staging folder(s) older than %.3g day(s): %s", len(removed), days, ", ".join(removed))
    return removed


def stamp_and_prune(work_dir: str | os.PathLike[str] | ObjectStoragePath, context: Mapping[str, Any]) -> list[str]:
    """What plan_shards calls: stamp the run's own staging folder, then prune its DAG's old ones."""
    dag = context.get("dag")
    dag_id = dag.dag_id if dag is not None else str(context.get("dag_id", ""))
    stamp(work_dir, dag_id, str(context["run_id"]))
    ti = context.get("ti")
    lookup = getattr(ti, "get_dagrun_state", None)
    run_state = (lambda run_id: _run_state(lookup, dag_id, run_id)) if lookup is not None else None
    return prune(work_dir, retention_seconds(), run_state)


def _run_state(lookup: Callable[[str, str], Any], dag_id: str, run_id: str) -> str | None:
    try:
        state = lookup(dag_id, run_id)
    except Exception as err:  # noqa: BLE001 - housekeeping must not fail the plan
        if _not_found(err):
            return None  # the run was deleted: nothing can clear it any more
        # Unknown: as if active, so that a glitch never removes a live run's shards.
        log.warning("could not look up the state of run %s (%s): keeping its staging folder", run_id, err)
        return "running"
    return str(getattr(state, "value", state))


def _not_found(err: Exception) -> bool:
    """Whether the Execution API answered 404: a supervised task gets it wrapped in AirflowRuntimeError,
    dag.test()'s in-process supervisor passes the client's ServerResponseError on."""
    if getattr(getattr(err, "response", None), "status_code", None) == 404:
        return True
    detail = getattr(getattr(err, "error", None), "detail", None)
    return isinstance(detail, Mapping) and detail.get("status_code") == 404


def _active(run_id: str, run_state: RunState) -> bool:
    return (run_state(run_id) or "") in ACTIVE_STATES


def _staged(folder: ObjectStoragePath) -> tuple[str | None, float | None]:
    """The run that owns ``folder`` and when it was planned, from its stamp; (None, None) when the folder
    carries no valid stamp of ours for this place in the layout (then it is never pruned)."""
    marker = folder / STAMP_NAME
    try:
        data = json.loads(_read_stamp(marker))
        dag_id, run_id, planned_at = str(data["dag_id"]), str(data["run_id"]), float(data["planned_at"])
    except FileNotFoundError:
        log.info("keeping %s: it has no staging stamp, so this project did not create it", folder)
        return None, None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("keeping %s: its stamp %s is not valid (%s)", folder, marker, err)
        return None, None
    if sharding.safe_name(run_id) != folder.name or sharding.safe_name(dag_id) != folder.parent.name:
        log.warning(
            "keeping %s: its stamp names run %r of DAG %r, which would be staged elsewhere", folder, run_id, dag_id
        )
        return None, None
    return run_id, planned_at


def _is_link(path: ObjectStoragePath) -> bool:
    local = object_store.local_path(path)
    return local is not None and local.is_symlink()


def _read_stamp(marker: ObjectStoragePath) -> bytes:
    """The stamp's bytes, read only when it is a small regular file: a FIFO, a device or a link in its
    place would block the plan or feed it without end."""
    local = object_store.local_path(marker)
    if local is None:
        size = marker.stat().get("size")
        if not isinstance(size, int) or size > MAX_STAMP_BYTES:
            raise ValueError(f"a stamp is at most {MAX_STAMP_BYTES} bytes, this one is {size}")
        return marker.read_bytes()
    info = os.lstat(local)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_STAMP_BYTES:
        raise ValueError(f"a stamp is a regular file of at most {MAX_STAMP_BYTES} bytes")
    fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_STAMP_BYTES + 1)


# --- a run's staging in an object store ------------------------------------------------------------

# With no disk shared between workers, the shard files live in the store too: plan_shards cuts them
# locally (staging_folder) and uploads them (publish_staging) under <work_root>/<dag_id>/<run id>/, each
# score_shard downloads its shard and uploads its scored shard (object_store.local_input/local_output),
# and merge downloads them into a scratch folder (fetch_staging) and merges there, as from a shared folder.


@contextlib.contextmanager
def staging_folder(staging: ObjectStoragePath) -> Iterator[Path]:
    """Where plan_shards cuts the shards: the staging folder itself when local, else a temporary one to upload."""
    local = object_store.local_path(staging)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="video-aesthetics-plan-") as folder:
        yield Path(folder)


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder for the merge's downloads, removed however the merge ends."""
    with tempfile.TemporaryDirectory(prefix="video-aesthetics-merge-") as folder:
        yield Path(folder)


def publish_staging(
    plan: sharding.ShardPlan, local_staging: Path, staging: ObjectStoragePath, plan_name: str
) -> sharding.ShardPlan:
    """Upload a plan cut in ``local_staging`` to the store folder ``staging``; the plan, naming store locations.

    An earlier attempt's shards are removed first (as sharding.plan_shards does locally), so a retried plan never leaves a stale shard
    behind; the plan file is written last, so a plan file always names shards that exist.
    """
    for folder in ("shards", "scored"):
        object_store.remove_tree(staging / folder)
    shards = []
    for shard in plan.shards:
        target = staging / "shards" / Path(shard.input).name
        object_store.upload(Path(shard.input), target)
        shards.append(
            dataclasses.replace(shard, input=str(target), output=str(staging / "scored" / Path(shard.output).name))
        )
    rejects = None
    if plan.rejects is not None:
        rejects = staging / Path(plan.rejects).name
        object_store.upload(Path(plan.rejects), rejects)
    published = dataclasses.replace(plan, shards=shards, rejects=str(rejects) if rejects is not None else None)
    data = json.dumps(published.as_dict(), indent=1).encode("utf-8")
    object_store.write_atomic(staging / plan_name, lambda out: out.write(data))
    log.info("staged %d shard(s) in %s", len(shards), staging)
    return published


def fetch_staging(
    staging: ObjectStoragePath, plan_name: str, results: Sequence[Mapping[str, Any]], scratch: Path
) -> tuple[sharding.ShardPlan, list[Mapping[str, Any]]]:
    """Download a remote run's plan, shards and scored shards into ``scratch``: the plan and the
    score_shard results, both naming the local copies, for the merge to check and merge as it does
    local staging. A scored shard that is missing stays missing (the merge names it)."""
    plan_file = staging / plan_name
    try:
        data = json.loads(plan_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise merging.MergeError(
            f"the shard plan {plan_file} is missing: clear plan_shards and its downstream tasks to plan this run again"
        ) from None
    plan = sharding.ShardPlan.from_dict(data)
    renamed: dict[str, str] = {}
    shards = []
    for shard in plan.shards:
        local = {}
        for kind, location in (("shards", shard.input), ("scored", shard.output)):
            target = scratch / kind / Path(object_store.store_path(location).name)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = object_store.store_path(location)
            if source.exists():
                object_store.download(source, target)
            local[kind] = str(target)
            renamed[location] = str(target)
        shards.append(dataclasses.replace(shard, input=local["shards"], output=local["scored"]))
    rejects = None
    if plan.rejects is not None:
        rejects = scratch / "rejects.jsonl"
        object_store.download(object_store.store_path(plan.rejects), rejects)
    fetched = dataclasses.replace(plan, shards=shards, rejects=str(rejects) if rejects is not None else None)
    local_results = [
        {**result, "output": renamed.get(str(result.get("output")), result.get("output"))}
        if isinstance(result, dict)
        else result
        for result in results
    ]
    return fetched, local_results
