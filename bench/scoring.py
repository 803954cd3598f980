"""End-to-end scoring throughput against the model's own ceiling, measured side by side in one run.

    python bench/scoring.py [--clips 200] [--model ViT-B-32] [--batch-size 16] [--num-workers 1]

Prints one JSON object: clips_per_s (JSONL in, 1280x720 JPEGs decoded, JSONL out), ceiling_clips_per_s
(the same scorer, batch and precision on pixels already decoded) and their ratio. The model and head
have random weights: they cost what real ones cost, and this measures time, not scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from video_aesthetics.config import ScoringConfig
from video_aesthetics.frames import load_frame
from video_aesthetics.runner import score_file
from video_aesthetics.scoring import Scorer, forward_batch_for, resolve_device

FRAMES_PER_CLIP = 3


def make_dataset(root: Path, clips: int, width: int, height: int) -> Path:
    """``clips`` clips of 3 distinct JPEG frames each, in VideoFrameFilter's layout, and their JSONL."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC))
    lines = []
    for clip in range(clips):
        stem, cid = f"video{clip // 4}", f"video{clip // 4}_{clip % 4}"
        folder = root / "frames" / stem / cid / "img"
        folder.mkdir(parents=True, exist_ok=True)
        for frame in range(FRAMES_PER_CLIP):
            shifted = np.roll(smooth, shift=(clip * 7 + frame * 3), axis=1)
            Image.fromarray(shifted).save(folder / f"frame_{frame * 30:06d}.jpg", quality=90)
        if clip % 4 == 0:
            lines.append({"video": [f"videos/{stem}.mp4"], "video_clips": {"clips": []}})
        lines[-1]["video_clips"]["clips"].append({"id": cid, "frame_start": 0, "frame_end": 90, "num_frames": 90})
    source = root / "input.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return source


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
    stats = score_file(source, out, config, scorer=scorer)
    _sync(scorer.device)
    assert stats.scored == stats.clips, stats
    return stats.clips / (time.perf_counter() - started)


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
    args = parser.parse_args()

    device = resolve_device(args.device)
    scorer = random_scorer(args.model, device, forward_batch_for(ScoringConfig(batch_size=args.batch_size), device))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = make_dataset(root, args.clips, args.width, args.height)
        frames = sorted((root / "frames").rglob("*.jpg"))
        config = ScoringConfig(
            figure_root=str(root / "frames"),
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=str(device),
        )
        runs, ceilings = [], []
        for _ in range(args.rounds):
            runs.append(end_to_end(scorer, source, config, root / "out.jsonl"))
            ceilings.append(ceiling(scorer, frames, args.batch_size))
    clips_per_s, ceiling_clips_per_s = float(np.median(runs)), float(np.median(ceilings))
    result = {
        "model": args.model,
        "device": str(device),
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
        "clips": args.clips,
        "frames_per_clip": FRAMES_PER_CLIP,
        "frame_size": f"{args.width}x{args.height}",
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
        "clips_per_s": round(clips_per_s, 3),
        "ceiling_clips_per_s": round(ceiling_clips_per_s, 3),
        "ratio": round(clips_per_s / ceiling_clips_per_s, 3),
    }
    if device.type == "cuda":
        result["images_per_s"] = round(clips_per_s * FRAMES_PER_CLIP, 1)
        result["ceiling_images_per_s"] = round(ceiling_clips_per_s * FRAMES_PER_CLIP, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
