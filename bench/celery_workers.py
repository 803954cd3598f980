"""Throughput of the DAG on the scripted Celery stack with one and with two ``gpu`` workers on this host.

    python bench/celery_workers.py [--videos 40] [--clips-per-video 10] [--chunk-size 5] [--workers 1,2]

For each setting, in one run: starts scripts/celery_stack.py's CeleryStack (PostgreSQL, Redis, a
scheduler, a dag-processor, an api-server, a ``default`` worker) with that many ``gpu`` Celery
workers of one task slot each (and a ``gpu`` pool of as many slots), every scoring task's torch
threads set to the host's CPUs divided by the gpu task slots, so that the settings use the same
cores; triggers the DAG on the same input (frames on disk, a tiny random CLIP with a 768-wide
output and a LAION-shaped head, as tests/helpers/clip_models.py builds, on the CPU); waits for the
run to succeed and checks that its output equals the first setting's. Stack start-up is not timed.

Prints one JSON object: clips, shards, cpus and, per setting, wall_s (trigger to success),
clips_per_s, scoring_s (first score_shard start to last score_shard end, from Airflow's task
instances) and scoring_clips_per_s; and the ratio of two workers to one for both.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "video_aesthetic_scoring"
RUN_SECONDS = 1800.0
WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='(\w+)'")


def _load_stack_module() -> Any:
    """scripts/celery_stack.py, which is a script, not part of the package."""
    sys.path.insert(0, str(REPO / "scripts"))
    import celery_stack

    return celery_stack


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_world(root: Path, videos: int, clips_per_video: int, frames_per_clip: int) -> dict[str, Path]:
    """Frames and JSONL (tests/helpers/media.frame_dataset) and the tiny model and head the tests use."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.clip_models import build_head, build_tiny_clip, save_head, save_open_clip_dir, tiny_clip_config
    from helpers.media import frame_dataset

    source, figure_root = frame_dataset(
        root, videos=videos, clips_per_video=clips_per_video, frames_per_clip=frames_per_clip
    )
    clip_dir = save_open_clip_dir(build_tiny_clip(seed=0), tiny_clip_config(), root / "tiny_clip")
    head = save_head(build_head(768, seed=1), root / "head.pth")
    return {"source": source, "figure_root": figure_root, "clip_model": clip_dir, "head": head}


def stack_class(module: Any) -> type:
    @dataclass
    class GpuWorkersStack(module.CeleryStack):
        """The scripted stack with ``gpu_slots`` gpu workers of one task slot each, instead of one worker of that many."""

        def start(self) -> None:
            wanted = self.gpu_slots  # the gpu pool's slots, set by start
            super().start()
            command, env = self._commands["worker-gpu"]
            for number in range(2, wanted + 1):
                name = f"worker-gpu-{number}"
                extra = [*command]
                extra[extra.index("-H") + 1] = f"gpu{number}@{socket.gethostname()}"
                self._commands[name] = (
                    extra,
                    {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(module.free_port())},
                )
                self.launch(name)
            deadline = time.monotonic() + module.STARTUP_SECONDS
            while not all(self.worker_ready(f"worker-gpu-{n}") for n in range(2, wanted + 1)):
                if time.monotonic() > deadline:
                    raise module.StackError(f"the extra gpu workers are not ready\n{self.log_tail()}")
                time.sleep(1)

        def launch(self, name: str) -> Any:
            if name == "worker-gpu":
                command, env = self._commands[name]
                one = [*command]
                one[one.index("-c") + 1] = "1"
                self._commands[name] = (one, env)
            return super().launch(name)

    return GpuWorkersStack


class Api:
    def __init__(self, stack: Any) -> None:
        import requests

        self.requests, self.stack = requests, stack
        login = requests.post(
            f"{stack.base_url}/auth/token", json={"username": stack.user, "password": stack.password}, timeout=30
        )
        login.raise_for_status()
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.requests.request(
            method, f"{self.stack.base_url}{path}", headers=self.headers, timeout=30, **kwargs
        )
        response.raise_for_status()
        return response.json()

    def wait(self, what: str, check: Any, seconds: float, every: float = 1.0) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            exited = [name for name, process in self.stack.processes.items() if process.poll() is not None]
            if exited:
                raise SystemExit(f"{exited} exited while waiting for {what}\n{self.stack.log_tail()}")
            with contextlib.suppress(self.requests.RequestException):
                value = check()
                if value:
                    return value
            time.sleep(every)
        raise SystemExit(f"timed out after {seconds:.0f} s waiting for {what}\n{self.stack.log_tail()}")


def run_setting(module: Any, world: dict[str, Path], root: Path, workers: int, chunk_size: int) -> dict[str, Any]:
    output_root = root / f"output-{workers}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base_env.update(
        VIDEO_AESTHETICS_OUTPUT_ROOT=str(output_root),
        VIDEO_AESTHETICS_FIGURE_ROOT=str(world["figure_root"]),
        VIDEO_AESTHETICS_CLIP_MODEL=str(world["clip_model"]),
        VIDEO_AESTHETICS_MLP_CHECKPOINT=str(world["head"]),
        VIDEO_AESTHETICS_DEVICE="cpu",
        VIDEO_AESTHETICS_SCHEDULE="none",
        VIDEO_AESTHETICS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        # The gpu task slots share the host's cores: each task's torch threads are its share.
        VIDEO_AESTHETICS_THREADS=str(max(1, cpus() // workers)),
    )
    threads = base_env["VIDEO_AESTHETICS_THREADS"]
    stack_type = stack_class(module)
    with stack_type(
        port=0, gpu_slots=workers, base_env=base_env, extra_env={"AIRFLOW__CORE__PARALLELISM": "8"}
    ) as stack:
        api = Api(stack)
        api.wait("the DAG to be registered", lambda: api("GET", f"/api/v2/dags/{DAG_ID}"), 300)
        api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        conf = {"input_path": str(world["source"]), "chunk_size": chunk_size}
        started = time.monotonic()
        run_id = api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})["dag_run_id"]
        state = api.wait(
            f"run {run_id}",
            lambda: (
                (s := api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]) in ("success", "failed") and s
            ),
            RUN_SECONDS,
            every=0.5,
        )
        wall = time.monotonic() - started
        if state != "success":
            raise SystemExit(f"run {run_id} with {workers} gpu worker(s) {state}\n{stack.log_tail()}")
        instances = api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        shards = [ti for ti in instances["task_instances"] if ti["task_id"] == "score_shard"]
        merged = api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/merge")
        per_worker = {
            name: sum(1 for task in WORKLOAD.findall(stack.log(name)) if task == "score_shard")
            for name in stack.processes
            if name.startswith("worker-")
        }
    starts = [datetime.fromisoformat(ti["start_date"]) for ti in shards]
    ends = [datetime.fromisoformat(ti["end_date"]) for ti in shards]
    scored = next(output_root.rglob("scored.jsonl"))
    return {
        "gpu_workers": workers,
        "threads_per_task": int(threads),
        "wall_s": round(wall, 2),
        "scoring_s": round((max(ends) - min(starts)).total_seconds(), 2),
        "shards": len(shards),
        "shard_task_s": [round(ti["duration"], 2) for ti in shards if ti.get("duration") is not None],
        "merge_state": merged["state"],
        "score_shard_per_worker": per_worker,
        "output_sha256": hashlib.sha256(scored.read_bytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=40, help="input records (one video each)")
    parser.add_argument("--clips-per-video", type=int, default=10)
    parser.add_argument("--frames-per-clip", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=5, help="records per shard")
    parser.add_argument("--workers", default="1,2", help="the gpu worker counts to compare, comma-separated")
    args = parser.parse_args(argv)
    settings = [int(n) for n in args.workers.split(",")]
    if any(n < 1 for n in settings):
        parser.error("--workers takes counts >= 1, e.g. 1,2")
    module = _load_stack_module()
    clips = args.videos * args.clips_per_video
    with tempfile.TemporaryDirectory(prefix="bench-celery-") as folder:
        root = Path(folder)
        world = make_world(root, args.videos, args.clips_per_video, args.frames_per_clip)
        results = [run_setting(module, world, root, workers, args.chunk_size) for workers in settings]
    for result in results:
        result["clips_per_s"] = round(clips / result["wall_s"], 2)
        result["scoring_clips_per_s"] = round(clips / result["scoring_s"], 2)
    if len({r["output_sha256"] for r in results}) != 1:
        raise SystemExit(f"the settings published different outputs: {[r['output_sha256'] for r in results]}")
    summary: dict[str, Any] = {"clips": clips, "records": args.videos, "chunk_size": args.chunk_size, "cpus": cpus()}
    summary["settings"] = results
    if len(results) == 2:
        one, two = results
        summary["ratio_wall"] = round(one["wall_s"] / two["wall_s"], 2)
        summary["ratio_scoring"] = round(one["scoring_s"] / two["scoring_s"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
