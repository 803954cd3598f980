"""The GPU benchmark: can the decode paths keep one GPU busy with ViT-L/14? One run, one JSON object.

    python bench/gpu.py                         # on a GPU: ViT-L/14 (random weights), at most about 8 minutes
    python bench/gpu.py --smoke --device cpu    # a tiny model and a few frames: checks that it runs

Prints (stdout, one line) the GPU's name; the model-only ceiling (images/s of the scorer on pixels
already on the device, in the tower's shipped precision: bf16 on GPUs); end-to-end images/s (JSONL in, JPEG frames
decoded, JSONL out, through runner.score_records) on the exact, fast and gpu decode paths at
1280x720 and 1920x1080 (JPEGs of quality 90 made here), each with its ratio to the ceiling; the
time to first score from a local checkpoint through the project's loader, and the smallest shard
(chunk_size) for which that start-up is at most 5% of the shard's time; the peak GPU memory of
the end-to-end runs; each decode path's pixel and score deviation from exact and its cost per
frame; precision variants (bf16, fp16, fp32, tf32, fp32 weights under bf16 autocast, bf16 under
torch.compile: speed and max score deviation from fp32; the head always fp32); attention kernels
(SDPA backends); channels-last.

Sections past the time budget (--budget-s) are skipped and say so, so that the run fits its slot.
Weights are random: they cost what real ones cost; the scores only serve to compare variants.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from clip_data import FRAMES_PER_CLIP, SIZES, frame_paths, smooth_picture, write_records
from PIL import Image

from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import (
    DeviceDecoder,
    frame_for_device,
    load_frame_fast,
    pack_for_device,
    resolve_decode,
)
from video_aesthetics.errors import ConfigError
from video_aesthetics.frames import load_frame
from video_aesthetics.jsonl import JsonlSource, write_jsonl
from video_aesthetics.runner import score_records
from video_aesthetics.scoring import Scorer, forward_batch_for, resolve_device, torch_threads

DECODES = ("exact", "fast", "gpu")
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


def sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits: images/s span 0.5 (ViT-L on a CPU) to thousands."""
    return float(f"{value:.{digits}g}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def save_model(folder: Path, smoke: bool) -> tuple[str, Path]:
    """A random CLIP saved where the project's loader reads it; returns (clip_model spec, head file)."""
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


# --- model-only timings ------------------------------------------------------------------------


def images_per_s(scorer: Scorer, pixels: torch.Tensor, min_seconds: float, min_calls: int = 3) -> float:
    """Images/s of scorer.score_pixels on ``pixels`` (already where the model is), after two warm-up calls."""
    for _ in range(2):
        scorer.score_pixels(pixels)
    sync(scorer.device)
    calls, started = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < min_seconds:
        scorer.score_pixels(pixels)
        calls += 1
    sync(scorer.device)
    return calls * pixels.shape[0] / (time.perf_counter() - started)


def guarded(section: Callable[[], Any]) -> Any:
    """A section's result, or the error that stopped it: one unsupported variant must not end the run."""
    try:
        return section()
    except Exception as err:  # noqa: BLE001 - reported in the JSON, never hidden
        log.warning("section failed: %s: %s", type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {str(err)[:300]}"}


class AutocastTower(torch.nn.Module):
    """fp32 weights under bf16 autocast: how the tower ran before it was held in bf16, for comparison."""

    def __init__(self, tower: torch.nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.tower(x).float()


class Variants:
    """Scorers for each way of running the tower, made from one fp32 copy of the model kept on the CPU."""

    def __init__(self, scorer: Scorer, spec: str) -> None:
        from video_aesthetics.clip_loader import load_clip

        self.scorer = scorer
        self.model = load_clip(spec).model.visual

    def make(self, name: str) -> Scorer:
        """``name``: bf16 / fp16 / fp32 (weights and activations in that type), tf32 (fp32 with TF32
        matrix units), autocast_bf16 (fp32 weights under bf16 autocast)."""
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        tower = copy.deepcopy(self.model)
        if name == "autocast_bf16":
            tower = AutocastTower(tower)
        base = self.scorer
        return Scorer(
            tower,
            base.head,
            base.preprocess,
            base.device,
            base.identity,
            base.forward_batch,
            dtype=dtypes.get(name, torch.float32),
        )

    @contextlib.contextmanager
    def tf32(self, allowed: bool) -> Iterator[None]:
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def precision_variants(
    variants: Variants, pixels: torch.Tensor, real: torch.Tensor, seconds: float, budget: Budget, compile_wanted: bool
) -> dict:
    """Model-only images/s of each precision and its largest score change from fp32 on real frames;
    "bf16" is the shipped default; "bf16+compile" is it under torch.compile (the first call compiles)."""
    reference = variants.make("fp32").score_pixels(real)
    out: dict[str, Any] = {"score_spread_fp32": float(reference.max() - reference.min())}
    names = ["bf16", "fp16", "fp32", "autocast_bf16"]
    if variants.scorer.device.type == "cuda":
        names.append("tf32")
    if compile_wanted:
        names.append("bf16+compile")
    for name in names:
        if not budget.allows(90 if "compile" in name else 15):
            out[name] = {"skipped": "over the time budget"}
            continue

        def measure(name: str = name) -> dict[str, float]:
            base, _, compiled = name.partition("+")
            scorer = variants.make("fp32" if base == "tf32" else base)
            if compiled:
                scorer.tower = torch.compile(scorer.tower)
            with variants.tf32(base == "tf32"):
                started = time.perf_counter()
                scores = scorer.score_pixels(real)
                first_call_s = time.perf_counter() - started
                speed = images_per_s(scorer, pixels, seconds)
            return {
                "images_per_s": sig(speed),
                "max_score_delta_vs_fp32": float((scores - reference).abs().max()),
                "first_call_s": round(first_call_s, 2),
            }

        out[name] = guarded(measure)
    return out


def attention_variants(scorer: Scorer, pixels: torch.Tensor, seconds: float) -> dict:
    """Model-only images/s with each scaled-dot-product-attention backend forced (open_clip's attention calls SDPA)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}
    if scorer.device.type == "cuda":  # kernels that exist on CUDA only
        backends.update(efficient=SDPBackend.EFFICIENT_ATTENTION, cudnn=SDPBackend.CUDNN_ATTENTION)
    out: dict[str, Any] = {"default": sig(images_per_s(scorer, pixels, seconds))}
    for name, backend in backends.items():

        def measure(backend: SDPBackend = backend) -> float:
            with sdpa_kernel(backend):
                return sig(images_per_s(scorer, pixels, seconds))

        out[name] = guarded(measure)
    return {"precision": str(scorer.dtype), "images_per_s": out}


def channels_last_variant(scorer: Scorer, pixels: torch.Tensor, seconds: float) -> dict:
    default = images_per_s(scorer, pixels, seconds)
    scorer.tower.to(memory_format=torch.channels_last)
    try:
        faster = images_per_s(scorer, pixels, seconds)
    finally:
        scorer.tower.to(memory_format=torch.contiguous_format)
    return {"images_per_s": sig(faster), "default_images_per_s": sig(default)}


# --- the decode paths side by side --------------------------------------------------------------


def decode_paths(scorer: Scorer, originals: list[Path], seconds: float) -> dict[str, Any]:
    """Each path's pixels and scores against exact, and what each costs per frame, on ``originals``.

    ``scorer`` should run in fp32, so that the score changes are the decode path's alone.

    exact and fast: ms per frame on one CPU thread (a decoding worker's work). gpu: images/s of
    DeviceDecoder alone (nvJPEG decode, resize and crop of a whole batch on the device) and the
    workers' share (reading and checking bytes), ms per frame on one thread.
    """
    pp = scorer.preprocess
    loaders = {"exact": load_frame, "fast": load_frame_fast}
    out: dict[str, Any] = {}
    exact_pixels = torch.from_numpy(np.stack([load_frame(path, pp) for path in originals]))
    exact_scores = scorer.score_pixels(exact_pixels)
    candidates = {"fast": torch.from_numpy(np.stack([load_frame_fast(path, pp) for path in originals]))}
    if scorer.device.type == "cuda":
        candidates["gpu"] = _device_pixels(originals, pp, scorer.device)["pixels"].cpu()
    for name, pixels in candidates.items():
        delta = (pixels.int() - exact_pixels.int()).abs()
        out[name] = {
            "pixels_max_delta": int(delta.max()),
            "pixels_mean_delta": round(float(delta.float().mean()), 5),
            "max_score_delta_vs_exact_fp32": float((scorer.score_pixels(pixels) - exact_scores).abs().max()),
        }
    with torch_threads(1):
        for name, load in loaders.items():
            started = time.perf_counter()
            for path in originals:
                load(path, pp)
            out.setdefault(name, {})["cpu_ms_per_frame"] = round(
                1000 * (time.perf_counter() - started) / len(originals), 2
            )
        started = time.perf_counter()
        for path in originals:
            frame_for_device(path, pp)
        out.setdefault("gpu", {})["worker_ms_per_frame"] = round(
            1000 * (time.perf_counter() - started) / len(originals), 3
        )
    if scorer.device.type == "cuda":
        decoder = DeviceDecoder(pp, scorer.device)
        batch = _packed([originals[i % len(originals)] for i in range(scorer.forward_batch)], pp)
        decoder(batch)  # warm-up: nvJPEG's buffers
        calls, started = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - started < seconds:
            decoder(batch)
            calls += 1
        out["gpu"]["decoder_images_per_s"] = sig(calls * scorer.forward_batch / (time.perf_counter() - started))
    return out


def _packed(paths: list[Path], pp: Any) -> dict[str, Any]:
    """One sample's frames as a decoding worker hands them over on the gpu path."""
    frames = [frame_for_device(path, pp) for path in paths]
    return {"batch": 0, "seqs": [0], "counts": [len(frames)], "errors": [None], **pack_for_device(frames, pp)}


def _device_pixels(paths: list[Path], pp: Any, device: torch.device) -> dict[str, Any]:
    return DeviceDecoder(pp, device)(_packed(paths, pp))


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
    parser.add_argument("--compile", dest="compile", action="store_true", default=None, help="time torch.compile")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip optional sections past this many seconds")
    args = parser.parse_args()
    smoke = args.smoke
    args.clips = args.clips or (4 if smoke else 4096)
    args.batch_size = args.batch_size or (2 if smoke else 64)
    if args.num_workers is None:
        args.num_workers = 0 if smoke else max(1, min(14, (os.cpu_count() or 2) - 2))
    seconds = args.seconds if args.seconds is not None else (0.0 if smoke else 3.0)
    compile_wanted = args.compile if args.compile is not None else not smoke
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    budget = Budget(args.budget_s)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
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
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "clips": args.clips,
        "frames_per_clip": FRAMES_PER_CLIP,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec, head = save_model(root / "model", smoke)
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
        result["ceiling_precision"] = str(scorer.dtype)

        result["end_to_end"] = end_to_end_all(scorer, root / "e2e", args, ceiling, budget)
        if cuda:
            result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        fastest = result["end_to_end"]["1280x720"].get("gpu", {}).get("images_per_s") or max(
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
            "precision": (
                60,
                lambda: precision_variants(variants, bench_pixels, real, seconds, budget, compile_wanted),
            ),
            "attention": (45, lambda: attention_variants(scorer, bench_pixels, seconds)),
            "channels_last": (15, lambda: channels_last_variant(scorer, bench_pixels, seconds)),
        }
        for name, (needs, section) in sections.items():
            result[name] = guarded(section) if budget.allows(needs) else {"skipped": "over the time budget"}
    result["budget_left_s"] = round(budget.left(), 1)
    print(json.dumps(result), flush=True)
    return 0


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
