"""Planning a sharded run: find its input files and cut them into shard files, checked line by line.

Nothing here imports Airflow or torch: the DAG's tasks call these functions on local paths (a
staging folder every worker can reach) and keep only paths and counts in XCom. Merging the scored
shards back is merging.py's; the run's manifest is manifest.py's.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import math
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import atomic_writer
from video_aesthetics.jsonl import BOM, BadLine, Check, dumps, parse_line, read_lines
from video_aesthetics.records import record_check

log = logging.getLogger(__name__)
INPUT_SUFFIXES = (".jsonl",)
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class FileShard:
    """One slice of the input: ``records`` records starting at record ``first_record`` of the whole input."""

    index: int
    input: str
    output: str
    records: int
    first_record: int

    @property
    def name(self) -> str:
        return shard_name(self.index)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileShard:
        return cls(**{k: data[k] for k in ("index", "input", "output", "records", "first_record")})


@dataclass
class ShardPlan:
    """The shards of one run and where they came from; ``rejected`` lines went to ``rejects``."""

    inputs: list[str]
    records: int
    chunk_size: int
    shards: list[FileShard] = field(default_factory=list)
    rejected: int = 0
    rejects: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shards"] = [shard.as_dict() for shard in self.shards]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardPlan:
        plan = cls(**{k: v for k, v in data.items() if k != "shards"})
        plan.shards = [FileShard.from_dict(s) for s in data.get("shards", [])]
        return plan


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def safe_name(text: str) -> str:
    """``text`` as one file-name component; a short hash keeps distinct texts apart when characters were replaced."""
    cleaned = _UNSAFE_NAME.sub("_", text).strip("._") or "run"
    if cleaned == text:
        return cleaned
    return f"{cleaned}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def resolve_inputs(spec: str | Path) -> list[Path]:
    """The JSONL files ``spec`` names: a file, a folder (its *.jsonl, not recursive) or a glob, sorted.

    Sorting by path makes the record order, and so the output, the same on every run.
    """
    text = str(spec).strip()
    if not text:
        raise ConfigError("input_path is empty: give a JSONL file, a folder of them or a glob")
    path = Path(text).expanduser()
    if _GLOB_CHARS.search(text) and not path.exists():
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in found if p.is_file()]
        if not files:
            raise InputError(f"no file matches the input glob {text!r}; check input_path (or the partition folder)")
        return files
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
        if not files:
            raise InputError(f"input folder {path} holds no *.jsonl file; check input_path (or the partition folder)")
        return files
    if path.is_file():
        return [path]
    raise InputError(f"input {text!r} is neither a file, a folder nor a glob that matches anything; check input_path")


def effective_chunk_size(records: int, chunk_size: int, max_shards: int) -> int:
    """``chunk_size`` grown just enough that ``records`` make at most ``max_shards`` shards."""
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if max_shards < 1:
        raise ConfigError(f"the maximum number of shards must be >= 1, got {max_shards!r}")
    return max(chunk_size, math.ceil(records / max_shards)) if records else chunk_size


def count_lines(inputs: Iterable[Path]) -> int:
    """Non-blank lines of ``inputs``: the records a plan will hold, bad lines included."""
    return sum(1 for path in inputs for _ in read_lines(path))


def plan_shards(
    inputs: list[Path],
    staging: Path,
    chunk_size: int,
    max_shards: int,
    skip_bad_records: bool = False,
    config: ScoringConfig | None = None,
) -> ShardPlan:
    """Copy the records of ``inputs`` into shard files of at most ``chunk_size`` records under ``staging``.

    Every line is checked as ``score_file`` checks it (a JSON object that can be written back
    exactly; with ``config``, one whose output_key field scoring would not clobber), so that a bad
    line is reported with its own file and line number rather than a shard's. With ``skip_bad_records`` such lines go to
    ``staging/rejects.jsonl`` instead of failing the plan. Shards of an earlier attempt are removed
    first, so a retried plan never leaves a stale shard behind.

    The input is read once: shards are cut as its lines come. Only an input of more than
    ``chunk_size * max_shards`` lines needs larger shards (``effective_chunk_size``); its staged
    copies are then re-cut into them, so the input, which may be remote or slow, is still read once.
    """
    effective_chunk_size(0, chunk_size, max_shards)  # refuses a bad chunk_size or max_shards before any work
    staging = Path(staging)
    shard_dir, scored_dir = staging / "shards", staging / "scored"
    shutil.rmtree(_recut_dir(shard_dir), ignore_errors=True)
    for folder in (shard_dir, scored_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    plan = ShardPlan(inputs=[str(p) for p in inputs], records=0, chunk_size=chunk_size)
    rejects_path = staging / "rejects.jsonl"
    writer = _ShardWriter(shard_dir, scored_dir, chunk_size, grow_after=max_shards)
    try:
        with atomic_writer(rejects_path) as rejects:
            for item in _input_lines(inputs, record_check(config) if config is not None else None):
                if isinstance(item, BadLine):
                    if not skip_bad_records:
                        raise InputError(
                            f"{item.source}:{item.line}: {item.reason}; fix or remove that line, or set "
                            "skip_bad_records to send such lines to a rejects file"
                        )
                    rejects.write(dumps(item.as_reject()) + "\n")
                    plan.rejected += 1
                    continue
                writer.add(item)
                plan.records += 1
    finally:
        plan.shards = writer.close()
    # Bad lines count as count_lines counts them, so the shard size is the one a count first would give.
    plan.chunk_size = effective_chunk_size(plan.records + plan.rejected, chunk_size, max_shards)
    if plan.chunk_size != chunk_size:
        plan.shards = _recut(plan.shards, shard_dir, scored_dir, plan.chunk_size)
    if len(plan.shards) > max_shards:
        raise RuntimeError(f"internal error: {len(plan.shards)} shards planned, at most {max_shards} allowed")
    if skip_bad_records:
        plan.rejects = str(rejects_path)
    else:
        rejects_path.unlink(missing_ok=True)
    log.info(
        "planned %d shard(s) of up to %d records: %d records from %d file(s), %d rejected",
        len(plan.shards),
        plan.chunk_size,
        plan.records,
        len(inputs),
        plan.rejected,
    )
    return plan


class _ShardWriter:
    """Writes lines into consecutive shard files, starting a new one every ``size`` lines.

    After ``grow_after`` files the plan is too large for ``size`` and will be re-cut: each further
    file then holds as many lines as all before it, so an input far past the limit stages a few
    more files (doubling), not thousands of small ones.
    """

    def __init__(self, shard_dir: Path, scored_dir: Path, size: int, grow_after: int | None = None) -> None:
        self.shard_dir, self.scored_dir, self.size, self.grow_after = shard_dir, scored_dir, size, grow_after
        self.shards: list[FileShard] = []
        self.handle: IO[bytes] | None = None
        self.count = 0
        self.total = 0

    def add(self, line: bytes) -> None:
        if self.handle is None or self.count == self._limit():
            self._finish()
            self.handle = (self.shard_dir / f"{shard_name(len(self.shards))}.jsonl").open("wb")
        self.handle.write(line)
        self.count += 1

    def _limit(self) -> int:
        if self.grow_after is not None and len(self.shards) >= self.grow_after:
            return max(self.size, self.total)
        return self.size

    def _finish(self) -> None:
        if self.handle is None:
            return
        self.handle.close()
        index = len(self.shards)
        name = f"{shard_name(index)}.jsonl"
        self.shards.append(
            FileShard(index, str(self.shard_dir / name), str(self.scored_dir / name), self.count, self.total)
        )
        self.total += self.count
        self.handle, self.count = None, 0

    def close(self) -> list[FileShard]:
        self._finish()
        return self.shards


def _recut_dir(shard_dir: Path) -> Path:
    return shard_dir.with_name(f"{shard_dir.name}.recut")


def _recut(staged: list[FileShard], shard_dir: Path, scored_dir: Path, size: int) -> list[FileShard]:
    """The lines of the ``staged`` shard files re-cut into shards of ``size``, in ``shard_dir`` again.

    Streams file by file and deletes each staged file once copied: the staging folder never holds
    more than the input's records plus the staged file being copied (at most half of them).
    """
    folder = _recut_dir(shard_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    writer = _ShardWriter(folder, scored_dir, size)
    for shard in staged:
        path = Path(shard.input)
        with path.open("rb") as handle:
            for line in handle:
                writer.add(line)
        path.unlink()
    recut = writer.close()
    shard_dir.rmdir()
    folder.rename(shard_dir)
    log.info("re-cut %d staged file(s) into %d shard(s) of up to %d records", len(staged), len(recut), size)
    return [replace(shard, input=str(shard_dir / Path(shard.input).name)) for shard in recut]


def _input_lines(inputs: Iterable[Path], check: Check | None = None) -> Iterator[bytes | BadLine]:
    """Each non-blank line of ``inputs`` ending in a newline, or a BadLine when it is not a record.

    Lines are read and judged as ``JsonlSource`` reads them (bytes, a BOM allowed on line 1, only
    lines that can be written back exactly), so a shard never holds a line its scoring would refuse.
    """
    for path in inputs:
        for number, raw in read_lines(path):
            parsed = parse_line(raw, path, number)
            if isinstance(parsed, dict) and check is not None:
                problem = check(parsed)
                if problem is not None:
                    parsed = BadLine(str(path), number, problem, raw)
            if isinstance(parsed, BadLine):
                yield parsed
                continue
            body = raw[len(BOM) :] if number == 1 and raw.startswith(BOM) else raw
            # parse_line accepted the line, so it is UTF-8: only a CR before the newline goes.
            yield body.rstrip(b"\r") + b"\n"
