"""End-to-end scoring throughput against the model's own ceiling, measured side by side in one run.

    python bench/scoring.py [--clips 200] [--model ViT-B-32] [--batch-size 16] [--num-workers 1]
                            [--decode auto] [--compare-decodes] [--preprocess-frames 40]

Prints one JSON object:
- preprocess: per frame and one thread (as in a decoding worker), the milliseconds of the exact
  (PIL) and fast (torchvision + torch resize) decode paths on 1280x720 and 1920x1080 JPEGs of
  quality 90, timed alternately frame by frame, their ratio, and how far fast's pixels are from
  exact's (max and mean levels) and the model's scores (max |delta|);
- clips_per_s (JSONL in, 1280x720 JPEGs decoded on the ``--decode`` path, JSONL out),
  ceiling_clips_per_s (the same scorer, batch and precision on pixels already decoded) and their
  ratio; with --compare-decodes, the same for the exact and fast paths too.
The model and head have random weights: they cost what real ones cost, and this measures time, not scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from clip_data import FRAMES_PER_CLIP, SIZES, frame_paths, smooth_picture, write_records
from PIL import Image

from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import load_frame_fast, resolve_decode
from video_aesthetics.frames import PreprocessConfig, load_frame
from video_aesthetics.jsonl import JsonlSource, write_jsonl
from video_aesthetics.runner import score_records
from video_aesthetics.scoring import Scorer, forward_batch_for, resolve_device


def make_dataset(root: Path, clips: int, width: int, height: int) -> Path:
    """``clips`` clips of 3 distinct JPEG frames each, in VideoFrameFilter's layout, and their JSONL."""
    smooth = smooth_picture(width, height)
    for clip, paths in enumerate(frame_paths(root, clips)):
        for frame, path in enumerate(paths):
            Image.fromarray(np.roll(smooth, shift=(clip * 7 + frame * 3), axis=1)).save(path, quality=90)
    return write_records(root, clips)


def random_scorer(model_name: str, device: torch.device, forward_batch: int) -> Scorer:
    import open_clip

    from video_aesthetics.frames import PreprocessConfig
    from video_aesthetics.head import AestheticHead

    model = open_clip.create_model(model_name)  # random weights: timing only
    embed_dim = model.visual.output_dim
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    return Scorer(model, AestheticHead(embed_dim), PreprocessConfig(size=size), device, forward_batch=forward_batch)


def ceiling(scorer: Scorer, frames: list[Path], batch_clips: int) -> float:
    """Clips/s of the scorer alone on pixels decoded beforehand, batched as the run batches them."""
    pixels = torch.from_numpy(np.stack([load_frame(path, scorer.preprocess) for path in frames]))
    per_batch = batch_clips * FRAMES_PER_CLIP
    scorer.score_pixels(pixels[:per_batch])  # warm-up, as the end-to-end run gets one
    _sync(scorer.device)
    started = time.perf_counter()
    for start in range(0, len(pixels), per_batch):
        scorer.score_pixels(pixels[start : start + per_batch])
    _sync(scorer.device)
    return len(frames) / FRAMES_PER_CLIP / (time.perf_counter() - started)


def end_to_end(scorer: Scorer, source: Path, config: ScoringConfig, out: Path) -> float:
    warm = torch.from_numpy(
        np.zeros(
            (config.batch_size * FRAMES_PER_CLIP, scorer.preprocess.size, scorer.preprocess.size, 3), dtype=np.uint8
        )
    )
    scorer.score_pixels(warm)
    _sync(scorer.device)
    started = time.perf_counter()
    jsonl = JsonlSource(source)
    stats = score_records(jsonl, config, lambda records: write_jsonl(out, records), load_scorer=lambda _device: scorer)
    _sync(scorer.device)
    assert stats.scored == stats.clips, stats
    return stats.clips / (time.perf_counter() - started)


def preprocess_side_by_side(
    root: Path, frames: int, scorer: Scorer, sizes: tuple[tuple[int, int], ...] = SIZES
) -> dict[str, dict[str, float]]:
    """Per-frame ms of the exact and fast paths on one thread, alternating frame by frame, and fast's deviation."""
    pp = scorer.preprocess
    paths = {size: _jpegs(root / f"{size[0]}x{size[1]}", frames, *size) for size in sizes}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a decoding worker's setting (DataLoader sets it in every worker)
    try:
        timings = {size: _alternating(paths[size], pp) for size in sizes}
    finally:
        torch.set_num_threads(before)
    report = {}
    for size in sizes:
        exact = np.stack([load_frame(path, pp) for path in paths[size]])
        fast = np.stack([load_frame_fast(path, pp) for path in paths[size]])
        delta = np.abs(exact.astype(np.int16) - fast.astype(np.int16))
        scores = [scorer.score_pixels(torch.from_numpy(pixels)) for pixels in (exact, fast)]
        exact_ms, fast_ms = timings[size]
        report[f"{size[0]}x{size[1]}"] = {
            "exact_ms": round(exact_ms, 2),
            "fast_ms": round(fast_ms, 2),
            "speedup": round(exact_ms / fast_ms, 2),
            "pixels_max_delta": int(delta.max()),
            "pixels_mean_delta": round(float(delta.mean()), 4),
            "score_max_abs_delta": float(f"{(scores[0] - scores[1]).abs().max().item():.3g}"),
            "score_spread": float(f"{(scores[0].max() - scores[0].min()).item():.3g}"),
        }
    return report


def _jpegs(folder: Path, count: int, width: int, height: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    smooth = smooth_picture(width, height)
    paths = []
    for index in range(count):
        path = folder / f"frame_{index:04d}.jpg"
        Image.fromarray(np.roll(smooth, shift=index * 11, axis=1)).save(path, quality=90)
        paths.append(path)
    return paths


def _alternating(paths: list[Path], pp: PreprocessConfig) -> tuple[float, float]:
    """Median ms per frame of exact and fast, each frame timed on both paths back to back (after a warm-up)."""
    load_frame(paths[0], pp), load_frame_fast(paths[0], pp)
    exact, fast = [], []
    for path in paths:
        for load, times in ((load_frame, exact), (load_frame_fast, fast)):
            started = time.perf_counter()
            load(path, pp)
            times.append(time.perf_counter() - started)
    return float(np.median(exact)) * 1e3, float(np.median(fast)) * 1e3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward batch")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=1,
        help="decoding workers; on a 2-core CPU one leaves the other core to the model",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--rounds", type=int, default=1, help="alternate end-to-end and ceiling runs this often")
    parser.add_argument(
        "--decode", default=ScoringConfig().decode, help="decode path of the end-to-end run (default: the config's)"
    )
    parser.add_argument(
        "--compare-decodes", action="store_true", help="also time the end-to-end run on the exact and fast paths"
    )
    parser.add_argument(
        "--preprocess-frames", type=int, default=40, help="JPEGs per size for the per-frame timing (0: skip it)"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    scorer = random_scorer(args.model, device, forward_batch_for(ScoringConfig(batch_size=args.batch_size), device))
    decodes = [args.decode, *(["exact", "fast"] if args.compare_decodes else [])]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        preprocess = (
            preprocess_side_by_side(root / "single", args.preprocess_frames, scorer) if args.preprocess_frames else {}
        )
        source = make_dataset(root, args.clips, args.width, args.height)
        frames = sorted((root / "frames").rglob("*.jpg"))
        config = ScoringConfig(
            figure_root=str(root / "frames"),
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=str(device),
            decode=args.decode,
        )
        runs: dict[str, list[float]] = {decode: [] for decode in decodes}
        ceilings = []
        for _ in range(args.rounds):
            for decode, times in runs.items():
                times.append(end_to_end(scorer, source, config.replace(decode=decode), root / "out.jsonl"))
            ceilings.append(ceiling(scorer, frames, args.batch_size))
    clips_per_s, ceiling_clips_per_s = float(np.median(runs[args.decode])), float(np.median(ceilings))
    result = {
        "model": args.model,
        "device": str(device),
        "precision": str(scorer.dtype),
        "cpu_count": os.cpu_count(),
        "preprocess": preprocess,
        "clips": args.clips,
        "frames_per_clip": FRAMES_PER_CLIP,
        "frame_size": f"{args.width}x{args.height}",
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
        "decode": args.decode,
        "decode_resolved": resolve_decode(args.decode, device),
        "clips_per_s": round(clips_per_s, 3),
        "ceiling_clips_per_s": round(ceiling_clips_per_s, 3),
        "ratio": round(clips_per_s / ceiling_clips_per_s, 3),
    }
    if args.compare_decodes:
        result["by_decode"] = {
            decode: {
                "clips_per_s": round(float(np.median(times)), 3),
                "ratio": round(float(np.median(times)) / ceiling_clips_per_s, 3),
            }
            for decode, times in runs.items()
        }
    if device.type == "cuda":
        result["images_per_s"] = round(clips_per_s * FRAMES_PER_CLIP, 1)
        result["ceiling_images_per_s"] = round(ceiling_clips_per_s * FRAMES_PER_CLIP, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
