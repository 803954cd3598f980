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

import torch
from torch import nn

from video_aesthetics.errors import WeightsError
from video_aesthetics.files import sha256_file
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
