"""Planning and merging a large run: time, peak memory and input reads of the DAG's plan and merge tasks.

    python bench/sharding.py [--records 1000000] [--chunk-size 15000] [--max-shards 1024] [--dir DIR]

Makes a deterministic JSONL input (each record a video path, a caption and 4 clips), then runs the
bodies of the plan_shards and merge tasks (``shard_plan.plan_shards``, ``merge.merge``: checked
merge, report, manifest, publish into a local store), each in a fresh process. Between the two the
scored shards are written as score_shard writes them: the shard's records with aesthetic_score set
on every clip (one clip in 50 failed), one ``dumps`` line each, with the XCom it returns.

Prints one JSON object: records, clips, input_bytes, chunk_size, shards; baseline (the peak RSS of
a fresh process that only imports the task module: Airflow's share of every figure); plan and merge,
each with seconds (the task body's call, imports excluded), peak_rss_mb (the child's
``ru_maxrss``), records_per_s and how often it opened each file for reading: the input, the
staged shard copies and the scored shards (counted by an audit hook, per shard); input_reads, the
times the input was read over both tasks; output_sha256, the published scored.jsonl's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIPS_PER_RECORD = 4
FAIL_EVERY = 50
RUN_ID = "manual__bench-sharding"
MODEL = {"head": {"sha256": "ab" * 32}}


def make_input(path: Path, records: int) -> int:
    """``records`` records in the seed's shape, the same bytes on every run; the file's size."""
    with path.open("w", encoding="utf-8") as out:
        for n in range(records):
            stem = f"video{n:07d}"
            clips = [
                {"id": f"{stem}_{c}", "frame_start": 90 * c, "frame_end": 90 * c + 90, "num_frames": 90}
                for c in range(CLIPS_PER_RECORD)
            ]
            record = {
                "video": [f"./videos/part-{n % 97:02d}/{stem}.mp4"],
                "caption": f"clip set {n}: a street at dusk, camera panning left",
                "video_clips": {"clips": clips},
            }
            out.write(json.dumps(record) + "\n")
    return path.stat().st_size


def params(work: Path) -> dict[str, Any]:
    return {
        "input_path": str(work / "input.jsonl"),
        "output_root": str(work / "out"),
        "work_root": None,
        "figure_root": str(work / "frames"),
        "chunk_size": 15000,
        "clip_model": "ViT-L/14",
        "mlp_checkpoint": None,
        "load_num": 3,
        "batch_size": 8,
        "num_workers": 0,
        "device": "cpu",
        "reduction": "mean",
        "skip_bad_records": False,
    }


def context() -> dict[str, Any]:
    return {
        "dag_id": "video_aesthetic_scoring",
        "run_id": RUN_ID,
        "dag_run": SimpleNamespace(run_type="manual", conf={}),
    }


def score_shards(shard_kwargs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored shards as score_shard writes them (jsonl.dumps lines, written atomically) and its XCom."""
    from video_aesthetics.files import atomic_writer, sha256_file
    from video_aesthetics.jsonl import dumps

    results = []
    for kwargs in shard_kwargs:
        counts = Counter()
        with Path(kwargs["input_path"]).open("rb") as source, atomic_writer(kwargs["output_path"]) as out:
            for line in source:
                record = json.loads(line)
                for clip in record["video_clips"]["clips"]:
                    n = counts["clips"]
                    counts["clips"] += 1
                    if n % FAIL_EVERY == FAIL_EVERY - 1:
                        clip["aesthetic_score"], clip["error"] = None, "no_frames"
                        counts["failed"] += 1
                    else:
                        clip["aesthetic_score"] = round(3.0 + (n * 37 % 600) / 100, 4)
                        counts["scored"] += 1
                out.write(dumps(record) + "\n")
                counts["records"] += 1
        results.append(
            {
                "input": kwargs["input_path"],
                "output": kwargs["output_path"],
                **{key: counts[key] for key in ("records", "clips", "scored", "failed")},
                "sha256": sha256_file(kwargs["output_path"]),
                "model": MODEL,
            }
        )
    return results


def count_reads(input_path: Path) -> Counter:
    """Files opened for reading from now on: the input, staged shard copies and scored shards."""
    counts: Counter = Counter()
    target = str(input_path)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not isinstance(args[0], str | os.PathLike):
            return
        # File objects only: jsonl.input_kind probes permissions with os.open and close, reading nothing.
        mode = args[1]
        if not isinstance(mode, str) or "r" not in mode or "+" in mode:
            return
        path = os.fspath(args[0])
        if path == target:
            counts["input"] += 1
        elif path.endswith(".jsonl"):
            folder = os.path.basename(os.path.dirname(path))
            if folder in ("shards", "scored"):
                counts[folder] += 1

    sys.addaudithook(hook)
    return counts


def child(step: str, work: Path) -> None:
    """One task body in this fresh process; prints its measurements as one JSON line."""
    from video_aesthetics.airflow import layout, merge, shard_plan

    setup = json.loads((work / "bench.json").read_text())
    run_params = {**params(work), "chunk_size": setup["chunk_size"]}
    reads = count_reads(work / "input.jsonl")
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if step == "plan":
        shard_kwargs = shard_plan.plan_shards(run_params, context(), setup["max_shards"])
        (work / "shards.json").write_text(json.dumps(shard_kwargs))
        plan_file = layout.run_layout(run_params, context()).plan_file
        extra.update(shards=len(shard_kwargs), chunk_size=json.loads(plan_file.read_text())["chunk_size"])
    elif step == "merge":
        results = json.loads((work / "results.json").read_text())
        summary = merge.merge(run_params, context(), results)
        extra.update(records=summary["records"], clips=summary["clips"], output_sha256=summary["sha256"])
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_kb": peak_kb, "reads": dict(reads), **extra}))


def run_child(step: str, work: Path) -> dict[str, Any]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")},
        "AIRFLOW_HOME": str(work / "airflow-home"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "plugins"), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", step, "--dir", str(work)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {step} step failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measured(step: dict[str, Any], records: int, shards: int) -> dict[str, Any]:
    reads = step["reads"]
    return {
        "seconds": round(step["seconds"], 3),
        "peak_rss_mb": round(step["peak_rss_kb"] / 1024, 1),
        "records_per_s": round(records / step["seconds"]) if step["seconds"] else None,
        "input_reads": reads.get("input", 0),
        "shard_copy_reads_per_shard": round(reads.get("shards", 0) / shards, 2) if shards else 0,
        "scored_shard_reads_per_shard": round(reads.get("scored", 0) / shards, 2) if shards else 0,
    }


def bench(work: Path, records: int, chunk_size: int, max_shards: int) -> dict[str, Any]:
    (work / "bench.json").write_text(json.dumps({"chunk_size": chunk_size, "max_shards": max_shards}))
    input_bytes = make_input(work / "input.jsonl", records)
    baseline = run_child("import", work)
    plan = run_child("plan", work)
    shard_kwargs = json.loads((work / "shards.json").read_text())
    results = score_shards(shard_kwargs)
    (work / "results.json").write_text(json.dumps(results))
    merge = run_child("merge", work)
    if merge["records"] != records or merge["clips"] != records * CLIPS_PER_RECORD:
        raise SystemExit(f"the merge published {merge['records']} records, {merge['clips']} clips; expected {records}")
    published = next((work / "out").rglob("scored.jsonl"))
    if hashlib.sha256(published.read_bytes()).hexdigest() != merge["output_sha256"]:
        raise SystemExit(f"{published} does not hold the bytes the merge reported")
    shards = len(shard_kwargs)
    plan_figures, merge_figures = measured(plan, records, shards), measured(merge, records, shards)
    return {
        "records": records,
        "clips": records * CLIPS_PER_RECORD,
        "input_bytes": input_bytes,
        "chunk_size": plan["chunk_size"],
        "shards": shards,
        "max_shards": max_shards,
        "baseline": {"peak_rss_mb": round(baseline["peak_rss_kb"] / 1024, 1)},
        "plan": plan_figures,
        "merge": merge_figures,
        "input_reads": plan_figures["input_reads"] + merge_figures["input_reads"],
        "output_sha256": merge["output_sha256"],
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="input records (4 clips each)")
    parser.add_argument("--chunk-size", type=int, default=15000, help="the run's chunk_size (the DAG's default)")
    parser.add_argument("--max-shards", type=int, default=1024, help="core.max_map_length (Airflow's default)")
    parser.add_argument("--dir", type=Path, default=None, help="work here and keep the files (default: a temp dir)")
    parser.add_argument("--child", choices=("import", "plan", "merge"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.dir)
        return
    if args.records < 1:
        parser.error("--records must be >= 1")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = bench(args.dir.resolve(), args.records, args.chunk_size, args.max_shards)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-sharding-"))
        try:
            result = bench(work, args.records, args.chunk_size, args.max_shards)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
