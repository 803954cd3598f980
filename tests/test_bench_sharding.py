"""bench/sharding.py runs end to end on a small input and reports what it promises; bench/celery_workers.py parses its options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.airflow_env import REPO


def _bench(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_the_sharding_bench_plans_past_the_shard_limit_reading_its_input_once(tmp_path: Path) -> None:
    # 2,000 records at 300 a shard would make 7 shards; at most 4 are allowed, so the plan re-cuts.
    done = _bench("sharding.py", "--records", "2000", "--chunk-size", "300", "--max-shards", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(line)
    assert (result["records"], result["clips"], result["shards"], result["chunk_size"]) == (2000, 8000, 4, 500)
    assert result["input_bytes"] > 2000 * 100 and result["input_reads"] == 1
    assert result["baseline"]["peak_rss_mb"] > 0
    for step in ("plan", "merge"):
        figures = result[step]
        assert set(figures) == {
            "seconds",
            "peak_rss_mb",
            "records_per_s",
            "input_reads",
            "shard_copy_reads_per_shard",
            "scored_shard_reads_per_shard",
        }
        assert figures["seconds"] > 0 and figures["peak_rss_mb"] >= result["baseline"]["peak_rss_mb"] * 0.5
    assert result["plan"]["input_reads"] == 1 and result["merge"]["input_reads"] == 0
    # The merge reads each staged shard once and each scored shard twice (its checksum, then the checked merge).
    assert result["merge"]["shard_copy_reads_per_shard"] == 1.0
    assert result["merge"]["scored_shard_reads_per_shard"] == 2.0
    # Nothing is left behind in the working folder the bench was started from.
    assert not list(tmp_path.iterdir())


def test_the_celery_bench_describes_its_options(tmp_path: Path) -> None:
    done = _bench("celery_workers.py", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--workers" in done.stdout and "gpu" in done.stdout
