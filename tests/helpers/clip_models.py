"""Tiny CLIP models and aesthetic heads with random, seeded weights, and the file formats they ship in.

The CLIP ViT-L/14 weights cannot be had on test machines, so the tests build a ViT with the same
768-wide output at a fraction of the size and save it in every layout the loaders accept.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import open_clip
import torch

from video_aesthetics.head import AestheticHead

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_config(embed_dim: int = 768) -> dict[str, Any]:
    """An open_clip model_cfg: a 2-layer ViT-B/32-shaped tower, 64 wide, with one 64-wide head per layer.

    Head width 64 and QuickGELU because that is what open_clip assumes when it rebuilds a model
    from an OpenAI-format state dict (heads = width // 64), so every format rebuilds the same model.
    """
    return {
        "embed_dim": embed_dim,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 64, "layers": 2, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    }


def build_tiny_clip(seed: int = 0, embed_dim: int = 768) -> open_clip.CLIP:
    """A tiny open_clip CLIP with random weights drawn from ``seed``, in eval mode."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = open_clip.CLIP(**tiny_clip_config(embed_dim))
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def save_open_clip_dir(
    model: torch.nn.Module,
    cfg: dict[str, Any],
    directory: Path,
    *,
    safetensors: bool = True,
    preprocess_cfg: dict[str, Any] | None = None,
) -> Path:
    """``directory`` laid out as open_clip's hub repos: open_clip_config.json and the weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    preprocess = preprocess_cfg or {
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2)
    )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(directory / "open_clip_model.safetensors"))
    else:
        torch.save(state, directory / "open_clip_pytorch_model.bin")
    return directory


def openai_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under OpenAI's key names (open_clip's CLIP keeps them), without open_clip's extras."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.pop("attn_mask", None)  # a non-persistent buffer in open_clip; OpenAI's checkpoints have none
    return state


def save_openai_state_dict(model: torch.nn.Module, path: Path) -> Path:
    """An OpenAI-format state dict saved with torch.save."""
    torch.save(openai_state_dict(model), path)
    return Path(path)


def save_openai_torchscript(model: torch.nn.Module, path: Path) -> Path:
    """A TorchScript archive like OpenAI's released ViT-L-14.pt: its state_dict has OpenAI's keys.

    Only encode_image is traced; the text tower's parameters still travel with the module tree.
    OpenAI's archives also hold an ``input_resolution`` entry, which open_clip drops when loading.
    """
    module = copy.deepcopy(model).eval()
    del module._buffers["attn_mask"]
    module.register_buffer("input_resolution", torch.tensor(module.visual.image_size[0]))
    size = module.visual.image_size[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(module, {"encode_image": (torch.zeros(1, 3, size, size),)})
        traced.save(str(path))
    return Path(path)


def build_head(input_dim: int = 768, seed: int = 0) -> AestheticHead:
    """An aesthetic head in LAION's layout with random weights drawn from ``seed``, in eval mode."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        head = AestheticHead(input_dim)
    finally:
        torch.random.set_rng_state(generator_state)
    return head.eval()


def save_head(head: torch.nn.Module, path: Path) -> Path:
    """The head's state dict as .safetensors or, for any other suffix, torch.save."""
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
