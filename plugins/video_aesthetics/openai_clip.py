"""OpenAI's CLIP checkpoints (the seed's ViT-L-14.pt): read as TorchScript or a state dict, built as open_clip models.

The architecture is recognised from the tensors' shapes, so a renamed file still reports the
model it holds; the weights are loaded in fp32, as stored.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import build_model_from_openai_state_dict

from video_aesthetics.errors import WeightsError
from video_aesthetics.frames import PreprocessConfig

# OpenAI's own names (the openai-clip package's, which the seed used) and their open_clip architectures.
OPENAI_NAMES = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
}
_OPENAI_STATE_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def load_openai_file(path: Path) -> tuple[torch.nn.Module, str]:
    """OpenAI's TorchScript archive or an OpenAI-format state dict; the architecture comes from its tensors.

    Like open_clip.load_openai_model, but the fp32 weights are loaded again after the build:
    build_model_from_openai_state_dict loads them into fp16 parameters, which rounds fp32 checkpoints.
    """
    state = _read_openai_state(path)
    try:
        model = build_model_from_openai_state_dict(dict(state), cast_dtype=None)
        model.float()
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError, AssertionError, AttributeError) as exc:
        raise WeightsError(
            f"{path} is not an OpenAI CLIP checkpoint ({type(exc).__name__}: {exc}); for open_clip weights "
            "write clip_model as ARCHITECTURE:/path/to/weights (e.g. ViT-L-14:/models/open_clip_model.safetensors)"
        ) from exc
    open_clip.set_model_preprocess_cfg(model, _openai_preprocess(model))
    return model, _openai_architecture(state)


def _read_openai_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            state: Any = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling and zip errors come in many types
            raise WeightsError(
                f"cannot read {path} ({type(exc).__name__}: {exc}): clip_model must be OpenAI's TorchScript "
                "checkpoint (like ViT-L-14.pt) or a tensors-only state dict"
            ) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a CLIP state dict")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    for key in _OPENAI_STATE_EXTRAS:
        state.pop(key, None)
    return state


def _openai_preprocess(model: torch.nn.Module) -> dict[str, Any]:
    defaults = PreprocessConfig()
    # open_clip's tower is untyped; Module.__getattr__ would type it Tensor | Module.
    visual: Any = model.visual
    return {
        "size": visual.image_size,
        "mode": "RGB",
        "mean": open_clip.OPENAI_DATASET_MEAN,
        "std": open_clip.OPENAI_DATASET_STD,
        "interpolation": defaults.interpolation,
        "resize_mode": defaults.resize_mode,
        "fill_color": 0,
    }


def _openai_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """The OpenAI architecture whose shapes the state dict has, or "custom"."""
    signature = _state_signature(state)
    for name in OPENAI_NAMES.values():
        cfg = open_clip.get_model_config(name)
        if cfg is not None and _config_signature(cfg) == signature:
            return name
    return "custom"


def _state_signature(state: Mapping[str, torch.Tensor]) -> tuple[Any, ...]:
    if "visual.proj" in state:
        width, _, patch, _ = state["visual.conv1.weight"].shape
        layers = len([k for k in state if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        image = patch * round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision: tuple[Any, ...] = (layers, int(width), int(patch), int(image))
    else:
        layers_per_stage = tuple(
            len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)
        )
        vision = (layers_per_stage, int(state["visual.layer1.0.conv1.weight"].shape[0]))
    text_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    return int(state["text_projection"].shape[1]), vision, int(state["ln_final.weight"].shape[0]), text_layers


def _config_signature(cfg: Mapping[str, Any]) -> tuple[Any, ...]:
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    if v.get("patch_size"):
        vision: tuple[Any, ...] = (v["layers"], v["width"], v["patch_size"], v["image_size"])
    else:
        vision = (tuple(v["layers"]), v["width"])
    return cfg["embed_dim"], vision, t["width"], t["layers"]
