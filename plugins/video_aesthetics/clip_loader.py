"""The CLIP image encoder: turn a ``clip_model`` string into a model with real weights and its preprocessing.

Every way open_clip offers of ending with random weights (``pretrained=None``, a directory or hub
repo without a weights file) is closed here: a model either loads with its weights or the caller
gets a WeightsError that says which file is missing and how to provide it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from video_aesthetics.clip_spec import DEFAULT_CLIP_MODEL, ClipSpec, parse_clip_spec
from video_aesthetics.errors import ConfigError, WeightsError
from video_aesthetics.files import sha256_file
from video_aesthetics.frames import PreprocessConfig
from video_aesthetics.openai_clip import load_openai_file
from video_aesthetics.provenance import DIR_WEIGHT_FILENAMES
from video_aesthetics.settings import cache_dir
from video_aesthetics.weights_cache import LOCAL_WEIGHTS_HELP, offline, offline_reason, verify

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "LoadedClip",
    "PreprocessConfig",
    "load_clip",
    "preprocess_config",
]

CONFIG_FILENAME = "open_clip_config.json"
HUB_WEIGHT_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_INTERPOLATIONS = ("bicubic", "bilinear")
_RESIZE_MODES = ("shortest", "squash", "longest")


@dataclass
class LoadedClip:
    model: torch.nn.Module
    preprocess: PreprocessConfig
    embed_dim: int
    identity: dict[str, Any] = field(default_factory=dict)


def load_clip(spec: str = DEFAULT_CLIP_MODEL) -> LoadedClip:
    """The CLIP model ``spec`` names, with its weights, in eval mode, fp32, on the CPU.

    Weights not on disk are downloaded once into cache_dir(); offline or on a failed download a
    WeightsError says what is missing and how to provide it.
    """
    parsed = parse_clip_spec(spec)
    loaders: dict[str, Callable[[ClipSpec], tuple[torch.nn.Module, str, list[Path]]]] = {
        "pretrained": _load_pretrained,
        "hf-hub": _load_hub,
        "directory": _load_directory_spec,
        "openai-file": _load_openai_spec,
        "open_clip-file": _load_open_clip_file,
    }
    model, architecture, files = loaders[parsed.kind](parsed)
    model = model.to("cpu").float().eval().requires_grad_(False)
    check_finite(model, files)
    preprocess = preprocess_config(model)
    embed_dim = _embed_dim(model, preprocess)
    digests = {str(path): sha256_file(path) for path in files}
    identity = {"spec": spec, "architecture": architecture, "source": parsed.source, "files": digests}
    log.info(
        "CLIP model %r: architecture %s, source %s, %d-wide embeddings, weights %s",
        spec,
        architecture,
        parsed.source,
        embed_dim,
        "; ".join(f"{path} (sha256 {digest})" for path, digest in digests.items()),
    )
    return LoadedClip(model=model, preprocess=preprocess, embed_dim=embed_dim, identity=identity)


def check_finite(model: torch.nn.Module, files: list[Path]) -> None:
    """Refuse weights holding NaN or infinity: every score would come out null (non_finite_score).

    Parameters only: buffers such as the text tower's causal mask hold -inf by design.
    """
    damaged = [name for name, value in model.named_parameters() if not bool(torch.isfinite(value).all())]
    if damaged:
        shown = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        where = ", ".join(str(path) for path in files) or "the checkpoint"
        raise WeightsError(
            f"the CLIP weights in {where} hold NaN or infinite values (in {shown}): the file is damaged; replace it"
        )


def preprocess_config(model: torch.nn.Module) -> PreprocessConfig:
    """The model's own preprocessing, from open_clip's preprocess_cfg; CLIP's where it says nothing."""
    cfg = dict(open_clip.get_model_preprocess_cfg(model) or {})
    size = cfg.get("size") or getattr(getattr(model, "visual", model), "image_size", None) or 224
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"the CLIP model takes non-square {tuple(size)} images; only square inputs are supported")
        size = size[0]
    defaults = PreprocessConfig()
    interpolation = str(cfg.get("interpolation") or defaults.interpolation)
    resize_mode = str(cfg.get("resize_mode") or defaults.resize_mode)
    if interpolation not in _INTERPOLATIONS:
        raise ConfigError(
            f"the CLIP model asks for {interpolation!r} resizing; supported: {', '.join(_INTERPOLATIONS)}"
        )
    if resize_mode not in _RESIZE_MODES:
        raise ConfigError(f"the CLIP model asks for resize mode {resize_mode!r}; supported: {', '.join(_RESIZE_MODES)}")
    return PreprocessConfig(
        size=int(size),
        mean=_triple(cfg.get("mean"), open_clip.OPENAI_DATASET_MEAN),
        std=_triple(cfg.get("std"), open_clip.OPENAI_DATASET_STD),
        interpolation=interpolation,
        resize_mode=resize_mode,
        fill_color=int(cfg.get("fill_color") or 0),
    )


# --- loaders: each returns (model, architecture, local weight files) ---------------------------


def _load_pretrained(spec: ClipSpec) -> tuple[torch.nn.Module, str, list[Path]]:
    architecture, tag = str(spec.architecture), str(spec.tag)
    pretrained = open_clip.get_pretrained_cfg(architecture, tag)
    found = _cached_pretrained(pretrained)
    if found is None:
        if offline():
            raise WeightsError(
                _missing_pretrained_message(spec, pretrained, f"downloading is off ({offline_reason()})")
            )
        found = _download_pretrained(spec, pretrained)
    path, is_openai_archive = found
    if is_openai_archive:
        model, _ = load_openai_file(path)
    else:
        model = _create_model(
            architecture,
            path,
            force_quick_gelu=bool(pretrained.get("quick_gelu", False)),
            force_preprocess_cfg={
                k: pretrained[k]
                for k in ("mean", "std", "interpolation", "resize_mode", "fill_color")
                if k in pretrained
            },
        )
    return model, architecture, [path]


def _cached_pretrained(pretrained: Mapping[str, Any]) -> tuple[Path, bool] | None:
    """(file, is OpenAI's TorchScript archive) already on disk for a pretrained tag, checksum-checked."""
    url = str(pretrained.get("url") or "")
    hub = str(pretrained.get("hf_hub") or "")
    is_openai = "openaipublic" in url
    if url and (cache_dir() / os.path.basename(url)).is_file():
        return _verified_url_file(cache_dir() / os.path.basename(url), url), is_openai
    if hub:
        found = _cached_hub_file(*os.path.split(hub))
        if found is not None:
            return found, False
    # The openai-clip package (which the seed used) keeps OpenAI's files in ~/.cache/clip.
    legacy = Path.home() / ".cache" / "clip" / os.path.basename(url)
    if is_openai and legacy.is_file():
        return _verified_url_file(legacy, url), True
    return None


def _verified_url_file(path: Path, url: str) -> Path:
    if "openaipublic" in url:
        # OpenAI's URLs carry the file's full SHA-256 as their last folder.
        verify(path, url.split("/")[-2], hint=f"or download it again from {url}")
    return path


def _cached_hub_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    names = [filename] if filename else list(HUB_WEIGHT_FILENAMES)
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    for name in names:
        found = try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir()))
        if isinstance(found, str):
            return Path(found)
    return None


def _download_pretrained(spec: ClipSpec, pretrained: Mapping[str, Any]) -> tuple[Path, bool]:
    url = str(pretrained.get("url") or "")
    try:
        target = open_clip.download_pretrained(dict(pretrained), cache_dir=str(cache_dir()))
    except Exception as exc:  # urllib, huggingface_hub and checksum failures all end here
        raise WeightsError(_missing_pretrained_message(spec, pretrained, f"the download failed ({exc})")) from exc
    if not target:
        raise WeightsError(_missing_pretrained_message(spec, pretrained, "open_clip knows no download for it"))
    path = Path(target)
    is_archive = bool(url) and path.name == os.path.basename(url) and "openaipublic" in url
    return path, is_archive


def _missing_pretrained_message(spec: ClipSpec, pretrained: Mapping[str, Any], reason: str) -> str:
    url = str(pretrained.get("url") or "")
    hub = str(pretrained.get("hf_hub") or "").rstrip("/")
    where = cache_dir()
    ways = []
    if url:
        name = os.path.basename(url)
        ways.append(f"download {url} and pass its path as clip_model, or put it at {where / name}")
    if hub:
        ways.append(f"run once with network access to fill the cache from hf-hub:{'/'.join(hub.split('/')[:2])}")
    if not ways:
        ways.append(f"pass a local copy of the weights as clip_model {spec.architecture}:/path/to/weights")
    return (
        f"CLIP weights for clip_model {spec.spec!r} ({spec.architecture}, pretrained {spec.tag!r}) are not in the cache "
        f"{where} and {reason}: "
        + "; or ".join(ways)
        + " (VIDEO_AESTHETICS_CACHE sets the cache folder). "
        + LOCAL_WEIGHTS_HELP
    )


def _load_hub(spec: ClipSpec) -> tuple[torch.nn.Module, str, list[Path]]:
    from huggingface_hub import try_to_load_from_cache

    repo_id = str(spec.hub_id)
    config = try_to_load_from_cache(repo_id, CONFIG_FILENAME, cache_dir=str(cache_dir()))
    weights = _cached_hub_file(repo_id, "")
    if isinstance(config, str) and weights is not None and Path(config).parent == weights.parent:
        return _load_directory(Path(config).parent)
    if offline():
        raise WeightsError(
            f"clip_model {spec.spec!r}: {CONFIG_FILENAME} and the weights of {repo_id} are not in the cache "
            f"{cache_dir()} and downloading is off ({offline_reason()}): run once with network access, or download the "
            f"repo's {CONFIG_FILENAME} and {HUB_WEIGHT_FILENAMES[0]} into a folder and pass the folder as clip_model"
        )
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        config_path = Path(download_pretrained_from_hf(repo_id, filename=CONFIG_FILENAME, cache_dir=str(cache_dir())))
        download_pretrained_from_hf(repo_id, cache_dir=str(cache_dir()))
    except Exception as exc:  # huggingface_hub raises many types for a missing repo or no network
        raise WeightsError(
            f"clip_model {spec.spec!r}: could not download {repo_id} from the Hugging Face Hub ({exc}): check the repo "
            f"name, or download its {CONFIG_FILENAME} and weights into a folder and pass the folder as clip_model"
        ) from exc
    return _load_directory(config_path.parent)


def _load_directory_spec(spec: ClipSpec) -> tuple[torch.nn.Module, str, list[Path]]:
    folder = Path(str(spec.path)).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"clip_model {spec.spec!r}: the folder {folder} does not exist")
    return _load_directory(folder)


def _load_directory(folder: Path) -> tuple[torch.nn.Module, str, list[Path]]:
    """A folder in the layout of open_clip's hub repos: open_clip_config.json beside the weights."""
    config_path = folder / CONFIG_FILENAME
    weights = next((folder / name for name in DIR_WEIGHT_FILENAMES if (folder / name).is_file()), None)
    if not config_path.is_file() or weights is None:
        raise WeightsError(
            f"the CLIP model folder {folder} must hold {CONFIG_FILENAME} and a weights file "
            f"({' or '.join(DIR_WEIGHT_FILENAMES[:3])}); missing: "
            + ", ".join(
                n for n, ok in ((CONFIG_FILENAME, config_path.is_file()), ("weights", weights is not None)) if not ok
            )
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model_cfg = config["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            f"{config_path} is not an open_clip config with a 'model_cfg' ({exc}): fix or replace it"
        ) from exc
    try:
        model = open_clip.create_model(f"local-dir:{folder}", require_pretrained=True, cache_dir=str(cache_dir()))
    except Exception as exc:  # open_clip raises RuntimeError/ValueError/KeyError for weights that do not fit
        raise WeightsError(
            f"cannot load the CLIP model in {folder} from {weights.name} ({exc}): the weights do not fit its config"
        ) from exc
    return model, _builtin_name(model_cfg) or "custom", [config_path, weights]


def _load_openai_spec(spec: ClipSpec) -> tuple[torch.nn.Module, str, list[Path]]:
    path = _existing_file(spec)
    model, architecture = load_openai_file(path)
    return model, architecture, [path]


def _load_open_clip_file(spec: ClipSpec) -> tuple[torch.nn.Module, str, list[Path]]:
    path = _existing_file(spec)
    return _create_model(str(spec.architecture), path), str(spec.architecture), [path]


def _create_model(architecture: str, path: Path, **overrides: Any) -> torch.nn.Module:
    try:
        # require_pretrained: open_clip would otherwise hand back random weights when loading fails.
        return open_clip.create_model(
            architecture, pretrained=str(path), require_pretrained=True, cache_dir=str(cache_dir()), **overrides
        )
    except Exception as exc:  # strict loading raises RuntimeError; unreadable files raise many types
        raise WeightsError(
            f"cannot load {path} as open_clip weights for {architecture} ({type(exc).__name__}: {exc}): "
            "check that the file holds this architecture's weights; OpenAI's own checkpoints are passed "
            "as clip_model without the architecture"
        ) from exc


def _existing_file(spec: ClipSpec) -> Path:
    path = Path(str(spec.path)).expanduser()
    if path.is_file():
        return path
    hint = ""
    guess = spec.spec.replace("/", "-").split(":")[0]
    if guess in open_clip.list_models():
        hint = f" (for the {guess} architecture write {guess} or {guess}:TAG)"
    raise WeightsError(
        f"clip_model {spec.spec!r}: the weights file {path} does not exist{hint}; pass an existing checkpoint, "
        f"a folder with {CONFIG_FILENAME}, or a model name such as {DEFAULT_CLIP_MODEL}"
    )


# --- model facts -------------------------------------------------------------------------------


def _builtin_name(model_cfg: Mapping[str, Any]) -> str | None:
    """The open_clip architecture whose config equals ``model_cfg``, if any."""
    for name in open_clip.list_models():
        if open_clip.get_model_config(name) == model_cfg:
            return name
    return None


def _embed_dim(model: torch.nn.Module, preprocess: PreprocessConfig) -> int:
    width = getattr(getattr(model, "visual", None), "output_dim", None)
    if isinstance(width, int):
        return width
    # Towers without output_dim (timm ones): one forward pass on a blank image tells. open_clip's
    # models are untyped; Module.__getattr__ would type encode_image Tensor | Module.
    encode_image: Any = model.encode_image
    with torch.no_grad():
        return int(encode_image(torch.zeros(1, 3, preprocess.size, preprocess.size)).shape[-1])


def _triple(value: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if value is None:
        return default
    values = tuple(float(v) for v in (value if isinstance(value, (tuple, list)) else (value,) * 3))
    if len(values) != 3:
        raise ConfigError(f"the CLIP model's normalisation has {len(values)} channels, expected 3: {value!r}")
    return values[0], values[1], values[2]
