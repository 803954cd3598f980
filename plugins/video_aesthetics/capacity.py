"""What a run may use, checked before any work: ranks against the GPUs or CPUs, workers against the CPUs.

torch is imported only when a run asks for CUDA (or "auto"), so checking a CPU run stays light.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from video_aesthetics import parameters
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError

log = logging.getLogger(__name__)


def refuse_ranked_embeddings(nproc: int | None, distributed: bool) -> None:
    """Embeddings are written by the process that scores: several ranks would each hold a share of them."""
    from video_aesthetics import ranks

    if ranks.wanted(distributed, nproc):
        raise ConfigError(
            "embeddings are written by a run in one process: drop --nproc/init_distributed (or run without "
            "torchrun), or score the shards separately, each with its own embeddings file"
        )


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpus_present() -> int:
    """The CPUs of the machine, whatever this process's affinity mask."""
    return os.cpu_count() or 1


def check_nproc(nproc: Any, device: str) -> None:
    """Refuse (ConfigError) an ``nproc`` below 1 or above what ``device`` offers: its GPUs, or the machine's CPUs.

    None (one process, or one rank per GPU) passes. Each rank is a process with its own copy of the
    model: more ranks than GPUs cannot run, and more than the machine has CPUs only compete for them.
    The bound is the CPUs present, not the affinity mask: ranks pinned to fewer CPUs (taskset, a
    container's cpuset) share them, slower but with the same scores.
    """
    if nproc is None:
        return
    parameters.check("nproc", nproc)  # type and the declared bounds, by name
    gpus = _gpus_for(device)
    if gpus:
        if nproc > gpus:
            raise ConfigError(
                f"nproc={nproc} but {gpus} GPU(s) are visible and each rank needs its own; use nproc <= {gpus}"
            )
        return
    cpus = cpus_present()
    if nproc > cpus:
        raise ConfigError(
            f"nproc={nproc} but this machine has {cpus} CPU(s) and each CPU rank needs one; use nproc <= {cpus}"
        )


def _gpus_for(device: str) -> int:
    """The CUDA devices a run on ``device`` may use; 0 when it runs on the CPU (torch is imported only for cuda/auto)."""
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def capped_workers(config: ScoringConfig) -> ScoringConfig:
    """``config`` with num_workers at most the CPUs available: more processes only compete for them."""
    cpus = cpus_available()
    if config.num_workers <= cpus:
        return config
    log.warning("num_workers %d capped at %d, the CPUs this process may use", config.num_workers, cpus)
    return config.replace(num_workers=cpus)
