"""The GPU benchmark: can the decode paths keep one GPU busy with ViT-L/14, and how fast can the tower go? One JSON.

    python bench/gpu.py                         # on a GPU: ViT-L/14 (random weights), at most about 8 minutes
    python bench/gpu.py --smoke --device cpu    # a tiny model and a few frames: checks that it runs

Prints (stdout, one line) one JSON object: the GPU's name and the versions the figures depend on
(``versions``); the model-only ceiling (images/s of the scorer on pixels already on the device, in
the shipped precision: bf16 on GPUs); end-to-end images/s (JSONL in, JPEG frames decoded, JSONL out,
through runner.score_records) on the exact, fast, gpu and hardware decode paths at 1280x720 and
1920x1080 (JPEGs of quality 90 made here), each with its ratio to the ceiling, and what ``auto``
picks (``default_decode``); the time to first score and the smallest shard (chunk_size) for which it
is at most 5% of the shard's time; peak GPU memory; each decode path's pixel and score deviation
from exact and its cost, each JPEG engine's decoder alone and the device resize alone
(``decode_paths``); whole videos, PyAV against NVDEC (``video``, bench/gpu_video.py); one batch's
device time by kernel (``profile``); attention kernels; every way of running the tower side by side
with its score deviation from fp32 (``tower``, bench/gpu_tower.py); and issue 20's three figures
(``targets``). ``--deviations`` prints only each precision's score deviation, on any device.

Sections past the time budget (--budget-s) are skipped and say so, so that the run fits its slot.
Weights are random: they cost what real ones cost; the scores only serve to compare variants.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from clip_data import FRAMES_PER_CLIP, SIZES, frame_paths, smooth_picture, write_records
from gpu_tower import Variants, attention_variants, guarded, images_per_s, profile_batch, sig, sync, tower_variants
from gpu_video import video_decoding
from PIL import Image

from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import (
    frame_for_device,
    gpu_decode_error,
    load_frame_fast,
    pack_for_device,
    resolve_decode,
)
from video_aesthetics.device_decoder import DeviceDecoder
from video_aesthetics.errors import ConfigError
from video_aesthetics.frames import load_frame, resized_size
from video_aesthetics.jpeg_hardware import hardware_decode_error
from video_aesthetics.jsonl import JsonlSource, write_jsonl
from video_aesthetics.resize import resize_crop_exact
from video_aesthetics.runner import score_records
from video_aesthetics.scoring import Scorer, forward_batch_for, resolve_device, torch_threads

DECODES = ("exact", "fast", "gpu", "hardware")
# The smoke model: a ViT-B/32-shaped tower, 2 layers of 64, ViT-L/14's 768-wide embeddings (as the tests' tiny CLIP).
TINY_CFG = {
    "embed_dim": 768,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 64, "layers": 2, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}

log = logging.getLogger("bench.gpu")


class Budget:
    """Seconds left for optional sections; what does not fit is skipped with a reason."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


# --- data --------------------------------------------------------------------------------------


def make_clips(root: Path, clips: int, width: int, height: int, distinct: int) -> Path:
    """``clips`` clips of 3 JPEG frames (quality 90) in VideoFrameFilter's layout, and their JSONL.

    Only ``distinct`` frames are encoded; the others are hard links to them (each still a file
    that is opened, read and decoded), so that thousands of clips take seconds to make.
    """
    smooth = smooth_picture(width, height)
    originals = []
    for index in range(distinct):
        path = root / "originals" / f"{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(smooth, shift=index * 7, axis=1)).save(path, quality=90)
        originals.append(path)
    for clip, paths in enumerate(frame_paths(root, clips)):
        for frame, target in enumerate(paths):
            original = originals[(clip * FRAMES_PER_CLIP + frame) % distinct]
            try:
                os.link(original, target)
            except OSError:
                target.write_bytes(original.read_bytes())
    return write_records(root, clips)


# --- the model ---------------------------------------------------------------------------------


def save_model(folder: Path, smoke: bool, head_file: Path | None = None) -> tuple[str, Path]:
    """A random CLIP saved where the project's loader reads it; returns (clip_model spec, head file).

    The head is ``head_file`` when given (LAION's official one: scores on its scale), else random.
    """
    import open_clip
    from safetensors.torch import save_file

    from video_aesthetics.head import AestheticHead

    folder.mkdir(parents=True, exist_ok=True)
    if smoke:
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_CFG)
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
        weights, spec = folder / "open_clip_model.safetensors", str(folder)
    else:
        model = open_clip.create_model("ViT-L-14", pretrained=None)  # random weights: timing only
        weights = folder / "vit-l-14.safetensors"
        spec = f"ViT-L-14:{weights}"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    if head_file is not None:
        return spec, head_file
    head = folder / "head.pth"
    torch.manual_seed(1)
    torch.save(AestheticHead(768).state_dict(), head)
    return spec, head


def time_to_first_score(config: ScoringConfig, frames: list[Path], device: torch.device) -> tuple[Scorer, dict]:
    """The scorer, and the seconds from nothing loaded (CUDA not started either) to the first clip's scores.

    load_s: Scorer.load (read and hash the files, build the model, move it to the device);
    first_clip_s: decode the first clip's frames and score them (kernel selection included).
    """
    started = time.perf_counter()
    scorer = Scorer.load(config, device)
    sync(device)
    loaded = time.perf_counter()
    pixels = torch.from_numpy(np.stack([load_frame(path, scorer.preprocess) for path in frames]))
    scores = scorer.score_pixels(pixels)
    assert torch.isfinite(scores).all()
    done = time.perf_counter()
    return scorer, {"load_s": round(loaded - started, 3), "first_clip_s": round(done - loaded, 3)}


# --- the decode paths side by side --------------------------------------------------------------


def decode_paths(scorer: Scorer, originals: list[Path], seconds: float) -> dict[str, Any]:
    """Each path's pixels and scores against exact, and what each costs per frame, on ``originals``.

    ``scorer`` should run in fp32, so that the score changes are the decode path's alone.

    exact and fast: ms per frame on one CPU thread (a decoding worker's work). gpu and hardware:
    images/s of DeviceDecoder alone with each JPEG engine (decode, resize and crop of a whole batch
    on the device) and the workers' share (reading and checking bytes), ms per frame on one thread;
    ``resize``: the device's resize alone, the exact separable one against torch's antialiased kernel.
    On the CPU (smoke) the device decoder's code runs there, with libjpeg-turbo for both engines' JPEGs.
    """
    pp = scorer.preprocess
    out: dict[str, Any] = {}
    exact_pixels = torch.from_numpy(np.stack([load_frame(path, pp) for path in originals]))
    exact_scores = scorer.score_pixels(exact_pixels)
    candidates = {"fast": torch.from_numpy(np.stack([load_frame_fast(path, pp) for path in originals]))}
    for name, engine in _engines(scorer.device).items():
        candidates[name] = DeviceDecoder(pp, scorer.device, engine=engine)(_packed(originals, pp))["pixels"].cpu()
    for name, pixels in candidates.items():
        delta = (pixels.int() - exact_pixels.int()).abs()
        out[name] = {
            "pixels_max_delta": int(delta.max()),
            "pixels_mean_delta": round(float(delta.float().mean()), 5),
            "max_score_delta_vs_exact_fp32": float((scorer.score_pixels(pixels) - exact_scores).abs().max()),
        }
    out.update(_cpu_costs(originals, pp, out))
    batch = _packed([originals[i % len(originals)] for i in range(scorer.forward_batch)], pp)
    for name, engine in _engines(scorer.device).items():
        decoder = DeviceDecoder(pp, scorer.device, engine=engine)
        out[name]["decoder_images_per_s"] = sig(_rate(lambda decoder=decoder: decoder(batch), scorer, seconds))
    out["resize"] = _resize_rates(originals, scorer, seconds)
    return out


def _engines(device: torch.device) -> dict[str, str]:
    """The device decode paths that can run here, and their JPEG engines (on the CPU: nvjpeg's code, for smoke)."""
    if device.type != "cuda":
        return {"gpu": "nvjpeg"}
    engines = {}
    if gpu_decode_error(device) is None:
        engines["gpu"] = "nvjpeg"
    if hardware_decode_error(device) is None:
        engines["hardware"] = "hardware"
    return engines


def _cpu_costs(originals: list[Path], pp: Any, out: dict[str, Any]) -> dict[str, Any]:
    """ms per frame on one CPU thread: exact's and fast's whole work, and the device paths' workers' share."""
    loaders = {"exact": load_frame, "fast": load_frame_fast, "worker_share": frame_for_device}
    costs: dict[str, Any] = {}
    with torch_threads(1):
        for name, load in loaders.items():
            started = time.perf_counter()
            for path in originals:
                load(path, pp)
            costs[name] = round(1000 * (time.perf_counter() - started) / len(originals), 3)
    out.setdefault("exact", {})["cpu_ms_per_frame"] = costs["exact"]
    out["fast"]["cpu_ms_per_frame"] = costs["fast"]
    return {"device_paths_worker_ms_per_frame": costs["worker_share"]}


def _rate(step: Callable[[], Any], scorer: Scorer, seconds: float) -> float:
    """Images/s of ``step`` (one forward batch's worth of images), after one warm-up call."""
    step()
    sync(scorer.device)
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        step()
        calls += 1
    sync(scorer.device)
    return calls * scorer.forward_batch / (time.perf_counter() - started)


def _resize_rates(originals: list[Path], scorer: Scorer, seconds: float) -> dict[str, float]:
    """Images/s of the device's resize and crop alone, on a batch of decoded full-size frames already there."""
    from torchvision.io import decode_image

    pp = scorer.preprocess
    frames = [decode_image(str(originals[i % len(originals)])) for i in range(scorer.forward_batch)]
    images = torch.stack(frames).to(scorer.device)
    height, width = resized_size(images.shape[-1], images.shape[-2], pp)[::-1]

    def antialiased() -> torch.Tensor:  # the resize the device paths used before the exact one
        resized = F.interpolate(images.float(), size=(height, width), mode="bicubic", antialias=True)
        return resized.clamp_(0, 255).round_().to(torch.uint8)

    return {
        "exact_separable_images_per_s": sig(_rate(lambda: resize_crop_exact(images, pp), scorer, seconds)),
        "torch_antialiased_images_per_s": sig(_rate(antialiased, scorer, seconds)),
    }


def _packed(paths: list[Path], pp: Any) -> dict[str, Any]:
    """One sample's frames as a decoding worker hands them over on the device paths."""
    frames = [frame_for_device(path, pp) for path in paths]
    return {"batch": 0, "seqs": [0], "counts": [len(frames)], "errors": [None], **pack_for_device(frames, pp)}


# --- end to end --------------------------------------------------------------------------------


def end_to_end(scorer: Scorer, source: Path, config: ScoringConfig, clips: int) -> dict[str, float | None]:
    """Images/s of a whole run (JSONL in, decode, score, JSONL out), and after its first record (steady state).

    The whole run includes starting the decoding workers and waiting for the first batch, which a
    long shard amortises; the steady rate leaves them out.
    """
    first: list[float] = []
    later = [0]

    def timed(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for record in records:
            if first:
                later[0] += len(record["video_clips"]["clips"])
            else:
                first.append(time.perf_counter())
            yield record

    out = Path(config.figure_root).parent / "out.jsonl"
    sync(scorer.device)
    started = time.perf_counter()
    stats = score_records(
        JsonlSource(source), config, lambda records: write_jsonl(out, timed(records)), load_scorer=lambda _: scorer
    )
    sync(scorer.device)
    ended = time.perf_counter()
    assert stats is not None and stats.scored == stats.clips == clips, stats
    steady = later[0] * FRAMES_PER_CLIP / (ended - first[0]) if later[0] and ended > first[0] else None
    return {
        "images_per_s": sig(clips * FRAMES_PER_CLIP / (ended - started)),
        "images_per_s_after_first_record": sig(steady) if steady else None,
        "seconds": round(ended - started, 2),
    }


def end_to_end_all(
    scorer: Scorer, root: Path, args: argparse.Namespace, ceiling: float, budget: Budget
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for width, height in SIZES:
        folder = root / f"{width}x{height}"
        distinct = min(args.distinct_frames, args.clips * FRAMES_PER_CLIP)
        source = make_clips(folder, args.clips, width, height, distinct=distinct)
        base = ScoringConfig(
            figure_root=str(folder / "frames"),
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=str(scorer.device),
        )
        out[f"{width}x{height}"] = runs = {}
        for decode in DECODES:
            try:
                resolve_decode(decode, scorer.device)
            except ConfigError as err:
                runs[decode] = {"skipped": str(err)}
                continue
            if not budget.allows(30):
                runs[decode] = {"skipped": "over the time budget"}
                continue
            config = base.replace(decode=decode)
            result = guarded(lambda config=config, source=source: end_to_end(scorer, source, config, args.clips))
            if "images_per_s" in result:
                result["ratio_to_ceiling"] = sig(result["images_per_s"] / ceiling, 3)
            runs[decode] = result
    return out


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and a few frames (runs on the CPU)")
    parser.add_argument("--clips", type=int, default=None, help="clips per end-to-end run (default 4096; smoke 4)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch (default 64; smoke 2)")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="decoding workers (default: CPUs - 2, at most 14; smoke 0)",
    )
    parser.add_argument("--distinct-frames", type=int, default=64, help="JPEGs encoded per size (the rest are links)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="seconds per model-only timing (default 3; smoke 0)"
    )
    parser.add_argument(
        "--videos", type=int, default=None, help="whole videos decoded per video path (default 64; smoke 2)"
    )
    parser.add_argument(
        "--deviations",
        action="store_true",
        help="only each precision's largest score change from fp32 on real frames, ViT-L/14 on any device (no timing)",
    )
    parser.add_argument("--head", type=Path, default=None, help="an aesthetic head file (default: random weights)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip optional sections past this many seconds")
    args = parser.parse_args()
    smoke = args.smoke
    args.clips = args.clips or (4 if smoke else 4096)
    args.batch_size = args.batch_size or (2 if smoke else 64)
    if args.num_workers is None:
        args.num_workers = 0 if smoke else max(1, min(14, (os.cpu_count() or 2) - 2))
    seconds = args.seconds if args.seconds is not None else (0.0 if smoke else 3.0)
    args.videos = args.videos or (2 if smoke else 64)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    budget = Budget(args.budget_s)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.deviations:
        print(json.dumps(deviations(device, smoke, args.head)), flush=True)
        return 0
    if not cuda and not smoke:
        parser.error(
            f"this run would time ViT-L/14 on {device}, which takes hours: run it on a GPU, add --smoke for a "
            "quick check that the script works, or use bench/scoring.py for CPU figures"
        )
    result: dict[str, Any] = {
        "gpu": None,
        "peak_gpu_memory_gib": None,
        "device": str(device),
        "model": "tiny (smoke)" if smoke else "ViT-L-14 (random weights)",
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "clips": args.clips,
        "frames_per_clip": FRAMES_PER_CLIP,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec, head = save_model(root / "model", smoke, args.head)
        config = ScoringConfig(
            clip_model=spec, mlp_checkpoint=str(head), batch_size=args.batch_size, device=str(device), decode="exact"
        )
        scorer, startup = time_to_first_score(config, _first_clip(root / "first"), device)
        result["time_to_first_score_s"] = round(startup["load_s"] + startup["first_clip_s"], 3)
        result["time_to_first_score"] = startup
        if cuda:
            result["gpu"] = torch.cuda.get_device_name(device)
            torch.cuda.reset_peak_memory_stats(device)
        per_batch = forward_batch_for(config, device)
        bench_pixels = torch.randint(0, 256, (per_batch, 224, 224, 3), dtype=torch.uint8, device=device)
        ceiling = images_per_s(scorer, bench_pixels, seconds)
        result["ceiling_images_per_s"] = sig(ceiling)
        result["ceiling_precision"] = scorer.precision
        result["default_decode"] = resolve_decode("auto", device)

        result["end_to_end"] = end_to_end_all(scorer, root / "e2e", args, ceiling, budget)
        if cuda:
            result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        fastest = result["end_to_end"]["1280x720"].get(result["default_decode"], {}).get("images_per_s") or max(
            run.get("images_per_s", 0) for run in result["end_to_end"]["1280x720"].values()
        )
        # load <= 5% of a shard's time: load_s <= 0.05 * (load_s + clips * 3 / images_per_s)
        load_s = result["time_to_first_score_s"]
        result["min_chunk_clips_for_5pct_load"] = int(np.ceil(19 * load_s * fastest / FRAMES_PER_CLIP))

        real_paths = sorted((root / "e2e" / "1280x720" / "originals").glob("*.jpg"))[: max(per_batch, 8)]
        real = torch.from_numpy(np.stack([load_frame(path, scorer.preprocess) for path in real_paths])).to(device)
        variants = Variants(scorer, spec)
        sections: dict[str, tuple[float, Callable[[], Any]]] = {
            "decode_paths": (30, lambda: _decode_paths_by_size(variants.make("fp32"), root / "e2e", seconds)),
            "video": (30, lambda: video_decoding(root / "video", scorer, args.videos, args.num_workers, budget.allows)),
            "profile": (10, lambda: profile_batch(scorer, bench_pixels)),
            "attention": (45, lambda: attention_variants(scorer, bench_pixels, seconds)),
            # Last: its compiles take minutes, and each skips itself when the budget is spent.
            "tower": (60, lambda: tower_variants(variants, bench_pixels, real, seconds, budget.allows)),
        }
        for name, (needs, section) in sections.items():
            result[name] = guarded(section) if budget.allows(needs) else {"skipped": "over the time budget"}
    result["targets"] = _targets(result)
    result["budget_left_s"] = round(budget.left(), 1)
    print(json.dumps(result), flush=True)
    return 0


def deviations(device: torch.device, smoke: bool, head_file: Path | None, frames: int = 16) -> dict[str, Any]:
    """Each precision's largest score change from fp32 on ``frames`` 720p JPEG frames, without timing.

    What FP8 and bf16 cost in score on any machine (on the CPU through torch's own kernels, the
    same arithmetic up to the accumulation order). With random weights this bounds the arithmetic only.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec, head = save_model(root / "model", smoke, head_file)
        config = ScoringConfig(clip_model=spec, mlp_checkpoint=str(head), device=str(device), precision="fp32")
        scorer = Scorer.load(config, device)
        make_clips(root / "frames", max(1, frames // FRAMES_PER_CLIP), 1280, 720, distinct=frames)
        paths = sorted((root / "frames" / "originals").glob("*.jpg"))
        real = torch.from_numpy(np.stack([load_frame(path, scorer.preprocess) for path in paths])).to(device)
        variants = Variants(scorer, spec)
        reference = scorer.score_pixels(real)
        out: dict[str, Any] = {
            "device": str(device),
            "model": "tiny (smoke)" if smoke else "ViT-L-14 (random weights)",
            "head": "random" if head_file is None else head_file.name,
            "frames": len(paths),
            "score_spread_fp32": float(reference.max() - reference.min()),
            "versions": versions(),
        }
        for name in ("bf16", "fp8"):
            scores = guarded(lambda name=name: variants.make(name).score_pixels(real))
            out[name] = scores if isinstance(scores, dict) else float((scores - reference).abs().max())
        return out


def versions() -> dict[str, str | None]:
    """The card's driver and the versions of everything the figures depend on (None: not installed)."""
    from importlib import metadata

    found: dict[str, str | None] = {"python": sys.version.split()[0], "torch": torch.__version__}
    for package in ("torchvision", "open_clip_torch", "av", "pillow", "nvidia-nvimgcodec-cu13", "PyNvVideoCodec"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    if torch.cuda.is_available():
        found["cuda"] = torch.version.cuda
        found["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        with contextlib.suppress(Exception):  # nvidia-smi is the driver's; a machine without it still benchmarks
            found["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout.strip()
    return found


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 20's three figures, from this run: the default path's end-to-end rate at 720p over the whole
    run, its ratio to the default tower's ceiling, and that ceiling against bf16 eager measured beside it."""
    run = result.get("end_to_end", {}).get("1280x720", {}).get(result.get("default_decode"), {})
    tower = result.get("tower", {})
    eager = tower.get("bf16", {}).get("images_per_s") if isinstance(tower, dict) else None
    return {
        "end_to_end_images_per_s": run.get("images_per_s"),
        "end_to_end_ratio_to_ceiling": run.get("ratio_to_ceiling"),
        "ceiling_vs_bf16_eager": sig(result["ceiling_images_per_s"] / eager, 3) if eager else None,
    }


def _decode_paths_by_size(scorer: Scorer, root: Path, seconds: float) -> dict[str, Any]:
    return {
        f"{width}x{height}": decode_paths(
            scorer, sorted((root / f"{width}x{height}" / "originals").glob("*.jpg")), seconds
        )
        for width, height in SIZES
    }


def _first_clip(folder: Path) -> list[Path]:
    """The 3 frames (1280x720) of the clip scored first when measuring start-up."""
    make_clips(folder, 1, 1280, 720, distinct=FRAMES_PER_CLIP)
    return sorted((folder / "frames").rglob("*.jpg"))


if __name__ == "__main__":
    sys.exit(main())
