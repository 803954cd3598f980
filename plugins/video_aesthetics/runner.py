"""A whole scoring run, the one entry point of every face: validate and count the input, score, write.

The CLI and the Airflow operator (and so the DAG's shards) call ``score_file``; the seed-compatible
evaluator calls ``score_records`` with its DataFrame's records. Both decide here, and only here,
whether the run scores in this process or with several ranks (``video_aesthetics.ranks``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from video_aesthetics.capacity import capped_workers, check_nproc, refuse_ranked_embeddings
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import (
    PendingFile,
    exclusive,
    is_remote_url,
    publish_together,
    spooled,
    write_target,
)
from video_aesthetics.jsonl import JsonlSource, default_rejects_path, dumps, input_kind
from video_aesthetics.outputs import Role, check_outputs
from video_aesthetics.progress import Progress
from video_aesthetics.records import NO_FRAMES, RecordCounts, count_records, record_check
from video_aesthetics.writeback import merge_results

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from video_aesthetics.embeddings import EmbeddingsOutput, EmbeddingWriter
    from video_aesthetics.report import ReportOutput

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
    # Where the run's CLIP embeddings went (video_aesthetics.embeddings), when asked for.
    embeddings: dict[str, Any] | None = None

    @classmethod
    def of(cls, counts: RecordCounts, seconds: float, **fields: Any) -> RunStats:
        """The stats of a run that counted ``counts`` in ``seconds``; ``fields`` are the rest (model, output...)."""
        return cls(
            records=counts.records,
            clips=counts.clips,
            scored=counts.scored,
            failed=counts.failed,
            passthrough=counts.passthrough,
            seconds=round(seconds, 3),
            clips_per_s=round(counts.clips / seconds, 3) if seconds > 0 else 0.0,
            errors=dict(sorted(counts.errors.items())),
            **fields,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=False)


def score_records(
    source: Iterable[dict[str, Any]],
    config: ScoringConfig,
    write: Writer,
    *,
    nproc: int | None = None,
    distributed: bool = False,
    load_scorer: ScorerLoader | None = None,
    embeddings: EmbeddingWriter | None = None,
) -> RunStats | None:
    """Score every sample of ``source`` and hand the scored records, in input order, to ``write`` once.

    With ``embeddings`` every scored frame's embedding goes to that writer as the records are
    merged; ``write`` finishes it (it knows when the records are all out).

    ``source`` is re-iterable (it is read several times: counted, decoded, merged). With
    ``distributed`` or ``nproc`` > 1 (or under torchrun) ranks score it; see ``ranks.wanted``.
    Returns None on a torchrun rank that does not write.
    """
    check_nproc(nproc, config.device)
    if embeddings is not None:
        refuse_ranked_embeddings(nproc, distributed)
    from video_aesthetics.scoring import check_device_options

    check_device_options(config)
    config = capped_workers(config)
    totals = count_records(source, config)
    log.info(
        "input: %d records, %d %s to score", totals.records, totals.clips, "videos" if config.whole_video else "clips"
    )
    started = time.monotonic()
    with _scored(source, config, nproc, distributed, load_scorer, embed=embeddings is not None) as scored:
        if scored is None:
            return None
        progress = Progress(totals.clips, unit="videos" if config.whole_video else "clips")
        counts = RecordCounts()
        on_sample = None
        if embeddings is not None:
            embeddings.model = scored.identity
            on_sample = embeddings.add
        with progress.heartbeat():
            write(merge_results(source, scored.results, config, counts, on_result=progress.update, on_sample=on_sample))
    seconds = time.monotonic() - started
    warn_if_no_clips(config, counts)
    warn_if_no_frames(config, counts)
    return RunStats.of(
        counts, seconds, model=scored.identity, embeddings=embeddings.summary() if embeddings is not None else None
    )


def warn_if_no_clips(config: ScoringConfig, counts: RecordCounts) -> None:
    """One warning when records came in but none held a clip to score: most often a misspelt field name."""
    if config.whole_video or not counts.records or counts.clips:
        return
    log.warning(
        "none of the %d records holds clips under %r (video_clips_key, CLI --video-clips-key) with a video "
        "under %r (input_video_key, --input-video-key): every record was passed through unscored; check "
        "the field names against your records",
        counts.records,
        config.video_clips_key,
        config.input_video_key,
    )


def warn_if_no_frames(config: ScoringConfig, counts: RecordCounts) -> None:
    """One warning, naming the resolved figure_root, when clips were to be scored but none had frames."""
    if config.whole_video or not counts.clips or counts.scored or not counts.errors.get(NO_FRAMES):
        return
    root = Path(os.path.realpath(config.frames_root))
    state = (
        "does not exist"
        if not root.exists()
        else "is not a folder"
        if not root.is_dir()
        else "holds no frames for these clips"
    )
    log.warning(
        "none of the %d clips had frames: figure_root %r resolves to %s, which %s; frames are read from "
        "<figure_root>/<video stem>/<clip id>/img/",
        counts.clips,
        config.figure_root,
        root,
        state,
    )


@contextlib.contextmanager
def _scored(
    source: Iterable[dict[str, Any]],
    config: ScoringConfig,
    nproc: int | None,
    distributed: bool,
    load_scorer: ScorerLoader | None,
    embed: bool = False,
) -> Iterator[Any]:
    """The results of ``source`` in input order, scored here or by ranks; None on a rank that does not write."""
    from video_aesthetics import ranks
    from video_aesthetics.scoring import Scored, Scorer, iter_results

    if ranks.wanted(distributed, nproc):
        with ranks.scored(source, config, nproc=nproc, load_scorer=load_scorer) as gathered:
            yield gathered
        return
    scorer = load_scorer(None) if load_scorer else Scorer.load(config)
    yield Scored(iter_results(source, config, scorer, embed=embed), scorer.identity)


def score_file(
    input_path: Path | str,
    output_path: Path | str,
    config: ScoringConfig,
    *,
    rejects_path: Path | str | None = None,
    nproc: int | None = None,
    distributed: bool = False,
    embeddings: EmbeddingsOutput | None = None,
    report: ReportOutput | None = None,
) -> RunStats | None:
    """Score a JSONL file into another; with skip_bad_records, bad lines go to a rejects file.

    With ``embeddings`` the scored frames' CLIP embeddings go to a Parquet file
    (video_aesthetics.embeddings), published with the output and the rejects, or not at all; so
    does the HTML ``report`` of the scored records.

    Every input line ends in the output or in the rejects file (or the run stops before writing
    anything). Before any scoring: the input must be readable (``"-"``, pipes and FIFOs are read
    once, into a temporary file beside the output), input, output and rejects must be three
    different files after following links, the outputs must be writable files, and no other run
    may be writing them (a lock beside each). Output and rejects are written to temporaries and
    renamed into place together at the end, rejects first; an output that is a symbolic link keeps
    the link and has its target replaced. The embeddings and the report are held to the same checks
    (outputs.check_outputs) before the model loads, and no output may be a weights file of the run.
    Returns None on a torchrun rank that does not write.
    """
    check_nproc(nproc, config.device)
    output = Path(output_path)
    rejects = (
        (Path(rejects_path) if rejects_path else default_rejects_path(output)) if config.skip_bad_records else None
    )
    also_writes = [
        ("--embeddings", embeddings.path if embeddings is not None else None),
        ("--report", report.path if report is not None else None),
    ]
    stream = check_run_paths(input_path, output, rejects, also_writes, model_files(config))
    writes = _writing_rank()
    if stream and not writes:
        raise InputError("under torchrun every rank reads the input itself: give --input a regular file, not a stream")
    label = STDIN_LABEL if str(input_path) == STDIN else str(input_path)
    with contextlib.ExitStack() as stack:
        out_file = rej_file = None
        emb_writer = None
        if writes:
            out_file, rej_file = _prepare_outputs(stack, output, rejects)
            if embeddings is not None:
                emb_writer = stack.enter_context(_embedding_writer(embeddings, config))
        path = Path(input_path)
        if stream:
            path = stack.enter_context(_spooled_input(input_path, label, write_target(output).parent, output.name))
        source = JsonlSource(path, skip_bad_records=config.skip_bad_records, name=label, check=record_check(config))
        rejected: list[int] = []
        finished: list[PendingFile] = []

        def write(records: Iterator[dict[str, Any]]) -> None:
            assert out_file is not None
            written = write_lines(out_file.handle, records)
            if rej_file is not None:
                rejected.append(write_bad_lines(rej_file.handle, source))
            emb_file = emb_writer.finish(written) if emb_writer is not None else None
            finished.extend(f for f in (rej_file, emb_file) if f is not None)

        stats = score_records(source, config, write, nproc=nproc, distributed=distributed, embeddings=emb_writer)
        if stats is None:
            return None
        stats.output = str(output)
        if rejects is not None:
            stats.rejected = rejected[0] if rejected else 0
            stats.rejects = str(rejects)
        assert out_file is not None
        if report is not None:
            page = report.pending(out_file, output, config, model=stats.model, rejected=stats.rejected)
            finished.append(stack.enter_context(page))
        publish_together([*finished, out_file])
    if stats.rejected:
        log.warning("%d malformed line(s) written to %s", stats.rejected, rejects)
    return stats


def model_files(config: ScoringConfig) -> list[Role]:
    """The run's weight files, as inputs that no output may overwrite (a name such as ViT-L/14 matches no file).

    A checkpoint folder stands for the files in it (its config and weights).
    """
    clip = config.clip_model
    paths = [clip, clip.split(":", 1)[1]] if ":" in clip and not is_remote_url(clip) else [clip]
    files: list[Path | str] = []
    for path in paths:
        folder = Path(path)
        files.extend(sorted(folder.iterdir()) if not is_remote_url(path) and folder.is_dir() else [path])
    return [("--clip-model", p) for p in files] + [("--mlp-checkpoint", config.mlp_checkpoint)]


STDIN = "-"
STDIN_LABEL = "<stdin>"


def _embedding_writer(output: EmbeddingsOutput, config: ScoringConfig) -> EmbeddingWriter:
    from video_aesthetics.embeddings import EmbeddingWriter

    try:
        return EmbeddingWriter(output, config, None)
    except OSError as err:
        raise ConfigError(
            f"cannot write the embeddings {output.path}: {err.strerror}; choose a folder you can write to"
        ) from None


def check_run_paths(
    input_path: Path | str,
    output: Path,
    rejects: Path | None,
    also_writes: Sequence[Role] = (),
    also_reads: Sequence[Role] = (),
) -> bool:
    """Refuse paths that cannot work, before anything is read or written; whether the input is a stream.

    ``also_reads`` are the run's other inputs (weights, embeddings), which no output may overwrite.

    Raises InputError for an input that is missing, a folder, a device or unreadable, and
    ConfigError (outputs.check_outputs) for outputs that are folders, not files, unwritable or links
    out of their folder, or for two roles naming one file.
    """
    stream = str(input_path) == STDIN
    if stream:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError(
                "--input - reads records from standard input, which is a terminal here: "
                "pipe them in (cat in.jsonl | video-aesthetics score --input - ...) or give a file"
            )
    else:
        stream = input_kind(input_path) == "stream"
    outputs = [("--output", output), ("--rejects", rejects), *also_writes]
    check_outputs(outputs, [("--input", None if stream else input_path), *also_reads])
    return stream


def _prepare_outputs(
    stack: contextlib.ExitStack, output: Path, rejects: Path | None
) -> tuple[PendingFile, PendingFile | None]:
    """Lock the outputs and open their temporaries, which proves them writable before any work is done."""
    try:
        stack.enter_context(exclusive([output, *([rejects] if rejects is not None else [])]))
        out_file = stack.enter_context(PendingFile(output))
        rej_file = stack.enter_context(PendingFile(rejects)) if rejects is not None else None
    except OSError as err:
        raise ConfigError(
            f"cannot write beside {err.filename or output}: {err.strerror}; choose an output folder you can write to"
        ) from None
    return out_file, rej_file


@contextlib.contextmanager
def _spooled_input(input_path: Path | str, label: str, folder: Path, name: str) -> Iterator[Path]:
    """A stream input (stdin, a pipe, a FIFO) copied once into a temporary file, which is then read as often as needed."""
    log.info("input %s is a stream: copying it once into a temporary file in %s", label, folder)
    try:
        handle = sys.stdin.buffer if str(input_path) == STDIN else open(input_path, "rb")  # noqa: SIM115
    except OSError as err:
        raise InputError(f"cannot read input {label}: {err.strerror}") from None
    try:
        with spooled(handle, folder, name) as path:
            yield path
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _writing_rank() -> bool:
    """False on a torchrun rank other than 0, which scores its share but writes nothing."""
    if not all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR")) and "torch" not in sys.modules:
        return True
    from video_aesthetics import ranks

    if not ranks.launched():
        return True
    import torch.distributed as dist

    return (dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))) == 0


def write_lines(handle: IO[str], records: Iterable[dict[str, Any]]) -> int:
    count = 0
    for record in records:
        handle.write(dumps(record) + "\n")
        count += 1
    return count


def write_bad_lines(handle: IO[str], source: JsonlSource) -> int:
    """Every malformed line of ``source``: where it was, why, and its exact text (or bytes, base64)."""
    count = 0
    for bad in source.bad_lines():
        handle.write(dumps(bad.as_reject()) + "\n")
        count += 1
    return count
