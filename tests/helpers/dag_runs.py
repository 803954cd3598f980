"""Runs of the DAG's task bodies in-process: the contexts of scheduled, manual and UI-triggered runs,
their params, a day's input and its shards scored as score_shard would."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from helpers.media import clip_record, read_jsonl, write_jsonl
from video_aesthetics.records import SCORE

RUN = {
    "dag_id": "video_aesthetic_scoring",
    "run_id": "scheduled__2024-01-02T00:00:00+00:00",
    "ds": "2024-01-02",
    "dag_run": SimpleNamespace(run_type="scheduled", conf={}),
}
MANUAL = {
    "dag_id": "video_aesthetic_scoring",
    "run_id": "manual__2024-05-05T10:00:00+00:00",
    "dag_run": SimpleNamespace(run_type="manual", conf={}),
}
# What the UI does: a manual trigger with a logical date.
UI = {**MANUAL, "run_id": "manual__2024-01-02T10:00:00+00:00", "ds": "2024-01-02"}


def params(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    base = {
        "input_path": None,
        "input_root": str(tmp_path / "in"),
        "output_root": str(tmp_path / "out"),
        "work_root": None,
        "figure_root": str(tmp_path / "frames"),
        "chunk_size": 2,
        "clip_model": "ViT-L/14",
        "mlp_checkpoint": None,
        "load_num": 3,
        "batch_size": 8,
        "num_workers": 0,
        "device": "cpu",
        "reduction": "mean",
        "on_missing_frames": "extract",
        "skip_bad_records": False,
    }
    return {**base, **changes}


def write_input(tmp_path: Path, count: int = 5) -> Path:
    records = [clip_record(f"videos/v{i}.mp4", [f"v{i}_0"], n=i) for i in range(count)]
    return write_jsonl(tmp_path / "in" / "2024-01-02" / "part.jsonl", records)


def score_shards(shard_kwargs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Scored shards as score_shard writes them, with the XCom it returns (records, clips, sha256, model)."""
    results = []
    for kwargs in shard_kwargs:
        rows = read_jsonl(Path(kwargs["input_path"]))
        for row in rows:
            row["video_clips"]["clips"][0][SCORE] = 5.0 + row["n"]
        write_jsonl(Path(kwargs["output_path"]), rows)
        digest = hashlib.sha256(Path(kwargs["output_path"]).read_bytes()).hexdigest()
        results.append(
            {
                "input": kwargs["input_path"],
                "output": kwargs["output_path"],
                "records": len(rows),
                "clips": len(rows),
                "scored": len(rows),
                "failed": 0,
                "sha256": digest,
                "model": {"head": {"sha256": "ab" * 32}},
            }
        )
    return results
