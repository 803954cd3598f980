"""LAION's aesthetic head (improved-aesthetic-predictor) and a strict loader for its checkpoints.

The loader refuses anything that is not exactly the head's layout: the seed loaded a module
named ``net`` with strict=False, so none of the weights loaded and every score came from a random head.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from video_aesthetics.errors import WeightsError
from video_aesthetics.files import sha256_file
from video_aesthetics.parameters import REDUCTIONS
from video_aesthetics.provenance import OFFICIAL_HEAD_SHA256
from video_aesthetics.settings import cache_dir
from video_aesthetics.weights_cache import fetch

log = logging.getLogger(__name__)

OFFICIAL_HEAD_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth"
)
OFFICIAL_HEAD_FILENAME = "sac+logos+ava1-l14-linearMSE.pth"

# (index in layers, output width); the first layer's input width is the embedding width D.
_LINEARS = ((0, 1024), (2, 128), (4, 64), (6, 16), (7, 1))


class AestheticHead(nn.Module):
    """The layout of improved-aesthetic-predictor's MLP, with its ReLUs left out as in the original."""

    def __init__(self, input_dim: int = 768) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass
class LoadedHead:
    module: AestheticHead
    input_dim: int
    identity: dict[str, Any]


@dataclass(frozen=True)
class FoldedHead:
    """The head folded into one affine map, ``score = embedding . weight + bias``, in float64."""

    weight: np.ndarray
    bias: float

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])


def fold_head(module: nn.Module) -> FoldedHead:
    """``module`` as one weight vector and a bias, composed layer by layer in float64.

    Dropout is the identity in eval mode and there is no activation between the layers, so the head
    is exactly affine. The float32 weights are exact in float64; composing them there rounds at
    about 1e-16 of the result, far below what a float32 score holds.
    """
    layers = list(getattr(module, "layers", []))
    if not layers or not all(isinstance(layer, nn.Linear | nn.Dropout) for layer in layers):
        raise TypeError(f"only a head of linear and dropout layers (AestheticHead) folds, not {type(module).__name__}")
    linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
    weights = [layer.weight.detach().cpu().double().numpy() for layer in linears]
    biases = [layer.bias.detach().cpu().double().numpy() for layer in linears]
    weight = weights[-1][0]
    for matrix in reversed(weights[:-1]):
        weight = weight @ matrix
    bias = biases[0]
    for matrix, offset in zip(weights[1:], biases[1:], strict=True):
        bias = matrix @ bias + offset
    return FoldedHead(np.ascontiguousarray(weight), float(bias[0]))


# Rows per step of head_scores: its float64 products (1.5 MB at 768 wide) stay in the CPU's cache,
# where one large temporary would cost a page fault per 4 KB on every call.
_HEAD_BLOCK_ROWS = 256


def head_scores(head: FoldedHead, embeddings: np.ndarray) -> np.ndarray:
    """Each row's score (float32): the products with the folded weight summed in float64, plus the bias.

    The one place a head is applied, by scoring (whatever the device the tower ran on) and by rescore
    alike: each row is summed on its own (numpy's reduction along a row sees that row alone), so a
    row's score is the same bits whatever rows share its call, and an embedding stored in float32
    rescores to the bytes the scoring run wrote. It is within half a float32 unit of the head
    applied layer by layer in float64 (the layers in float32 were off by up to 3.5 times that).
    """
    rows = np.asarray(embeddings)
    if rows.ndim != 2 or rows.shape[1] != head.dim:
        raise ValueError(f"embeddings of shape {rows.shape} do not fit a head for {head.dim}-wide embeddings")
    count = len(rows)
    sums = np.empty(count, np.float64)
    products = np.empty((min(count, _HEAD_BLOCK_ROWS), head.dim), np.float64)
    for start in range(0, count, _HEAD_BLOCK_ROWS):
        block = rows[start : start + _HEAD_BLOCK_ROWS]
        if block.dtype == np.float16:
            # Exact either way; torch widens float16 with the CPU's vector instructions, numpy one value at a time.
            block = torch.from_numpy(np.ascontiguousarray(block)).float().numpy()
        part = products[: len(block)]
        np.multiply(block, head.weight, out=part)
        np.add.reduce(part, axis=1, out=sums[start : start + len(block)])
    sums += head.bias
    # A score past float32's range becomes inf, which the records count as a non-finite score.
    with np.errstate(over="ignore"):
        return sums.astype(np.float32)


def reduce_scores(scores: np.ndarray, counts: np.ndarray, reduction: str) -> np.ndarray:
    """Each clip's score (float32) from its frames' scores: ``counts[i]`` consecutive frames per clip, none empty.

    Scoring and rescore both reduce here. Frames are taken in order, one position at a time across
    all clips (a mean adds in float64 from the first frame to the last), so a clip's score depends on
    its own frames alone, not on the clips reduced with it.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not len(counts):
        return np.zeros(0, np.float32)
    if counts.min() < 1 or counts.sum() != len(scores):
        raise ValueError(f"frame counts {counts.tolist()[:8]}... do not split {len(scores)} frame scores")
    wide = np.asarray(scores, dtype=np.float64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    total = wide[starts]
    combine = {"mean": np.add, "min": np.minimum, "max": np.maximum}[reduction]
    for position in range(1, int(counts.max())):
        more = np.flatnonzero(counts > position)
        total[more] = combine(total[more], wide[starts[more] + position])
    if reduction == "mean":
        total /= counts
    return total.astype(np.float32)


def expected_shapes(input_dim: int) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of an AestheticHead for ``input_dim``-wide embeddings."""
    shapes: dict[str, tuple[int, ...]] = {}
    width = input_dim
    for index, out in _LINEARS:
        shapes[f"layers.{index}.weight"] = (out, width)
        shapes[f"layers.{index}.bias"] = (out,)
        width = out
    return shapes


def load_head(checkpoint: str | os.PathLike[str] | None, embed_dim: int | None = None) -> LoadedHead:
    """The head in ``checkpoint`` (None or "": the official LAION file, fetched into the cache once).

    Raises WeightsError when the file is missing, unreadable, not exactly the head's layout, or
    made for embeddings of another width than ``embed_dim`` (the CLIP model's, when given).
    """
    # "" arrives from CLI flags and Airflow params left empty: it means the default, not the current folder.
    path = _official_path() if checkpoint is None or not str(checkpoint).strip() else Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"mlp_checkpoint {str(path)!r} does not exist or is not a file: "
            "pass the path of the aesthetic head's weights (.pth/.pt/.bin/.safetensors), or leave it unset for the official one"
        )
    state = _unwrap(_read(path), path)
    input_dim = _check_layout(state, path)
    if embed_dim is not None:
        check_width(input_dim, embed_dim, path)
    module = AestheticHead(input_dim)
    module.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    module.eval().requires_grad_(False)
    if not all(torch.isfinite(p).all() for p in module.parameters()):
        raise WeightsError(f"the head in {path} has NaN or infinite weights: the file is damaged; replace it")
    digest = sha256_file(path)
    identity = {"path": str(path.resolve()), "sha256": digest, "official": digest == OFFICIAL_HEAD_SHA256}
    log.info(
        "aesthetic head %s: %d-wide input, sha256 %s%s",
        path,
        input_dim,
        digest,
        " (official LAION head)" if identity["official"] else "",
    )
    return LoadedHead(module=module, input_dim=input_dim, identity=identity)


def check_width(input_dim: int, embed_dim: int, path: Path | str) -> None:
    """Refuse a head made for embeddings of another width than the CLIP model's."""
    if embed_dim != input_dim:
        raise WeightsError(
            f"the head in {path} expects {input_dim}-wide embeddings but the CLIP model produces {embed_dim}: "
            "use a head trained on this CLIP model's embeddings, or the CLIP model the head was trained for"
        )


def _official_path() -> Path:
    dest = cache_dir() / OFFICIAL_HEAD_FILENAME
    hint = "or set VIDEO_AESTHETICS_CACHE to a folder holding it, or pass a local copy's path as mlp_checkpoint"
    return fetch(OFFICIAL_HEAD_URL, dest, OFFICIAL_HEAD_SHA256, hint=hint)


def _read(path: Path) -> Any:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        # The official file keeps its tensors on cuda:0; weights_only executes no pickled code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise WeightsError(
            f"cannot read the head checkpoint {path} ({type(exc).__name__}: {exc}): "
            "it must be a tensors-only PyTorch state dict (.pth/.pt/.bin) or a .safetensors file"
        ) from exc


def _unwrap(checkpoint: Any, path: Path) -> dict[str, Any]:
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{path} holds a {type(checkpoint).__name__}, not a state dict of the aesthetic head")
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    # Checkpoints saved from DataParallel/DistributedDataParallel prefix every key with "module.".
    return {
        (key[len("module.") :] if str(key).startswith("module.") else key): value for key, value in checkpoint.items()
    }


def _check_layout(state: dict[str, Any], path: Path) -> int:
    first = state.get("layers.0.weight")
    input_dim = first.shape[1] if isinstance(first, torch.Tensor) and first.ndim == 2 else 768
    expected = expected_shapes(input_dim)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected), key=str)
    mismatched = [
        f"{key}: expected {tuple(shape)}, found {_shape(state[key])}"
        for key, shape in expected.items()
        if key in state and _shape(state[key]) != shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {_abbreviate(unexpected)}")
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        raise WeightsError(
            f"{path} is not an aesthetic head in LAION's layout (keys layers.{{0,2,4,6,7}}.{{weight,bias}}, "
            f"{input_dim}-wide input): " + "; ".join(problems)
        )
    return int(input_dim)


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _abbreviate(keys: list[Any], limit: int = 20) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"
