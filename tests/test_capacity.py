"""What a run may use (capacity.py): ranks checked against the machine's CPUs, workers against those this process may run on."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from video_aesthetics.capacity import (
    capped_workers,
    check_nproc,
    cpus_available,
    cpus_present,
    refuse_ranked_embeddings,
)
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """This process narrowed to one CPU, as taskset or a container's cpuset narrows it; restored after."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield 1
    finally:
        os.sched_setaffinity(0, before)


def test_the_cpus_available_are_the_affinity_mask_not_the_machine(one_cpu: int) -> None:
    assert cpus_available() == one_cpu
    assert (os.cpu_count() or 1) >= one_cpu


def test_the_cpus_available_follow_the_mask_when_it_is_widened_again() -> None:
    assert cpus_available() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("nproc", [0, -1, 10**6, "2", 2.0, True])
def test_an_nproc_outside_one_to_the_cpus_is_refused_naming_it(nproc: object) -> None:
    with pytest.raises(ConfigError, match="nproc"):
        check_nproc(nproc, "cpu")


def test_more_cpu_ranks_than_the_machine_has_cpus_is_refused_with_what_to_use() -> None:
    cpus = cpus_present()
    if cpus >= 64:
        pytest.skip("nproc's declared bound (64) is below this machine's CPUs: test_parameters checks that bound")
    with pytest.raises(
        ConfigError, match=rf"nproc={cpus + 1} but this machine has {cpus} CPU\(s\).*use nproc <= {cpus}"
    ):
        check_nproc(cpus + 1, "cpu")
    check_nproc(cpus, "cpu")
    check_nproc(None, "cpu")


def test_a_narrow_affinity_mask_does_not_lower_the_rank_bound(one_cpu: int) -> None:
    """Ranks pinned to one CPU (taskset) share it: slower, same scores, so they are not refused."""
    assert cpus_available() == one_cpu == 1
    check_nproc(min(cpus_present(), 2), "cpu")


def test_workers_are_capped_at_the_cpus_with_one_warning(one_cpu: int, caplog: pytest.LogCaptureFixture) -> None:
    config = ScoringConfig(num_workers=5)
    with caplog.at_level(logging.WARNING, logger="video_aesthetics.capacity"):
        capped = capped_workers(config)
    assert (capped.num_workers, config.num_workers) == (one_cpu, 5)
    assert caplog.messages == ["num_workers 5 capped at 1, the CPUs this process may use"]
    caplog.clear()
    for workers in (0, 1):
        same = ScoringConfig(num_workers=workers)
        assert capped_workers(same) is same
    assert not caplog.messages


@pytest.mark.parametrize(("nproc", "distributed"), [(2, False), (None, True), (1, True)])
def test_embeddings_are_refused_for_a_run_in_several_ranks(nproc: int | None, distributed: bool) -> None:
    with pytest.raises(ConfigError, match="embeddings are written by a run in one process"):
        refuse_ranked_embeddings(nproc, distributed)


def test_embeddings_in_one_process_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    refuse_ranked_embeddings(None, False)
    refuse_ranked_embeddings(1, False)
    monkeypatch.setenv("WORLD_SIZE", "2")  # launched by torchrun: several ranks, whatever nproc says
    with pytest.raises(ConfigError, match="embeddings"):
        refuse_ranked_embeddings(None, False)
