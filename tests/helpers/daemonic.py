"""Run library code inside a daemonic process, where Celery's prefork pool (and so Airflow's task process) runs it.

billiard, Celery's pool, makes each pool process multiprocessing's current process with the daemon
flag set, and Airflow's task process is forked from one: multiprocessing then refuses to start
children there ("daemonic processes are not allowed to have children"). A daemonic process of the
standard library is in exactly that state.
"""

from __future__ import annotations

import multiprocessing
import pickle
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from video_aesthetics.config import ScoringConfig

START_METHOD = "spawn"  # not fork: the test process has torch's thread pools running


def run_daemonic(target: Callable[..., Any], *args: Any, timeout: float = 300.0) -> Any:
    """``target(*args)``'s return value, computed in a daemonic child; its traceback is raised here if it fails."""
    context = multiprocessing.get_context(START_METHOD)
    with tempfile.TemporaryDirectory(prefix="daemonic-") as scratch:
        result = Path(scratch) / "result.pkl"
        process = context.Process(
            target=_child, args=(target, args, str(result), multiprocessing.get_start_method()), daemon=True
        )
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise AssertionError(f"{target.__name__} did not finish within {timeout:.0f} s in a daemonic process")
        if not result.exists():
            raise AssertionError(f"the daemonic process running {target.__name__} exited {process.exitcode}")
        ok, value = pickle.loads(result.read_bytes())
    if not ok:
        raise AssertionError(f"{target.__name__} failed in a daemonic process:\n{value}")
    return value


def _child(target: Callable[..., Any], args: tuple[Any, ...], result: str, start_method: str) -> None:
    # A spawned child defaults to spawning its own children too; a Celery worker's processes are
    # forked and keep the interpreter's default, which DataLoader's workers then use.
    multiprocessing.set_start_method(start_method, force=True)
    try:
        if not multiprocessing.current_process().daemon:
            raise RuntimeError("the child is not daemonic: the test would prove nothing")
        outcome = (True, target(*args))
    except BaseException:  # noqa: BLE001 - whatever it was goes back to the test
        outcome = (False, traceback.format_exc())
    Path(result).write_bytes(pickle.dumps(outcome))


def score_results(records: list[dict[str, Any]], config: ScoringConfig) -> list[tuple[int, float | None, str | None]]:
    """(seq, score, error) of every sample, scored by ``iter_results`` with the config's decoding workers."""
    from video_aesthetics.scoring import Scorer, iter_results

    scorer = Scorer.load(config)
    return [(r.seq, r.score, r.error) for r in iter_results(records, config, scorer)]


def score_file_bytes(source: str, output: str, config: ScoringConfig, nproc: int | None) -> bytes:
    """The output of ``runner.score_file`` (spawning ``nproc`` ranks when above 1), as bytes."""
    from video_aesthetics.runner import score_file

    score_file(source, output, config, nproc=nproc)
    return Path(output).read_bytes()
