"""bench/gpu.py runs on the CPU too: every section that can run there does, small, and says what it skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "section failed" not in done.stderr  # only what exists on this device is measured
    [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(line)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _bench(tmp_path_factory.mktemp("bench"))


def test_every_section_is_in_the_one_json(smoke: dict[str, Any]) -> None:
    for key in (
        "gpu",
        "device",
        "model",
        "versions",
        "ceiling_images_per_s",
        "default_decode",
        "end_to_end",
        "time_to_first_score_s",
        "peak_gpu_memory_gib",
        "decode_paths",
        "video",
        "profile",
        "attention",
        "tower",
        "targets",
    ):
        assert key in smoke, key
    assert smoke["versions"]["torch"] and "open_clip_torch" in smoke["versions"]
    assert smoke["time_to_first_score_s"] > 0 and smoke["default_decode"] == "fast"


def test_end_to_end_runs_every_cpu_path_and_skips_the_device_ones(smoke: dict[str, Any]) -> None:
    for size in ("1280x720", "1920x1080"):
        paths = smoke["end_to_end"][size]
        assert paths["exact"]["images_per_s"] > 0 and paths["fast"]["images_per_s"] > 0
        assert paths["fast"]["ratio_to_ceiling"] > 0
        assert "skipped" in paths["gpu"] and "skipped" in paths["hardware"]  # no CUDA here
    assert smoke["targets"]["end_to_end_images_per_s"] == smoke["end_to_end"]["1280x720"]["fast"]["images_per_s"]


def test_decode_paths_compare_pixels_and_costs(smoke: dict[str, Any]) -> None:
    for size in ("1280x720", "1920x1080"):
        paths = smoke["decode_paths"][size]
        assert paths["fast"]["pixels_max_delta"] <= 1 and paths["fast"]["cpu_ms_per_frame"] > 0
        assert paths["exact"]["cpu_ms_per_frame"] > 0 and paths["device_paths_worker_ms_per_frame"] > 0
        # The device decoder's code on the CPU: libjpeg-turbo's pixels and the exact resize, so exact's pixels.
        assert paths["gpu"]["pixels_max_delta"] == 0 and paths["gpu"]["decoder_images_per_s"] > 0
        assert paths["resize"]["exact_separable_images_per_s"] > 0
        assert paths["resize"]["torch_antialiased_images_per_s"] > 0


def test_tower_variants_are_compared_with_fp32_and_bf16_eager(smoke: dict[str, Any]) -> None:
    tower = smoke["tower"]
    assert set(tower) >= {"bf16", "fp16", "fp32", "autocast_bf16", "fp8"}
    assert tower["fp32"]["max_score_delta_vs_fp32"] == 0.0
    # Other precisions really ran: their scores moved.
    assert tower["bf16"]["max_score_delta_vs_fp32"] > 0 and tower["fp8"]["max_score_delta_vs_fp32"] > 0
    assert tower["bf16"]["vs_bf16_eager"] == 1.0 and tower["fp8"]["vs_bf16_eager"] > 0
    assert smoke["profile"]["images"] > 0


def test_whole_videos_are_decoded_with_pyav_and_nvdec_is_skipped_without_cuda(smoke: dict[str, Any]) -> None:
    video = smoke["video"]
    assert video["pyav_clips_per_s_one_thread"] > 0
    assert "not a CUDA device" in video["nvdec"]["skipped"]


def test_deviations_alone(tmp_path: Path) -> None:
    result = _bench(tmp_path, "--deviations")
    assert result["model"] == "tiny (smoke)" and result["frames"] >= 3
    assert result["bf16"] > 0 and result["fp8"] > 0


def test_a_cpu_run_without_smoke_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2 and "run it on a GPU" in done.stderr
