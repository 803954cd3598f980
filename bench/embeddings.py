"""Benchmarks of the embeddings export and of ``rescore`` (issue 19).

(a) The cost of writing embeddings, as a share of end-to-end scoring time, measured in one run:
    score_file with --embeddings, timing the writer's own calls (buffering, row groups, the footer)
    inside the run. The CLIP tower here is the tiny test model on the CPU, which makes scoring far
    cheaper than ViT-L/14 on a GPU: the real share is smaller than the one printed.
(b) rescore's speed (clips/s) and peak memory (RSS) on one CPU core, at two sizes, each in a fresh
    process: flat memory means the larger size peaks at about the same RSS as the smaller one.

    .venv/bin/python bench/embeddings.py                  # both, default sizes 100k and 400k clips
    .venv/bin/python bench/embeddings.py --sizes 20000 80000 --skip-write
    # before/after, side by side: another tree's plugins/ (a copy of an older checkout), runs alternating
    .venv/bin/python bench/embeddings.py --skip-write --sizes 100000 --baseline /tmp/old/plugins --repeat 3

clips_per_s is wall-clock; cpu_clips_per_s counts the process's CPU time, steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "plugins"), str(HERE.parent / "tests")]

import numpy as np

CLIPS_PER_RECORD = 8
FRAMES_PER_CLIP = 3
DIM = 768


def write_cost(clips: int, workdir: Path) -> dict[str, Any]:
    """(a): one scoring run with embeddings; the writer's time over the run's."""
    from helpers.clip_models import build_head, build_tiny_clip, save_head, save_open_clip_dir, tiny_clip_config
    from helpers.media import frame_dataset
    from video_aesthetics.config import ScoringConfig
    from video_aesthetics.embeddings import EmbeddingsOutput, EmbeddingWriter
    from video_aesthetics.runner import score_file

    clip_dir = save_open_clip_dir(build_tiny_clip(seed=0), tiny_clip_config(), workdir / "clip")
    head = save_head(build_head(768, seed=1), workdir / "head.pth")
    videos = max(1, clips // 4)
    source, frames = frame_dataset(workdir / "data", videos=videos, clips_per_video=4, frames_per_clip=FRAMES_PER_CLIP)
    # pyarrow's import and first conversion (once per process) are paid before the run and shown on their own:
    # the ratio is what the writing costs as the clips go by.
    started = time.perf_counter()
    import pyarrow as pa
    import pyarrow.parquet

    pa.array(np.zeros(1, np.float16))  # pyarrow's first conversion from numpy loads more of it (0.2 s)
    import_s = time.perf_counter() - started
    spent = {"seconds": 0.0}
    parts: dict[str, float] = {}
    for name in ("add", "_flush", "finish"):
        original = getattr(EmbeddingWriter, name)

        def timed(self: Any, *args: Any, _original: Any = original, _name: str = name) -> Any:
            started = time.perf_counter()
            try:
                return _original(self, *args)
            finally:
                took = time.perf_counter() - started
                parts[_name] = parts.get(_name, 0.0) + took
                if _name != "_flush":  # finish calls _flush: counted once
                    spent["seconds"] += took

        setattr(EmbeddingWriter, name, timed)
    config = ScoringConfig(
        figure_root=str(frames), clip_model=str(clip_dir), mlp_checkpoint=str(head), device="cpu", num_workers=1
    )
    started = time.perf_counter()
    stats = score_file(source, workdir / "out.jsonl", config, embeddings=EmbeddingsOutput(workdir / "e.parquet"))
    total = time.perf_counter() - started
    return {
        "clips": stats.clips if stats else 0,
        "end_to_end_s": round(total, 3),
        "embeddings_writer_s": round(spent["seconds"], 4),
        "ratio": round(spent["seconds"] / total, 5),
        "pyarrow_import_s": round(import_s, 3),
        "by_call_s": {name: round(value, 4) for name, value in parts.items()},
        "note": "tiny CLIP tower on CPU: scoring is far cheaper than ViT-L/14, so the real ratio is lower",
    }


def make_rescore_input(clips: int, folder: Path) -> tuple[Path, Path]:
    """A scored JSONL of ``clips`` clips (8 per record) and float16 embeddings for it (3 frames per clip)."""
    from video_aesthetics.config import ScoringConfig
    from video_aesthetics.embeddings import EmbeddingsOutput, EmbeddingWriter
    from video_aesthetics.records import Sample, SampleResult

    folder.mkdir(parents=True, exist_ok=True)
    config = ScoringConfig()
    rng = np.random.default_rng(0)
    scored = folder / "scored.jsonl"
    model = {"clip": {"spec": "bench", "files": {"bench": "0" * 64}}, "head": {}}
    records = -(-clips // CLIPS_PER_RECORD)
    with scored.open("w") as out, EmbeddingWriter(EmbeddingsOutput(folder / "e.parquet"), config, model) as writer:
        seq = 0
        for number in range(records):
            count = min(CLIPS_PER_RECORD, clips - number * CLIPS_PER_RECORD)
            stem = f"video{number}"
            record = {
                "video": [f"./videos/{stem}.mp4"],
                "caption": f"a caption for video {number}",
                "video_clips": {
                    "clips": [
                        {"id": f"{stem}_{c}", "frame_start": 30 * c, "frame_end": 30 * c + 30, "num_frames": 30}
                        for c in range(count)
                    ]
                },
            }
            vectors = rng.standard_normal((count * FRAMES_PER_CLIP, DIM), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            for c in range(count):
                for clip in record["video_clips"]["clips"][c : c + 1]:
                    clip["aesthetic_score"] = 5.0
                result = SampleResult(seq, 5.0, None)
                result.embeddings = vectors[c * FRAMES_PER_CLIP : (c + 1) * FRAMES_PER_CLIP]
                result.frames = [f"frame_{i:06d}.jpg" for i in range(FRAMES_PER_CLIP)]
                writer.add(record, Sample(seq, number, c, None), result)
                seq += 1
            out.write(json.dumps(record) + "\n")
        writer.commit(records)
    return scored, folder / "e.parquet"


def rescore_child(scored: str, embeddings: str, head: str, plugins: str | None = None) -> None:
    """In its own process, pinned to one core: one rescore (with ``plugins``' library when given); prints
    its counts, time and peak RSS."""
    import torch

    if plugins:
        sys.path.insert(0, plugins)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    from video_aesthetics.config import ScoringConfig
    from video_aesthetics.rescore import rescore_file

    out = Path(scored).with_name("rescored.jsonl")
    started, cpu = time.perf_counter(), time.process_time()
    stats = rescore_file(scored, embeddings, out, ScoringConfig(mlp_checkpoint=head))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        json.dumps(
            {
                "clips": stats.clips,
                "seconds": round(seconds, 3),
                "clips_per_s": round(stats.clips / seconds),
                "cpu_clips_per_s": round(stats.clips / cpu),
                "peak_rss_mb": round(peak_rss() / 2**20, 1),
            }
        )
    )


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which exec resets (ru_maxrss keeps the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rescore_sizes(
    sizes: list[int], workdir: Path, baseline: str | None = None, repeat: int = 1
) -> list[dict[str, Any]]:
    """One row per size: the best of ``repeat`` runs, and with ``baseline`` that tree's best, run alternately."""
    from helpers.clip_models import build_head, save_head

    head = save_head(build_head(768, seed=1), workdir / "head.pth")
    rows = []
    for clips in sizes:
        scored, embeddings = make_rescore_input(clips, workdir / f"rescore-{clips}")
        runs: dict[str, list[dict[str, Any]]] = {"current": [], "baseline": []}
        for _ in range(repeat):
            for name, plugins in (("baseline", baseline), ("current", "")):
                if name == "baseline" and not baseline:
                    continue
                done = subprocess.run(
                    [sys.executable, __file__, "--rescore-child", str(scored), str(embeddings), str(head), plugins],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1", "VIDEO_AESTHETICS_OFFLINE": "1"},
                )
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = max(runs["current"], key=lambda run: run["cpu_clips_per_s"])
        row["parquet_mb"] = round(embeddings.stat().st_size / 2**20, 1)
        if baseline:
            before = max(runs["baseline"], key=lambda run: run["cpu_clips_per_s"])
            row["baseline"] = before
            row["speedup_cpu"] = round(row["cpu_clips_per_s"] / before["cpu_clips_per_s"], 2)
            row["speedup_wall"] = round(row["clips_per_s"] / before["clips_per_s"], 2)
        rows.append(row)
        for path in (scored, embeddings, scored.with_name("rescored.jsonl")):
            path.unlink(missing_ok=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000], help="clips per rescore run")
    parser.add_argument("--write-clips", type=int, default=1024, help="clips of the scoring run of (a)")
    parser.add_argument("--skip-write", action="store_true")
    parser.add_argument("--skip-rescore", action="store_true")
    parser.add_argument("--baseline", metavar="PLUGINS", help="another tree's plugins/ folder, rescored alternately")
    parser.add_argument("--repeat", type=int, default=1, help="rescore runs per size (and tree); the best is shown")
    parser.add_argument(
        "--rescore-child", nargs=4, metavar=("SCORED", "EMBEDDINGS", "HEAD", "PLUGINS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.rescore_child:
        rescore_child(*args.rescore_child)
        return
    os.environ.setdefault("VIDEO_AESTHETICS_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-embeddings-") as folder:
        if not args.skip_write:
            print(
                "(a) writing embeddings, share of end-to-end scoring time:",
                json.dumps(write_cost(args.write_clips, Path(folder) / "a")),
            )
        if not args.skip_rescore:
            for row in rescore_sizes(args.sizes, Path(folder), args.baseline, args.repeat):
                print("(b) rescore on one core:", json.dumps(row))


if __name__ == "__main__":
    main()
