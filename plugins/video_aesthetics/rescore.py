"""Rescoring: another head, reduction or threshold applied to stored CLIP embeddings, without a frame or CLIP.

``rescore_file`` reads a scored (or input) JSONL file and the embeddings a scoring run wrote beside
it (video_aesthetics.embeddings), and writes what a full scoring run with the new head would: the
same records through the same writer (writeback.with_outcomes, which writeback.with_results writes
through; runner.write_lines), published atomically with the rejects. Only the head is loaded; open_clip is never imported.

The head is LAION's MLP without activations, an affine map: it is folded once into one weight
vector and a bias in float64 and applied by head.head_scores, and the frames reduced by
head.reduce_scores, the very functions a scoring run uses: embeddings stored in float32 rescore with
the same head to the same bytes. Records and embeddings are read side by side, a chunk at a time,
so memory does not grow with the number of clips. Before a record is written its clips are matched
with the embeddings' keys (line, clip index, video, clip id; rescore_matching.py); any mismatch stops
the run, and nothing is published.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.embeddings_dataset import EmbeddingsDataset, check_clip
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import PendingFile, exclusive, publish_together, write_target
from video_aesthetics.jsonl import JsonlSource, default_rejects_path
from video_aesthetics.records import RecordCounts, record_check
from video_aesthetics.report import ReportOutput
from video_aesthetics.rescore_matching import load_affine_head, rescore_records

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused: records are trees that reference counting frees, but each chunk's
    records live long enough to reach the older generations, whose collections walk every object of the
    process (torch's alone are hundreds of thousands): about a tenth of a rescore's time. Resumed after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rescore_file(
    input_path: Path | str,
    embeddings_path: Path | str,
    output_path: Path | str,
    config: ScoringConfig,
    *,
    clip_model: str | None = None,
    rejects_path: Path | str | None = None,
    report: ReportOutput | None = None,
) -> Any:
    """Rescore ``input_path`` from ``embeddings_path`` into ``output_path``; the run's RunStats.

    ``config`` gives the head (mlp_checkpoint), the reduction, the thresholds and the field names;
    its clip_model is not used. ``clip_model``, when given, must be the CLIP the embeddings came from.
    """
    from video_aesthetics.runner import RunStats, check_run_paths, model_files, write_bad_lines, write_lines

    started = time.monotonic()
    dataset = EmbeddingsDataset(embeddings_path)
    check_clip(dataset.meta, clip_model, embeddings_path)
    recorded_key = dataset.meta.get("output_key")
    if recorded_key is not None and recorded_key != config.output_key:
        # Another field would leave the scoring run's scores beside the new ones: two scores per clip.
        raise ConfigError(
            f"the embeddings {embeddings_path} were written by a run that wrote its scores into {recorded_key!r}: "
            f"rescore with --output-key {recorded_key} (this run would write {config.output_key!r})"
        )
    if dataset.meta["whole_video"] != config.whole_video:
        mode = "whole videos" if dataset.meta["whole_video"] else "clips"
        raise ConfigError(
            f"the embeddings {embeddings_path} hold {mode}: set --video-clips-key as the scoring run did "
            f"({dataset.meta.get('video_clips_key')!r})"
        )
    output = Path(output_path)
    rejects = (
        (Path(rejects_path) if rejects_path else default_rejects_path(output)) if config.skip_bad_records else None
    )
    reads = [*model_files(config), *(("--embeddings", part.path) for part in dataset.parts)]
    writes = [("--report", report.path if report is not None else None)]
    if check_run_paths(input_path, output, rejects, writes, reads):
        raise InputError(f"rescore reads --input {input_path} as a file: save the stream to a file first")
    head = load_affine_head(config.mlp_checkpoint, dataset.dim)
    label = str(input_path)
    counts = RecordCounts()
    rejected = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive([output, *([rejects] if rejects is not None else [])]))
        try:
            out_file = stack.enter_context(PendingFile(output))
            rej_file = stack.enter_context(PendingFile(rejects)) if rejects is not None else None
        except OSError as err:
            raise ConfigError(f"cannot write beside {write_target(output)}: {err.strerror}") from None
        source = JsonlSource(Path(input_path), skip_bad_records=config.skip_bad_records, check=record_check(config))
        with _no_cycle_collection():
            write_lines(out_file.handle, rescore_records(enumerate(source), dataset, head, config, counts, label))
        if rej_file is not None:
            rejected = write_bad_lines(rej_file.handle, source)
        seconds = time.monotonic() - started
        stats = RunStats.of(
            counts,
            seconds,
            rejected=rejected,
            output=str(output),
            rejects=str(rejects) if rejects is not None else None,
            model={
                "clip": dataset.meta.get("clip") or {},
                "head": head.identity,
                "precision": dataset.meta.get("precision"),
            },
        )
        finished = [f for f in (rej_file,) if f is not None]
        if report is not None:
            page = report.pending(out_file, output, config, model=stats.model, rejected=rejected)
            finished.append(stack.enter_context(page))
        publish_together([*finished, out_file])
    log.info("rescored %d clips of %d records from %s in %.1fs", counts.clips, counts.records, embeddings_path, seconds)
    return stats


def rescore_command(args: Any) -> dict[str, Any]:
    """``video-aesthetics rescore``: rescore, write the report if asked; the counts to print."""
    params = {
        "mlp_checkpoint": args.mlp_checkpoint,
        "reduction": args.reduction,
        "input_video_key": args.input_video_key,
        "video_clips_key": args.video_clips_key,
        "output_key": args.output_key,
        "frame_scores": args.frame_scores,
        "skip_bad_records": args.skip_bad_records,
        "aes_min": args.aes_min,
        "aes_max": args.aes_max,
        "figure_root": args.figure_root,
    }
    config = ScoringConfig.from_params(params)
    run = {"input": args.input, "output": args.output, "embeddings": args.embeddings}
    stats = rescore_file(
        args.input,
        args.embeddings,
        args.output,
        config,
        clip_model=args.clip_model,
        rejects_path=args.rejects,
        report=ReportOutput(Path(args.report), run) if args.report else None,
    )
    result = stats.as_dict()
    if args.report:
        result["report"] = args.report
    return result
