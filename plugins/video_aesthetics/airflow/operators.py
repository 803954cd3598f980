"""VideoAestheticScoringOperator: the seed's VideoAestheticEvaluator as an Airflow task over JSONL files.

Importing this module imports neither torch nor the model code: Airflow imports operators while
parsing DAGs and loading plugins, in processes that fork task runners, and CUDA does not survive a
fork. The model is loaded inside execute(), in the task's own process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from video_aesthetics import __version__
from video_aesthetics.airflow import credentials, object_store
from video_aesthetics.airflow.links import ScoredOutputLink
from video_aesthetics.airflow.payloads import MergeSummary, ShardResult
from video_aesthetics.airflow.task_process import cpu_threads, die_with_supervisor
from video_aesthetics.config import PARAM_NAMES, ScoringConfig, optional_text
from video_aesthetics.errors import ConfigError, VideoAestheticsError
from video_aesthetics.files import is_remote_url, sha256_file
from video_aesthetics.jsonl import rejects_location
from video_aesthetics.parameters import DEFAULTS, rst_docs

if TYPE_CHECKING:
    from airflow.sdk import Context

    from video_aesthetics.runner import RunStats

log = logging.getLogger(__name__)


class VideoAestheticScoringOperator(BaseOperator):
    """Score every clip of a JSONL file with CLIP and LAION's aesthetic head, into another JSONL file.

    The scoring parameters are the seed's (DataFlow-MM VideoAestheticEvaluator), with its defaults,
    and keep their Python types: only the locations (paths, the model and head files) are
    templated. ``input_path`` and ``output_path`` may be local or in any object store Airflow's
    ObjectStoragePath reaches (remote files are staged through a local temporary file), and so may
    ``figure_root`` (frames are then fetched by the decoding workers, a few at a time each). Remote
    locations are reached through the Airflow connections ``input_conn_id``, ``output_conn_id`` and
    ``frames_conn_id``, as Airflow's own transfer operators do.

    Returns (as its XCom) only small metadata: the paths, counts, the output's SHA-256 and the
    identity of the model. A bad configuration, a malformed input or missing weights fail the task
    at once; other errors (an out-of-memory kill, a lost GPU) are retried with exponential backoff.

    :param input_path: the JSONL records to score (templated).
    :param output_path: where the scored records go, written atomically (templated).
    :param rejects_path: where malformed lines go with ``skip_bad_records`` (templated; default
        ``<output stem>.rejects.jsonl``).
    The scoring parameters (below, declared in video_aesthetics.parameters) keep their Python types;
    of them figure_root, clip_model, mlp_checkpoint and video_root are templated.

    :param input_conn_id: the Airflow connection of a remote ``input_path`` (None: the store's defaults).
    :param output_conn_id: the Airflow connection of a remote ``output_path`` and ``rejects_path``.
    :param frames_conn_id: the Airflow connection of a remote ``figure_root``.
    :param embeddings: also write every scored frame's CLIP embedding to this Parquet file (templated;
        reached through ``output_conn_id``; see video_aesthetics.embeddings). None: not written.
    """

    template_fields: Sequence[str] = (
        "input_path",
        "output_path",
        "rejects_path",
        "embeddings",
        "figure_root",
        "clip_model",
        "mlp_checkpoint",
        "video_root",
    )
    ui_color = "#f3d9ff"
    operator_extra_links = (ScoredOutputLink(),)

    def __init__(
        self,
        *,
        input_path: str,
        output_path: str,
        rejects_path: str | None = None,
        figure_root: str = DEFAULTS.figure_root,
        input_video_key: str = DEFAULTS.input_video_key,
        video_clips_key: str | None = DEFAULTS.video_clips_key,
        clip_model: str = DEFAULTS.clip_model,
        mlp_checkpoint: str | None = DEFAULTS.mlp_checkpoint,
        load_num: int = DEFAULTS.load_num,
        batch_size: int = DEFAULTS.batch_size,
        num_workers: int = DEFAULTS.num_workers,
        init_distributed: bool = DEFAULTS.init_distributed,
        output_key: str | None = None,  # None follows video_clips_key (parameters: face_defaults)
        device: str = DEFAULTS.device,
        decode: str = DEFAULTS.decode,
        precision: str = DEFAULTS.precision,
        reduction: str = DEFAULTS.reduction,
        frame_scores: bool = DEFAULTS.frame_scores,
        skip_bad_records: bool = DEFAULTS.skip_bad_records,
        nproc: int | None = DEFAULTS.nproc,
        aes_min: float | None = DEFAULTS.aes_min,
        aes_max: float | None = DEFAULTS.aes_max,
        video_root: str | None = DEFAULTS.video_root,
        input_conn_id: str | None = None,
        output_conn_id: str | None = None,
        frames_conn_id: str | None = None,
        embeddings: str | None = None,
        embeddings_dtype: str = DEFAULTS.embeddings_dtype,
        # Named here, not left to **kwargs, so that a DAG's default_args still override them.
        retries: int | None = 2,
        retry_delay: timedelta | float = timedelta(minutes=1),
        retry_exponential_backoff: float = 2.0,
        max_retry_delay: timedelta | float | None = timedelta(minutes=30),
        execution_timeout: timedelta | None = timedelta(hours=12),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            retries=retries,
            retry_delay=retry_delay,
            retry_exponential_backoff=retry_exponential_backoff,
            max_retry_delay=max_retry_delay,
            execution_timeout=execution_timeout,
            **kwargs,
        )
        self.input_path = input_path
        self.output_path = output_path
        self.rejects_path = rejects_path
        self.figure_root = figure_root
        self.input_video_key = input_video_key
        self.video_clips_key = video_clips_key
        self.clip_model = clip_model
        self.mlp_checkpoint = mlp_checkpoint
        self.load_num = load_num
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.init_distributed = init_distributed
        self.output_key = output_key
        self.device = device
        self.decode = decode
        self.precision = precision
        self.reduction = reduction
        self.frame_scores = frame_scores
        self.skip_bad_records = skip_bad_records
        self.nproc = nproc
        self.aes_min = aes_min
        self.aes_max = aes_max
        self.video_root = video_root
        self.input_conn_id = input_conn_id
        self.output_conn_id = output_conn_id
        self.frames_conn_id = frames_conn_id
        self.embeddings = embeddings
        self.embeddings_dtype = embeddings_dtype

    def scoring_config(self) -> ScoringConfig:
        """The (rendered) parameters as a ScoringConfig; raises ConfigError naming a bad one."""
        return ScoringConfig.from_params({name: getattr(self, name) for name in PARAM_NAMES})

    def execute(self, context: Context) -> ShardResult:
        # First: an attempt whose supervisor died must not score on beside its own retry.
        die_with_supervisor()
        try:
            config = self.scoring_config()
            if is_remote_url(config.figure_root):
                # Plain fsspec options: the decoding workers fetch frames without Airflow.
                frames_conn = object_store.connection_id(self.frames_conn_id, "frames_conn_id")
                options = object_store.storage_options(config.figure_root, frames_conn)
                config = config.replace(frames_storage_options=options)
                from video_aesthetics.frame_store import remote_frames

                remote_frames(config)  # a store fsspec cannot open fails here, not as one decode error per clip
            if not self.input_path or not self.output_path:
                raise ConfigError("input_path and output_path must both be set")
            if not isinstance(self.init_distributed, bool):
                raise ConfigError(f"init_distributed must be true or false, got {self.init_distributed!r}")
            # A store refusing frames fails this attempt for a retry (not AirflowFailException), naming the connection.
            with credentials.naming_connection(optional_text(self.frames_conn_id), "frames_conn_id"):
                stats, digest, size = self._score(config)
            embedded = self._embeddings_summary(stats)
        except VideoAestheticsError as err:
            # Retrying cannot fix a bad parameter, a malformed input or missing weights.
            raise AirflowFailException(str(err)) from err
        log.info(
            "scored %d of %d clips (%d failed) from %s into %s",
            stats.scored,
            stats.clips,
            stats.failed,
            self.input_path,
            self.output_path,
        )
        return ShardResult(
            input=str(self.input_path),
            output=str(self.output_path),
            records=stats.records,
            clips=stats.clips,
            scored=stats.scored,
            failed=stats.failed,
            passthrough=stats.passthrough,
            rejected=stats.rejected,
            errors=stats.errors,
            rejects=stats.rejects,
            sha256=digest,
            bytes=size,
            seconds=stats.seconds,
            clips_per_s=stats.clips_per_s,
            model=stats.model,
            version=__version__,
            embeddings=embedded,
        )

    def _embeddings_summary(self, stats: RunStats) -> dict[str, Any] | None:
        if stats.embeddings is None:
            return None
        return {**stats.embeddings, "path": str(self.embeddings)}

    def _score(self, config: ScoringConfig) -> tuple[RunStats, str, int]:
        from video_aesthetics.runner import score_file
        from video_aesthetics.scoring import torch_threads

        input_conn = object_store.connection_id(self.input_conn_id, "input_conn_id")
        output_conn = object_store.connection_id(self.output_conn_id, "output_conn_id")
        rejects_target = self.rejects_path or (
            rejects_location(str(self.output_path)) if config.skip_bad_records else None
        )
        threads = cpu_threads()
        log.info("scoring with %d CPU thread(s) for torch (setting threads)", threads)
        with (
            # Several tasks on one host each take their share of the CPUs, not all of them.
            torch_threads(threads),
            object_store.local_input(object_store.store_path_with(self.input_path, input_conn)) as source,
            object_store.local_output(object_store.store_path_with(self.output_path, output_conn)) as target,
            _optional_output(rejects_target, output_conn) as rejects,
            _optional_output(self.embeddings, output_conn) as embedded,
        ):
            stats = score_file(
                source,
                target,
                config,
                rejects_path=rejects,
                nproc=self.nproc,
                distributed=self.init_distributed,
                embeddings=_embeddings_output(embedded, self.embeddings_dtype),
            )
            if stats is None:
                raise ConfigError(
                    "this task runs as a non-zero rank of a torchrun launch, which writes nothing; "
                    "run the operator in a plain Airflow task and let init_distributed start the ranks"
                )
            digest, size = sha256_file(target), Path(target).stat().st_size
            if stats.embeddings is not None and embedded is not None:
                stats.embeddings["sha256"] = sha256_file(embedded)
                stats.embeddings["bytes"] = Path(embedded).stat().st_size
        stats.output = str(self.output_path)
        if stats.rejects is not None:
            stats.rejects = str(rejects_target)
        return stats, digest, size

    def on_kill(self) -> None:
        """Stop the decoding workers and ranks this task started; they also die on their own if the task dies."""
        from video_aesthetics.processes import stop_children

        stop_children()


if VideoAestheticScoringOperator.__doc__:  # None under python -OO
    VideoAestheticScoringOperator.__doc__ += "\n" + rst_docs("operator") + "\n"


def _embeddings_output(path: Path | None, dtype: str) -> Any:
    if path is None:
        return None
    from video_aesthetics.embeddings import EmbeddingsOutput

    return EmbeddingsOutput(path, dtype)


def _optional_output(location: str | None, conn_id: str | None) -> Any:
    if not location:
        return contextlib.nullcontext(None)
    return object_store.local_output(object_store.store_path_with(location, conn_id))


class MergeScoresOperator(BaseOperator):
    """Publish a sharded scoring run: its scored shards, in input order, as a new version of its partition.

    The last task of the video_aesthetic_scoring DAG (see ``merge.merge`` for the checks and
    the versioned, all-or-nothing publish). Its asset outlets get the published summary as their
    event's extra; its XCom is that summary: paths, counts and checksums.

    :param shard_results: the score_shard tasks' XComs (templated: pass the mapped task's ``.output``).
    :param frames: the check_frames task's counts, recorded in the manifest (templated).
    """

    template_fields: Sequence[str] = ("shard_results", "frames")
    ui_color = "#e8d9ff"
    operator_extra_links = (ScoredOutputLink(),)

    def __init__(self, *, shard_results: Any, frames: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard_results = shard_results
        self.frames = frames

    def execute(self, context: Context) -> MergeSummary:
        from video_aesthetics.airflow.merge import merge

        summary = merge(context["params"], context, list(self.shard_results or []), self.frames)
        # A JSON object like any event's extra (MergeSummary holds JSON values only).
        extra: dict[str, Any] = dict(summary)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra
        return summary
