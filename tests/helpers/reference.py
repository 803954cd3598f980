"""An independent computation of a clip's score, written out step by step for tests to compare with.

It shares nothing with the library's scoring path: open_clip's own preprocessing transform on PIL
images, the model built from its config file, and the head applied as five explicit affine maps.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image


def load_reference_model(clip_dir: Path) -> torch.nn.Module:
    import open_clip
    from safetensors.torch import load_file

    config = json.loads((clip_dir / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**config["model_cfg"])
    weights = clip_dir / "open_clip_model.safetensors"
    state = (
        load_file(weights)
        if weights.exists()
        else torch.load(clip_dir / "open_clip_pytorch_model.bin", weights_only=True)
    )
    model.load_state_dict(state)
    return model.eval()


def reference_frame_scores(model: torch.nn.Module, head_path: Path, frames: list[Path]) -> list[float]:
    import open_clip

    transform = open_clip.image_transform(224, is_train=False)
    head = torch.load(head_path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        images = torch.stack([transform(Image.open(path)) for path in frames])
        x = model.encode_image(images)
        x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        for layer in (0, 2, 4, 6, 7):
            x = x @ head[f"layers.{layer}.weight"].T + head[f"layers.{layer}.bias"]
    return x.squeeze(-1).tolist()


def reference_clip_score(model: torch.nn.Module, head_path: Path, frames: list[Path], reduction: str = "mean") -> float:
    scores = torch.tensor(reference_frame_scores(model, head_path, frames), dtype=torch.float64)
    return float({"mean": scores.mean, "min": scores.min, "max": scores.max}[reduction]())
