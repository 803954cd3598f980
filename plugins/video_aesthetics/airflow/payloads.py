"""The XCom values of the video_aesthetic_scoring DAG's tasks, as types.

Each task's result is declared here once, for the task that returns it and for mypy; a task that
reads another's result still treats it as untrusted data (anyone who may edit a DAG's runs can write
its XCom): ``merge.merge`` checks the score_shard results against the plan and their files'
SHA-256 before it uses them, and reads them as plain mappings until then.

Plain TypedDicts, not dataclasses: XCom stores JSON, and a task's result must stay a dict of JSON
values that Airflow serialises without this package installed (the api-server shows them).
"""

from __future__ import annotations

from typing import Any, TypedDict, final

from video_aesthetics.report import Headline

__all__ = [
    "FrameCheck",
    "FrameCounts",
    "Headline",
    "KeptFile",
    "MergeSummary",
    "ProcessArgs",
    "RescoreCheck",
    "ShardConnections",
    "ShardEmbeddings",
    "ShardOutcome",
    "ShardResult",
    "ShardTask",
]


class FrameCounts(TypedDict):
    """What the frame check found and did (extraction.FrameReport's fields), clip by clip."""

    records: int
    clips: int
    present: int
    extracted: int
    missing: int
    unreadable_videos: int
    # The first few clips without readable frames (extraction.FIRST_MISSING), by name.
    first_missing: list[str]


# final: check_frames returns one of these two, and a reader tells them apart by a key ("inputs" in result).
@final
class FrameCheck(FrameCounts):
    """check_frames' result for a run that scores records: the counts, its partition and input files."""

    partition: str
    inputs: int


@final
class RescoreCheck(TypedDict):
    """check_frames' result for a rescore run, which reads no frame: the partition it rescores from."""

    rescore_from: str
    partition: str


class ProcessArgs(TypedDict):
    """How many processes score a shard (shard_plan.process_kwargs)."""

    init_distributed: bool
    nproc: int | None


class ShardConnections(TypedDict, total=False):
    """The connections a shard is read and written through, where they are remote."""

    # The staging (work_root) is remote: the shard and its output go through its connection.
    input_conn_id: str | None
    output_conn_id: str | None
    # figure_root is remote.
    frames_conn_id: str | None


class ShardEmbeddings(TypedDict, total=False):
    """Where a shard writes its embeddings, when the run asks for them (dag_embeddings.shard_kwargs)."""

    embeddings: str
    embeddings_dtype: str


class ShardTask(ProcessArgs, ShardConnections, ShardEmbeddings):
    """One score_shard task's own operator arguments, from plan_shards.

    The task's other arguments are the run's scoring parameters (``shard_plan.score_kwargs``): they
    follow ``parameters.PARAMETERS`` and are typed there and by ScoringConfig, not declared again here.
    """

    input_path: str
    output_path: str


class ShardOutcome(TypedDict):
    """What merge reads of a score_shard result, once checked (merge._check_shard_results)."""

    output: str
    records: int
    clips: int
    scored: int
    failed: int
    sha256: str
    # The model's identity (runner.RunStats.model): architecture, weights and their SHA-256.
    model: dict[str, Any]
    # Where the shard's embeddings went, their SHA-256 and size; None when not asked for.
    embeddings: dict[str, Any] | None


class ShardResult(ShardOutcome):
    """A score_shard task's result (VideoAestheticScoringOperator.execute): its files, counts and model."""

    input: str
    passthrough: int
    rejected: int
    # Failed clips by reason (records.py's failure keys).
    errors: dict[str, int]
    rejects: str | None
    bytes: int
    seconds: float
    clips_per_s: float
    version: str


class KeptFile(TypedDict):
    """kept.jsonl of a publish with aes_min/aes_max: where it is and how many records it holds."""

    path: str
    records: int


class MergeSummary(TypedDict):
    """merge's result, and the extra of the asset events it emits: what the run published."""

    partition: str
    version: str
    output: str
    manifest: str
    rejects: str | None
    report: str
    kept: KeptFile | None
    embeddings: str | None
    summary: Headline
    records: int
    clips: int
    scored: int
    failed: int
    sha256: str
