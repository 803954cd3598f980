"""The CLIP image encoder: turn a ``clip_model`` string into a model with real weights and its preprocessing.

Every way open_clip offers of ending with random weights (``pretrained=None``, a directory or hub
repo without a weights file) is closed here: a model either loads with its weights or the caller
gets a WeightsError that says which file is missing and how to provide it.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import build_model_from_openai_state_dict

from video_aesthetics.errors import ConfigError, WeightsError
from video_aesthetics.files import sha256_file
from video_aesthetics.frames import PreprocessConfig
from video_aesthetics.parameters import CLIP_MODEL
from video_aesthetics.settings import cache_dir
from video_aesthetics.weights_cache import LOCAL_WEIGHTS_HELP, offline, offline_reason, verify

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "ClipSpec",
    "LoadedClip",
    "PreprocessConfig",
    "load_clip",
    "parse_clip_spec",
    "preprocess_config",
]

DEFAULT_CLIP_MODEL = CLIP_MODEL  # declared with the other parameters (video_aesthetics.parameters)
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
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
CONFIG_FILENAME = "open_clip_config.json"
# open_clip's own preference among the weight files of a checkpoint folder (factory._find_checkpoint_in_dir),
# so that the file hashed for the identity is the file open_clip loads.
DIR_WEIGHT_FILENAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
HUB_WEIGHT_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_OPENAI_STATE_EXTRAS = ("input_resolution", "context_length", "vocab_size")
_INTERPOLATIONS = ("bicubic", "bilinear")
_RESIZE_MODES = ("shortest", "squash", "longest")


@dataclass(frozen=True)
class ClipSpec:
    """A parsed ``clip_model`` string.

    kind is one of: "pretrained" (open_clip architecture + pretrained tag), "hf-hub", "directory",
    "openai-file" (OpenAI's TorchScript archive or an OpenAI-format state dict) and "open_clip-file"
    (open_clip weights for a named architecture).
    """

    spec: str
    kind: str
    architecture: str | None = None
    tag: str | None = None
    path: str | None = None
    hub_id: str | None = None

    @property
    def source(self) -> str:
        """The identity's "source": the pretrained tag, or where the weights came from."""
        if self.kind == "pretrained":
            return str(self.tag)
        return {"hf-hub": "hf-hub", "directory": "directory"}.get(self.kind, "file")


@dataclass
class LoadedClip:
    model: torch.nn.Module
    preprocess: PreprocessConfig
    embed_dim: int
    identity: dict[str, Any] = field(default_factory=dict)


def parse_clip_spec(spec: str) -> ClipSpec:
    """Classify ``spec`` without reading any file; ConfigError for unknown architectures and tags.

    A bare open_clip architecture takes the "openai" tag where it exists; otherwise it is refused
    with its tags, because open_clip would build it with random weights.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"clip_model must be a non-empty string, got {spec!r}; the default is {DEFAULT_CLIP_MODEL!r}")
    text = spec.strip()
    if text in OPENAI_NAMES:
        return ClipSpec(spec, "pretrained", architecture=OPENAI_NAMES[text], tag="openai")
    located = _located_spec(spec, text)
    if located is not None:
        return located
    name, colon, rest = text.partition(":")
    # A one-letter prefix is a Windows drive ("C:\\models\\ViT-L-14.pt"), not an architecture.
    if colon and len(name) > 1 and not _looks_like_path(name):
        return _architecture_spec(spec, name, rest)
    if _looks_like_path(text):
        return ClipSpec(spec, "openai-file", path=text)
    _check_architecture(text, spec)
    if not open_clip.is_pretrained_cfg(text, "openai"):
        raise ConfigError(
            f"clip_model {spec!r} names an architecture without OpenAI weights; name its weights as "
            f"{text}:TAG with TAG one of {open_clip.list_pretrained_tags_by_model(text) or '(none: pass ' + text + ':/path/to/weights)'}"
        )
    return ClipSpec(spec, "pretrained", architecture=text, tag="openai")


def _located_spec(spec: str, text: str) -> ClipSpec | None:
    """A spec that says where the weights are (hf-hub:, local-dir:, an existing folder or file), or None."""
    if text.startswith("hf-hub:"):
        hub_id = text[len("hf-hub:") :]
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", hub_id):
            raise ConfigError(f"clip_model {spec!r}: write a Hugging Face Hub repo as hf-hub:org/repo")
        return ClipSpec(spec, "hf-hub", hub_id=hub_id)
    if text.startswith("local-dir:"):
        folder = text[len("local-dir:") :]
        if not folder:
            raise ConfigError(f"clip_model {spec!r}: name a folder after local-dir:")
        return ClipSpec(spec, "directory", path=folder)
    if os.path.isdir(os.path.expanduser(text)):
        return ClipSpec(spec, "directory", path=text)
    if os.path.isfile(os.path.expanduser(text)):
        return ClipSpec(spec, "openai-file", path=text)
    return None


def _architecture_spec(spec: str, name: str, rest: str) -> ClipSpec:
    """``ARCH:TAG`` (pretrained weights) or ``ARCH:/path/to/weights`` (an open_clip checkpoint)."""
    if not rest:
        raise ConfigError(f"clip_model {spec!r}: name a pretrained tag or a weights file after the colon")
    _check_architecture(name, spec)
    if _looks_like_path(rest):
        return ClipSpec(spec, "open_clip-file", architecture=name, path=rest)
    return ClipSpec(spec, "pretrained", architecture=name, tag=_check_tag(name, rest, spec))


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


# --- parsing helpers ---------------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    separators = {"/", os.sep, os.altsep or "/"}
    return (
        any(sep in text for sep in separators)
        or text.startswith("~")
        or text.lower().endswith(WEIGHT_SUFFIXES)
        or os.path.isfile(os.path.expanduser(text))
    )


def _check_architecture(name: str, spec: str) -> None:
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=6, cutoff=0.6)
        raise ConfigError(
            f"clip_model {spec!r}: unknown open_clip architecture {name!r}"
            + (f"; close matches: {', '.join(close)}" if close else "")
            + f"; OpenAI names: {', '.join(OPENAI_NAMES)}; or give a checkpoint path, a folder or hf-hub:org/repo"
        )


def _check_tag(architecture: str, tag: str, spec: str) -> str:
    if open_clip.is_pretrained_cfg(architecture, tag):
        return tag.lower().replace("-", "_")  # open_clip's own normalisation of tags
    tags = open_clip.list_pretrained_tags_by_model(architecture)
    close = difflib.get_close_matches(tag, tags, n=6, cutoff=0.5)
    raise ConfigError(
        f"clip_model {spec!r}: {architecture} has no pretrained tag {tag!r}"
        + (f"; close matches: {', '.join(close)}" if close else "")
        + f"; its tags: {', '.join(tags) if tags else '(none: pass ' + architecture + ':/path/to/weights)'}"
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
        model, _ = _load_openai_file(path)
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
    model, architecture = _load_openai_file(path)
    return model, architecture, [path]


def _load_openai_file(path: Path) -> tuple[torch.nn.Module, str]:
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
