"""bench/gpu.py's whole-video section: the sampled frames of H.264 videos decoded by PyAV and by NVDEC, side by side.

Two measures, each in the same run for both decoders:
- one thread's rate: a clip's sampled frames decoded and resized to model pixels (PyAV: what one
  decoding worker does; NVDEC: what the scoring process's decoding thread does), and NVDEC's pixels
  against PyAV's at full size and at the model's size;
- end to end in whole-video mode (JSONL in, decode, score, JSONL out, through runner.score_records):
  PyAV in the decoding workers against NVDEC in the scoring process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from gpu_tower import sig, sync

from video_aesthetics import nvdec
from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import resize_crop
from video_aesthetics.frames import PreprocessConfig
from video_aesthetics.jsonl import JsonlSource, write_jsonl
from video_aesthetics.resize import resize_crop_exact
from video_aesthetics.runner import score_records
from video_aesthetics.scoring import Scorer, torch_threads

# 3 s of 720p at 30 frames/s, a keyframe each second: a typical cut clip.
WIDTH, HEIGHT, FRAMES, FPS, KEYFRAME_EVERY = 1280, 720, 90, 30, 30
# Videos encoded; the others are hard links to them (each still opened, demuxed and decoded).
DISTINCT = 4


def make_videos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    originals = [
        nvdec.make_test_video(
            folder / f"original{index}.mp4", FRAMES, WIDTH, HEIGHT, FPS, options={"g": str(KEYFRAME_EVERY)}
        )
        for index in range(min(count, DISTINCT))
    ]
    paths = []
    for index in range(count):
        path = folder / f"video{index}.mp4"
        try:
            os.link(originals[index % len(originals)], path)
        except OSError:
            path.write_bytes(originals[index % len(originals)].read_bytes())
        paths.append(path)
    return paths


def video_decoding(
    folder: Path, scorer: Scorer, count: int, num_workers: int, allows: Any, load_num: int = 3
) -> dict[str, Any]:
    device, pp = scorer.device, scorer.preprocess
    paths = make_videos(folder, count)
    requests = [(path, nvdec.sampled_indices(path, load_num)) for path in paths]
    out: dict[str, Any] = {
        "videos": count,
        "video": f"{WIDTH}x{HEIGHT}, {FRAMES} frames at {FPS}/s, H.264, a keyframe every {KEYFRAME_EVERY} frames",
        "frames_per_clip": load_num,
    }
    with torch_threads(1):
        started = time.perf_counter()
        for path, indices in requests:
            resize_crop(nvdec.read_frames_pyav(path, indices), pp)
        out["pyav_clips_per_s_one_thread"] = sig(count / (time.perf_counter() - started))
    error = nvdec.nvdec_error(device) if device.type == "cuda" else f"{device} is not a CUDA device"
    if error is not None:
        out["nvdec"] = {"skipped": error}
        return out
    out["nvdec"] = _nvdec_rates(requests, device, pp)
    out["nvdec"]["ratio_to_pyav_one_thread"] = sig(
        out["nvdec"]["clips_per_s_one_thread"] / out["pyav_clips_per_s_one_thread"], 3
    )
    if allows(60):
        out["end_to_end"] = {
            name: _whole_videos(folder, paths, scorer, load_num, num_workers, enabled)
            for name, enabled in (("pyav", False), ("nvdec", True))
        }
    return out


def _nvdec_rates(requests: list[tuple[Path, list[int]]], device: torch.device, pp: PreprocessConfig) -> dict[str, Any]:
    stream = torch.cuda.Stream(device)
    first_path, first_indices = requests[0]
    nvdec.read_frames_nvdec(first_path, first_indices, device, stream)  # warm: the decoder's creation
    sync(device)
    started = time.perf_counter()
    for path, indices in requests:
        resize_crop_exact(nvdec.read_frames_nvdec(path, indices, device, stream), pp)
    sync(device)
    rate = len(requests) / (time.perf_counter() - started)
    full = nvdec.read_frames_nvdec(first_path, first_indices, device, stream)
    reference = nvdec.read_frames_pyav(first_path, first_indices).to(device)
    model, model_reference = resize_crop_exact(full, pp), resize_crop_exact(reference, pp)
    return {
        "clips_per_s_one_thread": sig(rate),
        "pixels_vs_pyav_full_size": _delta(full, reference),
        "pixels_vs_pyav_model_size": _delta(model, model_reference),
        "timestamps": nvdec.nvdec_timestamps(first_path, first_indices, device),
    }


def _delta(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    delta = (a.int() - b.int()).abs()
    return {"max": int(delta.max()), "mean": round(float(delta.float().mean()), 4)}


def _whole_videos(
    folder: Path, paths: list[Path], scorer: Scorer, load_num: int, num_workers: int, enabled: bool
) -> dict[str, Any]:
    """Clips/s of a whole-video run on the gpu path, NVDEC on or off (nvdec.ENABLED): PyAV in the workers."""
    source = folder / "videos.jsonl"
    source.write_text("".join(json.dumps({"video": str(path)}) + "\n" for path in paths))
    config = ScoringConfig(
        video_clips_key="", load_num=load_num, num_workers=num_workers, device=str(scorer.device), decode="gpu"
    )
    before = nvdec.ENABLED
    nvdec.ENABLED = enabled
    try:
        sync(scorer.device)
        started = time.perf_counter()
        stats = score_records(
            JsonlSource(source),
            config,
            lambda records: write_jsonl(folder / "out.jsonl", records),
            load_scorer=lambda _: scorer,
        )
        sync(scorer.device)
    finally:
        nvdec.ENABLED = before
    seconds = time.perf_counter() - started
    scored = stats.scored if stats is not None else 0
    return {"clips_per_s": sig(len(paths) / seconds), "scored": scored, "seconds": round(seconds, 2)}
