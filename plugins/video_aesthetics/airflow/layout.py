"""Where one DAG run reads and writes: its partition, its input, its output and its staging folder.

Every task of a run computes the same layout from the run's params, type and logical date, and
refuses a layout whose staging could hold or prune a published result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from video_aesthetics import sharding
from video_aesthetics.airflow import dag_embeddings, object_store, publishing
from video_aesthetics.airflow.publishing import DATED_RUN_TYPES, MANIFEST_NAME
from video_aesthetics.airflow.run_params import input_conn_id
from video_aesthetics.config import optional_text
from video_aesthetics.errors import ConfigError, InputError

STAGING_NAME = "_staging"
PLAN_NAME = "plan.json"


class NoInput(InputError):
    """A run has nothing to read: no input configured, or its day's partition folder is absent."""


@dataclass(frozen=True)
class RunLayout:
    """Where one DAG run reads and writes.

    ``partition`` is the ``partition`` param when given, else the logical date (YYYY-MM-DD) for
    scheduled runs and backfills, else the run id made safe as a file name (manual, API and
    asset-triggered runs: each keeps its own result). The output goes to
    ``<output_root>/<partition>/`` (see ``object_store`` for its versions and manifest) and the
    staging files (the shards, which every worker must reach) to ``<work_root>/<dag_id>/<run id>/``.
    """

    dag_id: str
    run_id: str
    run_type: str
    partition: str
    logical_date: str | None
    input_spec: str
    output_dir: str
    work_dir: str
    # The connection of output_root and work_root (output_conn_id), when they are remote.
    conn_id: str | None = None

    @property
    def staging(self) -> ObjectStoragePath:
        return object_store.store_path_with(self.work_dir, self.conn_id)

    @property
    def remote_staging(self) -> bool:
        """Whether the shard files live in an object store (workers share no disk), not a local folder."""
        return object_store.local_path(self.staging) is None

    @property
    def output(self) -> ObjectStoragePath:
        return object_store.store_path(self.output_dir)

    @property
    def output_root(self) -> ObjectStoragePath:
        """The output store's root (output_root, links resolved when local): no publish writes outside it."""
        return self.output.parent

    @property
    def manifest(self) -> ObjectStoragePath:
        return self.output / MANIFEST_NAME

    @property
    def plan_file(self) -> Path:
        return Path(self.work_dir) / PLAN_NAME

    @property
    def dated(self) -> bool:
        return self.run_type in DATED_RUN_TYPES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_type_of(context: Mapping[str, Any]) -> str:
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None) or "manual"
    return str(getattr(run_type, "value", run_type))


def run_layout(params: Mapping[str, Any], context: Mapping[str, Any]) -> RunLayout:
    """The layout of the current run, from its params, its type and its logical date."""
    dag_id = context["dag"].dag_id if context.get("dag") is not None else str(context.get("dag_id", "dag"))
    run_id = str(context["run_id"])
    run_type = run_type_of(context)
    ds = context.get("ds")
    partition = _partition(params, run_type, ds, run_id)
    spec = _input_spec(params, ds, run_id)
    output_root = optional_text(params.get("output_root"))
    if not output_root:
        raise ConfigError("output_root is empty: give a local folder or a URL such as s3://bucket/prefix")
    output_conn = object_store.connection_id(params.get("output_conn_id"), "output_conn_id")
    output = object_store.store_path_with(output_root, output_conn) / partition
    work_root = optional_text(params.get("work_root"))
    work_base: Path | ObjectStoragePath
    if work_root and not object_store.is_local(work_root):
        # An object store: workers on other hosts reach the shard files through it.
        work_base = object_store.store_path_with(work_root, output_conn)
    elif work_root:
        work_base = Path(work_root).expanduser().resolve()
    else:
        local_root = object_store.local_path(object_store.store_path(output_root))
        if local_root is None:
            raise ConfigError(
                f"output_root {output_root} is a remote store: set work_root (or VIDEO_AESTHETICS_WORK_ROOT) "
                "to a folder every worker can read and write, or an object store URL, for the shard files"
            )
        work_base = local_root / STAGING_NAME
    dag_folder = work_base / sharding.safe_name(dag_id)
    _check_staging_apart(object_store.store_path_with(output_root, output_conn), dag_folder, work_root)
    work_dir = dag_folder / sharding.safe_name(run_id)
    return RunLayout(dag_id, run_id, run_type, partition, ds, spec, str(output), str(work_dir), output_conn)


def _check_staging_apart(
    output_root: ObjectStoragePath, dag_folder: Path | ObjectStoragePath, work_root: str | None
) -> None:
    """Refuse a work_root whose staging could hold or prune a published result.

    The staging of a DAG, ``<work_root>/<dag_id>/``, is where plans prune other runs' folders and
    merges remove their own: it must not be output_root, nor lie among its partitions (only below
    ``<output_root>/_staging``, the default), and output_root must not lie inside it.
    """
    outputs, staged = _place(output_root), _place(dag_folder)
    if _inside(staged, outputs) and not _inside(staged, f"{outputs}/{STAGING_NAME}"):
        raise ConfigError(
            f"work_root {work_root!r} puts this DAG's staging at {staged}, inside output_root {outputs} where "
            f"published partitions live (a partition may be named like the DAG): set work_root to a folder outside "
            f"output_root, or leave work_root empty for <output_root>/{STAGING_NAME}"
        )
    if _inside(outputs, staged):
        raise ConfigError(
            f"output_root {outputs} lies inside work_root {work_root!r}'s staging folder {staged}, which runs "
            "prune: give output_root and work_root folders apart from each other"
        )


def _place(location: Path | ObjectStoragePath) -> str:
    """A location as comparable text: a local path with links resolved, else scheme://bucket/key."""
    if isinstance(location, Path):
        return os.path.realpath(location)
    local = object_store.local_path(location)
    if local is not None:
        return os.path.realpath(local)
    return f"{location.protocol}://{str(location.path).strip('/')}"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _partition(params: Mapping[str, Any], run_type: str, ds: str | None, run_id: str) -> str:
    return publishing.partition_name(optional_text(params.get("partition")), run_type, ds, run_id)


def _input_spec(params: Mapping[str, Any], ds: str | None, run_id: str) -> str:
    rescored = dag_embeddings.rescore_source(params)
    if rescored:
        return rescored  # a rescore run reads a published partition, not input_path
    input_path = optional_text(params.get("input_path"))
    if input_path:
        return input_path
    input_root = optional_text(params.get("input_root"))
    if not input_root:
        raise NoInput(
            "neither input_path nor input_root is set: pass input_path (a JSONL file, folder or glob), "
            "or set input_root (VIDEO_AESTHETICS_INPUT_ROOT) to a folder of <YYYY-MM-DD>/ partitions"
        )
    if not ds:
        raise ConfigError(
            f"run {run_id} has no logical date, so it has no partition of input_root to read: "
            "pass input_path (a JSONL file, folder or glob) in the run's params, or trigger it with a logical date"
        )
    if not object_store.is_local(input_root):
        remote = object_store.store_path_with(input_root, input_conn_id(params)) / ds
        if not remote.exists():
            raise NoInput(f"no input for {ds}: {remote} does not exist")
        return str(remote)
    folder = Path(input_root).expanduser() / ds
    if not folder.exists():
        raise NoInput(f"no input for {ds}: {folder} does not exist")
    return str(folder)
