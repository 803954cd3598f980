"""A whole scoring run, the one entry point of every face: validate and count the input, score, write.

The CLI and the Airflow operator (and so the DAG's shards) call ``score_file``; the seed-compatible
evaluator calls ``score_records`` with its DataFrame's records. Both decide here, and only here,
whether the run scores in this process or with several ranks (``video_aesthetics.ranks``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.files import atomic_writer
from video_aesthetics.records import (
    JsonlSource,
    RecordCounts,
    SampleResult,
    count_records,
    default_rejects_path,
    dumps,
    merge_results,
    write_jsonl,
)

log = logging.getLogger(__name__)

Writer = Callable[[Iterator[dict[str, Any]]], Any]
# Loads the model for a device (None: the one the config names); lets the evaluator keep one across runs.
ScorerLoader = Callable[[Any], Any]


@dataclass
class RunStats:
    """What a run did; every input record is in ``records`` (output) or ``rejected`` (rejects file)."""

    records: int = 0
    clips: int = 0
    scored: int = 0
    failed: int = 0
    passthrough: int = 0
    rejected: int = 0
    seconds: float = 0.0
    clips_per_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    output: str | None = None
    rejects: str | None = None
    model: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=False)


class Progress:
    """Logs clips done of total, throughput and ETA at most every ``interval`` seconds."""

    def __init__(self, total: int, interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.done = 0
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def update(self, _result: SampleResult | None = None) -> None:
        self.done += 1
        now = self.clock()
        if now - self.last >= self.interval or self.done == self.total:
            self.last = now
            log.info("%s", self.line(now))

    def rate(self, now: float | None = None) -> float:
        elapsed = (now if now is not None else self.clock()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float) -> str:
        rate = self.rate(now)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left != float("inf") else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return f"scored {self.done}/{self.total} clips ({pct:.1f}%), {rate:.1f} clips/s, ETA {eta}"


def score_records(
    source: Iterable[dict[str, Any]],
    config: ScoringConfig,
    write: Writer,
    *,
    nproc: int | None = None,
    distributed: bool = False,
    load_scorer: ScorerLoader | None = None,
) -> RunStats | None:
    """Score every sample of ``source`` and hand the scored records, in input order, to ``write`` once.

    ``source`` is re-iterable (it is read several times: counted, decoded, merged). With
    ``distributed`` or ``nproc`` > 1 (or under torchrun) ranks score it; see ``ranks.wanted``.
    Returns None on a torchrun rank that does not write.
    """
    totals = count_records(source, config)
    log.info(
        "input: %d records, %d %s to score", totals.records, totals.clips, "videos" if config.whole_video else "clips"
    )
    started = time.monotonic()
    with _scored(source, config, nproc, distributed, load_scorer) as scored:
        if scored is None:
            return None
        progress = Progress(totals.clips)
        counts = RecordCounts()
        write(merge_results(source, scored.results, config, counts, on_result=progress.update))
    seconds = time.monotonic() - started
    return RunStats(
        records=counts.records,
        clips=counts.clips,
        scored=counts.scored,
        failed=counts.failed,
        passthrough=counts.passthrough,
        seconds=round(seconds, 3),
        clips_per_s=round(counts.clips / seconds, 3) if seconds > 0 else 0.0,
        errors=dict(sorted(counts.errors.items())),
        model=scored.identity,
    )


@contextlib.contextmanager
def _scored(
    source: Iterable[dict[str, Any]],
    config: ScoringConfig,
    nproc: int | None,
    distributed: bool,
    load_scorer: ScorerLoader | None,
) -> Iterator[Any]:
    """The results of ``source`` in input order, scored here or by ranks; None on a rank that does not write."""
    from video_aesthetics import ranks
    from video_aesthetics.scoring import Scored, Scorer, iter_results

    if ranks.wanted(distributed, nproc):
        with ranks.scored(source, config, nproc=nproc, load_scorer=load_scorer) as gathered:
            yield gathered
        return
    scorer = load_scorer(None) if load_scorer else Scorer.load(config)
    yield Scored(iter_results(source, config, scorer), scorer.identity)


def score_file(
    input_path: Path | str,
    output_path: Path | str,
    config: ScoringConfig,
    *,
    rejects_path: Path | str | None = None,
    nproc: int | None = None,
    distributed: bool = False,
) -> RunStats | None:
    """Score a JSONL file into another, atomically; with skip_bad_records, bad lines go to a rejects file.

    Returns None on a torchrun rank that does not write.
    """
    source = JsonlSource(Path(input_path), skip_bad_records=config.skip_bad_records)
    stats = score_records(
        source, config, lambda records: write_jsonl(output_path, records), nproc=nproc, distributed=distributed
    )
    if stats is None:
        return None
    stats.output = str(output_path)
    if config.skip_bad_records:
        rejects = Path(rejects_path) if rejects_path else default_rejects_path(output_path)
        stats.rejected = write_rejects(source, rejects)
        stats.rejects = str(rejects)
    return stats


def write_rejects(source: JsonlSource, path: Path) -> int:
    """Every malformed line of ``source`` with where it was and why; written even when empty, so reruns stay exact."""
    count = 0
    with atomic_writer(path) as handle:
        for bad in source.bad_lines():
            handle.write(dumps(bad.as_reject()) + "\n")
            count += 1
    if count:
        log.warning("%d malformed line(s) written to %s", count, path)
    return count
