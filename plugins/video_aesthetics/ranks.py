"""A way of running a scoring run: several processes (one rank per GPU, or N gloo processes on CPU), results gathered.

``runner`` chooses this module; it only scores and hands the results back, and ``runner`` writes them.

Two ways in:

* launched: the process runs under torchrun (RANK, WORLD_SIZE and MASTER_ADDR in the environment) or
  a process group already exists. Every rank runs the same call; the group is joined, or created
  from the environment and destroyed at the end.
* spawned: an ordinary process (an Airflow task cannot be started by torchrun) starts ``nproc``
  ranks itself with the spawn start method, one per visible GPU by default, and waits for them.

Each rank scores a disjoint share of the samples (batch ``b`` goes to rank ``b % world``; nothing is
padded or duplicated as DistributedSampler would), and rank 0 gathers everyone's results. Only one
process then writes: rank 0 when launched, the parent when spawned, and only once every rank has
delivered. A rank that raises or is killed fails the whole run with an error naming it, and nothing
is written.

Spawned ranks re-import the caller's main module, as the spawn start method does: a script that
uses ``init_distributed=True`` needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import multiprocessing.connection
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from video_aesthetics.batches import RankShare
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, RankFailedError, StoreAccessError, VideoAestheticsError
from video_aesthetics.processes import children_allowed, tie_to_parent
from video_aesthetics.records import SampleResult, count_records
from video_aesthetics.scoring import Scored, Scorer, iter_results, resolve_device

log = logging.getLogger(__name__)

ScorerLoader = Callable[[torch.device], Scorer]
Compact = tuple[int, float | None, str | None, list[float] | None]

# Ranks that finish early wait at the gather for the slowest one; the launcher (torchrun, or the
# parent here) ends a run whose rank died long before this, so it only bounds a rank that hangs.
DEFAULT_TIMEOUT = timedelta(hours=6)
_PROGRESS_SECONDS = 30.0
_STOP_GRACE_SECONDS = 10.0
_FAILURE_GRACE_SECONDS = 2.0
_RESULTS_FILE = "results.pkl"
_GATHERING = "gathering results"


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device


def launched() -> bool:
    """Whether this process is one rank of a run started by torchrun, or already in a process group."""
    if dist.is_available() and dist.is_initialized():
        return True
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def wanted(init_distributed: bool, nproc: int | None) -> bool:
    """The seed's rule (init_distributed or WORLD_SIZE > 1), plus an explicit nproc above 1."""
    return bool(init_distributed) or (nproc is not None and nproc > 1) or int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_nproc(config: ScoringConfig, nproc: int | None) -> int:
    """How many ranks to spawn: ``nproc``, or one per visible GPU; CPU runs must say how many."""
    if nproc is not None and (not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1):
        raise ConfigError(f"nproc must be an integer >= 1, got {nproc!r}")
    device = resolve_device(config.device)
    if device.type == "cuda":
        available = torch.cuda.device_count()
        if nproc is None:
            return available
        if nproc > available:
            raise ConfigError(
                f"nproc={nproc} but {available} GPU(s) are visible and each rank needs its own; "
                f"use nproc <= {available}, or device 'cpu' for gloo processes on the CPU"
            )
        return nproc
    if nproc is None:
        raise ConfigError(
            "distributed scoring on CPU needs the number of processes: pass nproc=N (--nproc N) "
            "to start N gloo processes, or run on a machine with GPUs"
        )
    return nproc


def rank_device(config: ScoringConfig, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when the run is on GPUs (any index in ``config.device`` is replaced), else the CPU."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        return device
    if device.index is not None:
        log.warning("device %s: each rank uses cuda:LOCAL_RANK instead", config.device)
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
            "start at most one rank per GPU"
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def process_group(
    config: ScoringConfig,
    *,
    timeout: timedelta = DEFAULT_TIMEOUT,
    rank: int | None = None,
    world: int | None = None,
    local_rank: int | None = None,
    init_method: str | None = None,
) -> Iterator[RankInfo]:
    """Join the existing process group, or create one (torchrun's environment by default) and destroy it after.

    On CUDA the group pairs NCCL with gloo, so that the object gather of results travels through
    CPU memory; on CPU it is gloo alone.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    device = rank_device(config, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        cuda = device.type == "cuda"
        dist.init_process_group(
            backend="cpu:gloo,cuda:nccl" if cuda else "gloo",
            init_method=init_method,
            timeout=timeout,
            rank=int(os.environ["RANK"]) if rank is None else rank,
            world_size=int(os.environ["WORLD_SIZE"]) if world is None else world,
            device_id=device if cuda else None,
        )
    try:
        yield RankInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    finally:
        if created:
            dist.destroy_process_group()


@contextlib.contextmanager
def scored(
    source: Iterable[dict[str, Any]],
    config: ScoringConfig,
    *,
    nproc: int | None = None,
    load_scorer: ScorerLoader | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Iterator[Scored | None]:
    """All ranks' results of ``source``, in input order, where they are to be written; None elsewhere.

    Launched (torchrun): every rank scores its share, rank 0 receives all results, and the ranks
    leave the block together, so that code after it on any rank finds the output written. Else
    ``nproc`` ranks are spawned (``source`` must then be picklable: a list or a JsonlSource) and
    this process receives their results. ``load_scorer`` lets a caller reuse a model it holds,
    where scoring happens in this process.
    """
    if launched():
        if nproc is not None and nproc != int(os.environ.get("WORLD_SIZE", nproc)):
            log.warning("nproc=%s ignored: the launcher started %s ranks", nproc, os.environ.get("WORLD_SIZE"))
        with process_group(config, timeout=timeout) as info:
            scorer = load_scorer(info.device) if load_scorer else Scorer.load(config, info.device)
            merged = gather_results(score_share(source, config, scorer, info), info)
            yield Scored(merged, scorer.identity) if merged is not None else None
            dist.barrier()
        return
    count = resolve_nproc(config, nproc)
    if count == 1:
        device = rank_device(config, 0)
        scorer = load_scorer(device) if load_scorer else Scorer.load(config, device)
        yield Scored(iter_results(source, config, scorer), scorer.identity)
        return
    yield _score_spawned(source, config, count, timeout)


def score_share(
    source: Iterable[dict[str, Any]], config: ScoringConfig, scorer: Scorer, info: RankInfo
) -> list[Compact]:
    """This rank's results as compact tuples (seq, score, error, frame_scores), in seq order."""
    total = _share_size(count_records(source, config).clips, config.batch_size, info)
    started = last = time.monotonic()
    done: list[Compact] = []
    for result in iter_results(source, config, scorer, RankShare(info.rank, info.world)):
        done.append((result.seq, result.score, result.error, result.frame_scores if config.frame_scores else None))
        now = time.monotonic()
        if now - last >= _PROGRESS_SECONDS:
            last = now
            log.info(
                "rank %d/%d: %d/%d of its clips scored, %.1f clips/s",
                info.rank,
                info.world,
                len(done),
                total,
                len(done) / (now - started),
            )
    log.info("rank %d/%d: scored its %d clips", info.rank, info.world, len(done))
    return done


def _share_size(samples: int, batch_size: int, info: RankInfo) -> int:
    batches = -(-samples // batch_size)
    return sum(min(batch_size, samples - b * batch_size) for b in range(info.rank, batches, info.world))


def gather_results(mine: list[Compact], info: RankInfo) -> list[SampleResult] | None:
    """Every rank's results on rank 0, merged in input order; None on the other ranks."""
    shares: list[Any] | None = [None] * info.world if info.rank == 0 else None
    dist.gather_object(mine, shares, dst=0)
    if shares is None:
        return None
    return merge_rank_results(shares)


def merge_rank_results(shares: list[list[Compact]]) -> list[SampleResult]:
    """The ranks' results (each in seq order) as one list in seq order; a sample twice is an error."""
    merged: list[SampleResult] = []
    for seq, score, error, frame_scores in heapq.merge(*shares, key=itemgetter(0)):
        if merged and seq <= merged[-1].seq:
            raise RuntimeError(f"internal error: sample {seq} was scored by more than one rank")
        merged.append(SampleResult(seq, score, error, frame_scores))
    return merged


def _score_spawned(source: Iterable[dict[str, Any]], config: ScoringConfig, nproc: int, timeout: timedelta) -> Scored:
    context = torch_mp.get_context("spawn")
    level = logging.getLogger("video_aesthetics").getEffectiveLevel()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="video-aesthetics-ranks-") as scratch:
        processes: list[Any] = []
        log.info("starting %d ranks on %s", nproc, rank_device(config, 0).type)
        try:
            # Made and started where a daemonic process (a Celery worker's task) may start children.
            with children_allowed():
                for rank in range(nproc):
                    process = context.Process(
                        target=_spawned_rank,
                        name=f"video-aesthetics-rank{rank}",
                        args=(rank, nproc, source, config, scratch, timeout, level, os.getpid(), threads),
                    )
                    processes.append(process)
                    process.start()
            _wait_for_ranks(processes, Path(scratch))
        finally:
            _stop(processes)
        with (Path(scratch) / _RESULTS_FILE).open("rb") as handle:
            results, identity = pickle.load(handle)
    return Scored(results, identity)


def _spawned_rank(
    rank: int,
    world: int,
    source: Iterable[dict[str, Any]],
    config: ScoringConfig,
    scratch: str,
    timeout: timedelta,
    level: int,
    parent: int,
    threads: int,
) -> None:
    """A spawned rank's whole life; a failure, and what the rank was doing, is left in ``scratch`` for the parent."""
    phase = "starting"
    code = 0
    try:
        if not tie_to_parent(parent):
            _exit_with_parent(parent)
        if not logging.getLogger().handlers:
            logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
        if rank_device(config, rank).type == "cpu":
            # N ranks on one CPU: each takes its share of the threads the parent was given (the task's
            # ``threads`` setting, OMP_NUM_THREADS or torch's default), as torchrun's OMP_NUM_THREADS=1 intends.
            torch.set_num_threads(max(1, threads // world))
        init = f"file://{Path(scratch) / 'rendezvous'}"
        with process_group(config, timeout=timeout, rank=rank, world=world, local_rank=rank, init_method=init) as info:
            phase = "loading the model"
            scorer = Scorer.load(config, info.device)
            phase = "scoring"
            mine = score_share(source, config, scorer, info)
            phase = _GATHERING
            merged = gather_results(mine, info)
            if merged is not None:
                phase = "handing the results over"
                _dump(Path(scratch) / _RESULTS_FILE, (merged, scorer.identity))
    except BaseException as err:
        code = 1
        report = {"phase": phase, "error": f"{type(err).__name__}: {err}"}
        (Path(scratch) / f"rank{rank}.error").write_text(json.dumps(report), encoding="utf-8")
        if isinstance(err, VideoAestheticsError):
            log.error("rank %d: %s", rank, err)
        else:
            log.exception("rank %d failed while %s", rank, phase)
    # The outcome is delivered and the group is gone; tearing down torch's interpreter state takes
    # seconds per rank and keeps the run waiting for nothing.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _dump(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _exit_with_parent(parent: int) -> None:
    """End this rank when the process that spawned it is gone, instead of waiting out the group timeout."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _wait_for_ranks(processes: list[Any], scratch: Path) -> None:
    """Return when every rank has exited 0; raise RankFailedError, naming the ranks, when one did not."""
    running = {process.sentinel: rank for rank, process in enumerate(processes)}
    while running:
        for sentinel in multiprocessing.connection.wait(list(running)):
            rank = running.pop(sentinel)
            processes[rank].join()
            if processes[rank].exitcode != 0:
                # The others often fail a moment later because this one left the group: give them
                # that moment, then name the root cause first.
                deadline = time.monotonic() + _FAILURE_GRACE_SECONDS
                for other in processes:
                    other.join(max(0.0, deadline - time.monotonic()))
                message = _failure_message(processes, scratch)
                if _store_refused(scratch):
                    # A store that refused a rank's reads is retryable, as in a single process.
                    raise StoreAccessError(message)
                raise RankFailedError(message)
    if not (scratch / _RESULTS_FILE).is_file():
        raise RankFailedError("rank 0 exited without delivering the gathered results; nothing was written")


def _failure_message(processes: list[Any], scratch: Path) -> str:
    failures = []
    for rank, process in enumerate(processes):
        code = process.exitcode
        if code in (0, None):
            continue
        error_file = scratch / f"rank{rank}.error"
        if error_file.is_file():
            report = json.loads(error_file.read_text(encoding="utf-8"))
            # A rank that fails at the gather is most often echoing another rank that left the group.
            order = 2 if report["phase"] == _GATHERING else 1
            failures.append((order, f"rank {rank} failed while {report['phase']}: {report['error']}"))
        elif code < 0:
            failures.append((0, f"rank {rank} (pid {process.pid}) was killed by {_signal_name(-code)}"))
        else:
            failures.append((0, f"rank {rank} (pid {process.pid}) exited with code {code}"))
    causes = "; ".join(text for _, text in sorted(failures, key=itemgetter(0)))
    return f"{causes}; the run was stopped and no output was written"


def _store_refused(scratch: Path) -> bool:
    """Whether a rank failed because the frame store refused or failed its reads (StoreAccessError)."""
    for error_file in scratch.glob("rank*.error"):
        report = json.loads(error_file.read_text(encoding="utf-8"))
        if str(report.get("error", "")).startswith(f"{StoreAccessError.__name__}: "):
            return True
    return False


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stop(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for process in processes:
        if process.pid is None:
            continue
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
