"""bench/gpu.py's model-only sections: each way of running the image tower, side by side on the same pixels.

A variant is a precision (bf16, fp16, fp32, tf32, autocast_bf16, fp8) and optionally how its
forward is run: ``+graph`` (one CUDA graph replayed per batch), ``+compile`` (torch.compile,
default mode), ``+autotune`` (torch.compile "max-autotune-no-cudagraphs") or ``+autotune-graphs``
(torch.compile "max-autotune", which adds CUDA graphs). Every variant is timed on the same
pixels and scored on the same real frames, against fp32.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from video_aesthetics.clip_loader import load_clip
from video_aesthetics.scoring import Scorer

log = logging.getLogger("bench.gpu")

# How each variant's forward runs, after its precision (see the module's docstring).
COMPILE_MODES = {"compile": "default", "autotune": "max-autotune-no-cudagraphs", "autotune-graphs": "max-autotune"}
# The variants timed on a GPU, cheapest first, so that a run short of time skips the slow compiles last.
GPU_VARIANTS = (
    "bf16",
    "fp32",
    "tf32",
    "fp16",
    "autocast_bf16",
    "bf16+graph",
    "fp8",
    "fp8+graph",
    "bf16+compile",
    "fp8+compile",
    "bf16+autotune",
    "bf16+autotune-graphs",
)
CPU_VARIANTS = ("bf16", "fp32", "fp16", "autocast_bf16", "fp8")
# Seconds a variant is expected to need before it starts: compiles take minutes on ViT-L/14.
_NEEDS = {"graph": 20, "compile": 90, "autotune": 240, "autotune-graphs": 240}


def sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits: images/s span 0.5 (ViT-L on a CPU) to thousands."""
    return float(f"{value:.{digits}g}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def guarded(section: Callable[[], Any]) -> Any:
    """A section's result, or the error that stopped it: one unsupported variant must not end the run."""
    try:
        return section()
    except Exception as err:  # noqa: BLE001 - reported in the JSON, never hidden
        log.warning("section failed: %s: %s", type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {str(err)[:300]}"}


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


class AutocastTower(nn.Module):
    """fp32 weights under bf16 autocast: how the tower ran before it was held in bf16, for comparison."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.tower(x).float()


class GraphedTower(nn.Module):
    """The tower's forward captured once as a CUDA graph and replayed: no kernel launches from Python per batch.

    The scorer always passes ``forward_batch`` images, so one captured shape serves every batch;
    another shape is captured anew. The capture is thread-local: the decoding thread keeps launching
    its own work on its own stream meanwhile.
    """

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: torch.Tensor | None = None
        self.static_out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph is None or self.static_in is None or self.static_in.shape != x.shape:
            self._capture(x)
        assert self.static_in is not None and self.graph is not None and self.static_out is not None
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.clone()

    def _capture(self, x: torch.Tensor) -> None:
        self.static_in = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: lazy initialisation, kernel selection
                self.tower(self.static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_out = self.tower(self.static_in)


class Variants:
    """Scorers for each variant, made from one fp32 copy of the model kept on the CPU."""

    def __init__(self, scorer: Scorer, spec: str) -> None:
        self.scorer = scorer
        self.model = load_clip(spec).model.visual

    def make(self, variant: str) -> Scorer:
        precision, _, runner = variant.partition("+")
        tower: nn.Module = copy.deepcopy(self.model)
        if precision == "autocast_bf16":
            tower = AutocastTower(tower)
        base = self.scorer
        scorer = Scorer(
            tower,
            base.head,
            base.preprocess,
            base.device,
            base.identity,
            base.forward_batch,
            precision={"autocast_bf16": "fp32", "tf32": "fp32"}.get(precision, precision),
        )
        if runner == "graph":
            scorer.tower = GraphedTower(scorer.tower)
        elif runner:
            scorer.tower = torch.compile(scorer.tower, mode=COMPILE_MODES[runner])
        return scorer


@contextlib.contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def tower_variants(
    variants: Variants, pixels: torch.Tensor, real: torch.Tensor, seconds: float, allows: Callable[[float], bool]
) -> dict[str, Any]:
    """Model-only images/s of each variant, its speed-up over bf16 eager (the shipped default) measured in
    this run, and its largest score change from fp32 on real frames; ``first_call_s`` includes compiling."""
    device = variants.scorer.device
    reference = variants.make("fp32").score_pixels(real)
    out: dict[str, Any] = {"score_spread_fp32": float(reference.max() - reference.min())}
    names = GPU_VARIANTS if device.type == "cuda" else CPU_VARIANTS
    for name in names:
        runner = name.partition("+")[2]
        if not allows(_NEEDS.get(runner, 15)):
            out[name] = {"skipped": "over the time budget"}
            continue

        def measure(name: str = name) -> dict[str, float]:
            torch.compiler.reset()  # each compiled variant compiles its own graph
            scorer = variants.make(name)
            with tf32(name.startswith("tf32")):
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
    base = out.get("bf16", {}).get("images_per_s")
    for result in out.values():
        if isinstance(result, dict) and base and "images_per_s" in result:
            result["vs_bf16_eager"] = sig(result["images_per_s"] / base, 3)
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
    return {"precision": scorer.precision, "images_per_s": out}


def profile_batch(scorer: Scorer, pixels: torch.Tensor, top: int = 15) -> dict[str, Any]:
    """Where one batch's time goes on the device: the kernels with the most device time, by name, in ms.

    Grouped into the model's matrix products, its attention, and everything else (layer norms,
    activations, copies), so that a missed target can say what to attack next.
    """
    from torch.profiler import ProfilerActivity, profile

    scorer.score_pixels(pixels)  # warm: no lazy initialisation in the profile
    sync(scorer.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if scorer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        scorer.score_pixels(pixels)
        sync(scorer.device)
    cuda = scorer.device.type == "cuda"
    timed = sorted(((_device_us(e, cuda), e.key) for e in prof.key_averages()), reverse=True)
    timed = [(us, key) for us, key in timed if us > 0]
    groups: dict[str, float] = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for us, key in timed:
        groups[_kernel_group(key)] += us / 1000
    return {
        "images": int(pixels.shape[0]),
        "device_ms_by_group": {k: round(v, 2) for k, v in groups.items()},
        "top_kernels_ms": {key[:90]: round(us / 1000, 3) for us, key in timed[:top]},
    }


def _device_us(event: Any, cuda: bool) -> float:
    """The time an event (a kernel on CUDA, an operator on the CPU) held the device itself, in microseconds."""
    if not cuda:
        return float(event.self_cpu_time_total)
    # Recent torch calls it the device time; older releases the CUDA time.
    return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0))


def _kernel_group(name: str) -> str:
    lowered = name.lower()
    if any(word in lowered for word in ("gemm", "matmul", "cutlass", "sm90_xmma", "scaled_mm", "addmm", "linear")):
        return "matmul"
    if any(word in lowered for word in ("flash", "attention", "fmha", "sdpa")):
        return "attention"
    return "other"
