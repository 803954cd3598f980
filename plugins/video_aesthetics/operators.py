"""VideoAestheticScoringOperator: the seed's VideoAestheticEvaluator as an Airflow task over JSONL files.

Importing this module imports neither torch nor the model code: Airflow imports operators while
parsing DAGs and loading plugins, in processes that fork task runners, and CUDA does not survive a
fork. The model is loaded inside execute(), in the task's own process.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from video_aesthetics import __version__, store
from video_aesthetics.cache import sha256_file
from video_aesthetics.config import ScoringConfig, optional_text
from video_aesthetics.errors import ConfigError, VideoAestheticsError
from video_aesthetics.links import ScoredOutputLink
from video_aesthetics.records import rejects_location

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

_DEFAULTS = ScoringConfig()
_KILL_GRACE_SECONDS = 5.0


class VideoAestheticScoringOperator(BaseOperator):
    """Score every clip of a JSONL file with CLIP and LAION's aesthetic head, into another JSONL file.

    The ten scoring parameters are the seed's (DataFlow-MM VideoAestheticEvaluator), with its
    defaults; ``input_path`` and ``output_path`` name the records in and out, locally or in any
    object store Airflow's ObjectStoragePath reaches (remote files are staged through a local
    temporary file; the frames under ``figure_root`` must be on a local or shared file system).
    Every parameter is templated, so a DAG can pass ``{{ params.x }}`` and a triggered run's
    params override them.

    Returns (as its XCom) only small metadata: the paths, counts, the output's SHA-256 and the
    identity of the model. A bad configuration, a malformed input or missing weights fail the task
    at once; other errors (an out-of-memory kill, a lost GPU) are retried with exponential backoff.

    :param init_distributed: score with several processes (one per GPU, or ``nproc`` CPU
        processes) through ``video_aesthetics.distributed``.
    :param device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    :param reduction: how frame scores make a clip's score: "mean", "min" or "max".
    :param skip_bad_records: send malformed input lines to ``rejects_path`` instead of failing.
    :param rejects_path: where rejected lines go (default ``<output stem>.rejects.jsonl``).
    """

    template_fields: Sequence[str] = (
        "input_path",
        "output_path",
        "figure_root",
        "input_video_key",
        "video_clips_key",
        "clip_model",
        "mlp_checkpoint",
        "load_num",
        "batch_size",
        "num_workers",
        "init_distributed",
        "output_key",
        "device",
        "reduction",
        "frame_scores",
        "skip_bad_records",
        "rejects_path",
        "nproc",
    )
    ui_color = "#f3d9ff"
    operator_extra_links = (ScoredOutputLink(),)

    def __init__(
        self,
        *,
        input_path: str,
        output_path: str,
        figure_root: str = _DEFAULTS.figure_root,
        input_video_key: str = _DEFAULTS.input_video_key,
        video_clips_key: str | None = _DEFAULTS.video_clips_key,
        clip_model: str = _DEFAULTS.clip_model,
        mlp_checkpoint: str | None = _DEFAULTS.mlp_checkpoint,
        load_num: int | str = _DEFAULTS.load_num,
        batch_size: int | str = _DEFAULTS.batch_size,
        num_workers: int | str = _DEFAULTS.num_workers,
        init_distributed: bool | str = False,
        output_key: str | None = _DEFAULTS.output_key,
        device: str = _DEFAULTS.device,
        reduction: str = _DEFAULTS.reduction,
        frame_scores: bool | str = _DEFAULTS.frame_scores,
        skip_bad_records: bool | str = _DEFAULTS.skip_bad_records,
        rejects_path: str | None = None,
        nproc: int | str | None = None,
        # Named here, not left to **kwargs, so that a DAG's default_args still override them.
        retries: int | None = 2,
        retry_delay: timedelta | float = timedelta(minutes=1),
        retry_exponential_backoff: float = 2.0,
        max_retry_delay: timedelta | float | None = timedelta(minutes=30),
        execution_timeout: timedelta | None = timedelta(hours=12),
        **kwargs: Any,
    ) -> None:
        super().__init__(retries=retries, retry_delay=retry_delay, retry_exponential_backoff=retry_exponential_backoff,
                         max_retry_delay=max_retry_delay, execution_timeout=execution_timeout, **kwargs)
        self.input_path = input_path
        self.output_path = output_path
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
        self.reduction = reduction
        self.frame_scores = frame_scores
        self.skip_bad_records = skip_bad_records
        self.rejects_path = rejects_path
        self.nproc = nproc
        # Processes already running when execute() starts are not the task's to stop; it records them.
        self._baseline_children: set[int] | None = None

    def scoring_config(self) -> ScoringConfig:
        """The rendered parameters as a validated ScoringConfig; raises ConfigError naming a bad one."""
        clips_key = optional_text(self.video_clips_key)
        return ScoringConfig(
            figure_root=str(self.figure_root),
            input_video_key=str(self.input_video_key),
            video_clips_key=clips_key or "",
            clip_model=str(self.clip_model),
            mlp_checkpoint=optional_text(self.mlp_checkpoint),
            load_num=_as_int("load_num", self.load_num),
            batch_size=_as_int("batch_size", self.batch_size),
            num_workers=_as_int("num_workers", self.num_workers),
            output_key=optional_text(self.output_key) or clips_key or _DEFAULTS.output_key,
            device=str(self.device),
            reduction=str(self.reduction),
            frame_scores=_as_bool("frame_scores", self.frame_scores),
            skip_bad_records=_as_bool("skip_bad_records", self.skip_bad_records),
        ).validate()

    def execute(self, context: Context) -> dict[str, Any]:
        self._baseline_children = _child_pids()
        try:
            config = self.scoring_config()
            nproc = None if optional_text(self.nproc) is None else _as_int("nproc", self.nproc)
            # The seed's switch, plus an explicit process count above one.
            distributed = _as_bool("init_distributed", self.init_distributed) or (nproc or 1) > 1
            if not self.input_path or not self.output_path:
                raise ConfigError("input_path and output_path must both be set")
            stats, digest, size = self._score(config, distributed, nproc)
        except VideoAestheticsError as err:
            # Retrying cannot fix a bad parameter, a malformed input or missing weights.
            raise AirflowFailException(str(err)) from err
        summary = {
            "input": str(self.input_path),
            "output": str(self.output_path),
            "records": stats.records,
            "clips": stats.clips,
            "scored": stats.scored,
            "failed": stats.failed,
            "passthrough": stats.passthrough,
            "rejected": stats.rejected,
            "errors": stats.errors,
            "rejects": stats.rejects,
            "sha256": digest,
            "bytes": size,
            "seconds": stats.seconds,
            "clips_per_s": stats.clips_per_s,
            "model": stats.model,
            "version": __version__,
        }
        log.info("scored %d of %d clips (%d failed) from %s into %s", stats.scored, stats.clips, stats.failed,
                 self.input_path, self.output_path)
        return summary

    def _score(self, config: ScoringConfig, distributed: bool, nproc: int | None) -> tuple[Any, str, int]:
        rejects_target = self.rejects_path or (rejects_location(str(self.output_path))
                                               if config.skip_bad_records else None)
        with (store.local_input(self.input_path) as source,
              store.local_output(self.output_path) as target,
              _optional_output(rejects_target) as rejects):
            if distributed:
                from video_aesthetics import distributed as runner

                stats = runner.score_jsonl(source, target, config, nproc=nproc, rejects_path=rejects)
                if stats is None:
                    raise ConfigError("this task runs as a non-zero rank of a torchrun launch, which writes nothing; "
                                      "run the operator in a plain Airflow task and let init_distributed start the ranks")
            else:
                from video_aesthetics.pipeline import score_jsonl

                stats = score_jsonl(source, target, config, rejects_path=rejects)
            digest, size = sha256_file(target), Path(target).stat().st_size
        stats.output = str(self.output_path)
        if stats.rejects is not None:
            stats.rejects = str(rejects_target)
        return stats, digest, size

    def on_kill(self) -> None:
        """Stop the decoding workers and scoring processes started since execute() began (or the operator
        was built): SIGTERM, then SIGKILL for those still alive after a grace period."""
        baseline = self._baseline_children
        if baseline is None:  # execute() never started: no process here is the task's
            return
        try:
            children = [p for p in psutil.Process().children(recursive=True) if p.pid not in baseline]
        except psutil.Error:
            return
        if not children:
            return
        log.warning("stopping %d child process(es): %s", len(children), [p.pid for p in children])
        _signal_all(children, "terminate")
        alive = _wait_until_dead(children, _KILL_GRACE_SECONDS)
        if alive:
            log.warning("killing %d child process(es) that ignored SIGTERM: %s", len(alive), [p.pid for p in alive])
            _signal_all(alive, "kill")
            _wait_until_dead(alive, _KILL_GRACE_SECONDS)


def _signal_all(processes: list[psutil.Process], action: str) -> None:
    for process in processes:
        try:
            getattr(process, action)()
        except psutil.NoSuchProcess:
            pass


def _wait_until_dead(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait for ``processes`` to exit, without reaping them: their parents (DataLoader, the rank launcher)
    must see the exit status to notice the loss, and psutil.wait_procs would take it from them."""
    deadline = time.monotonic() + timeout
    alive = processes
    while True:
        alive = [p for p in alive if _is_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _is_alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _child_pids() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _optional_output(location: str | None) -> Any:
    return store.local_output(location) if location else contextlib.nullcontext(None)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")

