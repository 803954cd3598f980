"""``python -m video_aesthetics.airflow.demo`` (``make demo``): the whole pipeline on a generated sample, in a local Airflow.

1. make sure the model weights can be had (downloaded once into the cache, or local files named by
   VIDEO_AESTHETICS_CLIP_MODEL / VIDEO_AESTHETICS_MLP_CHECKPOINT), or stop with what to set;
2. generate a sample dataset (photographs as short videos, clean and degraded) and its clips JSONL;
3. set up an Airflow home in the output folder (SQLite, LocalExecutor, this checkout's dags/ and
   plugins/), ``airflow db migrate``, and ``airflow dags test video_aesthetic_scoring`` with a conf
   that points at the sample; the DAG extracts the frames itself (check_frames) and scores in shards;
4. print every clip's score, best first, and where the output is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from video_aesthetics.errors import VideoAestheticsError

DAG_ID = "video_aesthetic_scoring"
CLIP_MODEL_ENV = "VIDEO_AESTHETICS_CLIP_MODEL"
MLP_CHECKPOINT_ENV = "VIDEO_AESTHETICS_MLP_CHECKPOINT"
MARKER = ".video-aesthetics-demo"
# Deployment settings that would send score_shard to a pool or queue this Airflow does not have.
_DEPLOYMENT_ENV = ("VIDEO_AESTHETICS_POOL", "VIDEO_AESTHETICS_QUEUE")
_LOG_TAIL_LINES = 60


class DemoError(Exception):
    """Something the user can fix: printed as a message, the demo exits with status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m video_aesthetics.airflow.demo",
        description="Generate a sample of clean and degraded videos, score every clip with the "
        f"{DAG_ID} DAG in a local Airflow, and print the scores.",
        epilog=f"Weights: CLIP ViT-L/14 and LAION's aesthetic head are downloaded into the cache on first use "
        f"($VIDEO_AESTHETICS_CACHE, default ~/.cache/video-aesthetics). Without network, set {CLIP_MODEL_ENV} "
        f"and {MLP_CHECKPOINT_ENV} to local files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo_output"),
        help="folder for the sample, frames, scores and the Airflow home",
    )
    parser.add_argument(
        "--videos", type=int, default=4, help="photographs to film; each gives one clean and four degraded videos"
    )
    parser.add_argument("--clips-per-video", type=int, default=3, help="clips cut from each video")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pans and zooms and of the noise")
    parser.add_argument("--chunk-size", type=int, default=None, help="records per shard (default: about four shards)")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per forward batch")
    parser.add_argument("--num-workers", type=int, default=2, help="frame decoding processes per shard")
    parser.add_argument(
        "--date",
        default=None,
        help="logical date of the run, YYYY-MM-DD (default: today, UTC); it names the output partition",
    )
    parser.add_argument(
        "--dags-folder", type=Path, default=None, help="folder holding the DAG file (default: this checkout's dags/)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (DemoError, VideoAestheticsError) as err:
        print(f"\ndemo: error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from video_aesthetics.sample_data import generate_sample, validate_sample_args

    validate_sample_args(args.videos, args.clips_per_video, args.seconds)
    out = prepare_out(args.out)
    dags_folder = find_dags_folder(args.dags_folder)
    logical_date = _date(args.date)
    model = weights_from_env()

    # Weights first: without them nothing else is worth doing.
    say(
        "1/4 checking the model weights"
        + (
            f" ({model['clip_model']}, {model.get('mlp_checkpoint') or 'official head'})"
            if model
            else " (CLIP ViT-L/14 and LAION's head; downloaded once)"
        )
    )
    identity = check_weights(model.get("clip_model"), model.get("mlp_checkpoint"))
    say(f"    CLIP {identity['clip']}, head {identity['head']}")

    say(f"2/4 generating the sample dataset in {out / 'sample'}")
    sample = generate_sample(
        out / "sample", videos=args.videos, clips_per_video=args.clips_per_video, seconds=args.seconds, seed=args.seed
    )
    records = len(sample.videos)
    say(
        f"    {records} videos (from {args.videos} photograph(s): clean, blurred, noisy, dark and washed out), "
        f"{sample.clips} clips"
    )

    # Frames come from the DAG's own check_frames task; stale ones from another sample must not be reused.
    shutil.rmtree(out / "frames", ignore_errors=True)
    chunk_size = args.chunk_size or max(1, math.ceil(records / 4))
    conf = {
        **sample_conf(out, sample.jsonl, chunk_size, args.batch_size, args.num_workers, model),
        "partition": logical_date,
    }
    env = airflow_env(out / "airflow", dags_folder)
    log_file = out / "airflow" / "demo-run.log"
    log_file.unlink(missing_ok=True)
    say(f"3/4 running the {DAG_ID} DAG in a local Airflow ({math.ceil(records / chunk_size)} shards; log: {log_file})")
    airflow(["db", "migrate"], env, log_file, "migrating the Airflow database")
    airflow(
        ["dags", "test", DAG_ID, logical_date, "-c", json.dumps(conf)], env, log_file, "the DAG run", show_progress=True
    )

    manifest = out / "scored" / logical_date / "_manifest.json"
    if not manifest.is_file():
        raise DemoError(f"the DAG run ended but {manifest} is missing; see {log_file}")
    facts = json.loads(manifest.read_text(encoding="utf-8"))
    scored = Path(facts["output"]["path"])
    rows = score_rows(scored)
    say("4/4 scores, best first\n")
    print(format_table(rows))
    print()
    print(format_summary(rows))
    clips = facts.get("clips", {})
    print(
        f"\n{clips.get('scored', '?')} of {clips.get('out', '?')} clips scored in {len(facts.get('shards', []))} shards."
    )
    print(
        f"Report:   {facts['output']['report']}  (open it in a browser)\n"
        f"Output:   {scored}\nManifest: {manifest}\nFrames:   {out / 'frames'}\nAirflow:  {out / 'airflow'} "
        f"(AIRFLOW_HOME; run log {log_file})"
    )
    return 0


def sample_conf(
    out: Path, jsonl: Path, chunk_size: int, batch_size: int, num_workers: int, model: dict[str, str]
) -> dict[str, Any]:
    """The run conf that scores the sample in ``out``: frames extracted by the DAG into out/frames, results in out/scored.

    Shared with ``make ui`` (scripts/ui.py), whose first run scores the same sample through the scheduler.
    """
    return {
        "input_path": str(jsonl),
        "output_root": str(out / "scored"),
        "figure_root": str(out / "frames"),
        "video_root": str(jsonl.parent),
        "chunk_size": chunk_size,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "on_missing_frames": "extract",
        **model,
    }


def say(text: str) -> None:
    print(text, flush=True)


def prepare_out(out: Path) -> Path:
    """The output folder, made absolute; refuses a non-empty folder the demo did not make."""
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DemoError(f"--out {out} already holds files the demo did not write; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        "Written by python -m video_aesthetics.airflow.demo; the demo may replace anything here.\n"
    )
    return out


def find_dags_folder(given: Path | None) -> Path:
    folder = given or Path(__file__).resolve().parents[3] / "dags"
    if not (folder / f"{DAG_ID}.py").is_file():
        raise DemoError(
            f"{folder} holds no {DAG_ID}.py: run the demo from a checkout of the project, or pass --dags-folder"
        )
    return folder.resolve()


def _date(text: str | None) -> str:
    if text is None:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise DemoError(f"--date {text!r} is not a date; write it as YYYY-MM-DD") from None


def weights_from_env() -> dict[str, str]:
    """clip_model / mlp_checkpoint from the environment, for the run's conf; empty when unset."""
    found = {}
    for key, name in (("clip_model", CLIP_MODEL_ENV), ("mlp_checkpoint", MLP_CHECKPOINT_ENV)):
        value = os.environ.get(name, "").strip()
        if value:
            found[key] = value
    return found


def check_weights(clip_model: str | None, mlp_checkpoint: str | None) -> dict[str, str]:
    """Load the model and head once (fetching them into the cache when allowed); their short identity.

    A failure here is a clear message instead of a failed task deep in the DAG run.
    """
    from video_aesthetics.clip_loader import DEFAULT_CLIP_MODEL, load_clip
    from video_aesthetics.errors import WeightsError
    from video_aesthetics.head import OFFICIAL_HEAD_URL, load_head
    from video_aesthetics.weights_cache import LOCAL_WEIGHTS_HELP

    spec = clip_model or DEFAULT_CLIP_MODEL
    try:
        clip = load_clip(spec)
        head = load_head(mlp_checkpoint, embed_dim=clip.embed_dim)
    except WeightsError as err:
        raise DemoError(
            # The library's own pointer to local files is said below, in the demo's terms.
            f"the model weights cannot be had: {str(err).replace(LOCAL_WEIGHTS_HELP, '').strip()}\n\n"
            f"To run the demo without network, download them once elsewhere and point the demo at them:\n"
            f"  export {CLIP_MODEL_ENV}=/path/to/ViT-L-14.pt   # OpenAI's CLIP ViT-L/14 checkpoint\n"
            f"  export {MLP_CHECKPOINT_ENV}=/path/to/sac+logos+ava1-l14-linearMSE.pth   # LAION's aesthetic head\n"
            f"(the head is {OFFICIAL_HEAD_URL}); `make ui` reads the same two settings;\n"
            f"or put them into the cache folder ($VIDEO_AESTHETICS_CACHE), or allow downloads "
            f"(unset VIDEO_AESTHETICS_OFFLINE / HF_HUB_OFFLINE)."
        ) from None
    identity = {
        "clip": f"{clip.identity.get('architecture')} from {clip.identity.get('source')}",
        "head": "official LAION" if head.identity.get("official") else str(head.identity.get("path")),
    }
    del clip, head
    gc.collect()
    return identity


def airflow_env(home: Path, dags_folder: Path) -> dict[str, str]:
    """The environment of an Airflow that lives in ``home``: SQLite, LocalExecutor, this checkout's DAGs."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k not in _DEPLOYMENT_ENV}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(dags_folder.parent / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # A scheduled (daily) DAG: the demo triggers its one run by hand.
            "VIDEO_AESTHETICS_SCHEDULE": "none",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# Lines of a `dags test` log worth showing while the run goes: task starts and ends, scoring progress.
_PROGRESS = re.compile(r"\[DAG TEST\] (starting|end task) task_id=(\S+) map_index=(-?\d+)|(scored \d+/\d+ \w+[^\[]*)")


def airflow(
    arguments: list[str], env: dict[str, str], log_file: Path, what: str, *, show_progress: bool = False
) -> None:
    """Run ``airflow ARGUMENTS`` with its output appended to ``log_file``; DemoError with the log's tail on failure.

    With ``show_progress``, task starts and ends and the scorer's progress lines are echoed as they
    come, so a run of several minutes is not several minutes of silence.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"\n$ airflow {' '.join(arguments)}\n")
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", *arguments],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if show_progress:
                _echo_progress(line)
        returncode = process.wait()
    if returncode != 0:
        tail = "\n".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-_LOG_TAIL_LINES:])
        raise DemoError(f"{what} failed (exit status {returncode}); the end of {log_file}:\n{tail}")


def _echo_progress(line: str) -> None:
    match = _PROGRESS.search(line)
    if match is None:
        return
    event, task_id, map_index, progress = match.groups()
    if progress:
        say(f"      {progress.strip()}")
        return
    shard = f"[{map_index}]" if map_index != "-1" else ""
    say(f"    {'started ' if event == 'starting' else 'finished'} {task_id}{shard}")


def score_rows(scored: Path) -> list[dict[str, Any]]:
    """One row per clip of the scored output: clip id, photograph, variant, score (None when unscored), error."""
    rows = []
    with scored.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            container = record.get("video_clips") or {}
            clips = container.get("clips", []) if isinstance(container, dict) else container
            for clip in clips:
                rows.append(
                    {
                        "clip": clip.get("id"),
                        "photo": record.get("source_image", ""),
                        "variant": record.get("variant", ""),
                        "score": clip.get("aesthetic_score"),
                        "error": clip.get("aesthetic_error"),
                    }
                )
    rows.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0), str(r["clip"])))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("#", "clip", "photograph", "version", "score")
    body = [
        (
            str(i),
            str(r["clip"]),
            str(r["photo"]),
            str(r["variant"]),
            f"{r['score']:.3f}" if r["score"] is not None else f"- ({r['error']})",
        )
        for i, r in enumerate(rows, start=1)
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=False)]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        )
        for row in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_summary(rows: list[dict[str, Any]]) -> str:
    """Mean score per version, best first: the clean videos should lead, the degraded ones trail."""
    by_variant: dict[str, list[float]] = {}
    for row in rows:
        if row["score"] is not None:
            by_variant.setdefault(str(row["variant"]), []).append(float(row["score"]))
    means = sorted(((sum(v) / len(v), k, len(v)) for k, v in by_variant.items()), reverse=True)
    return "mean score by version: " + ", ".join(f"{name} {mean:.3f} ({count} clips)" for mean, name, count in means)


if __name__ == "__main__":
    sys.exit(main())
