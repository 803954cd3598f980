"""The ``clip_model`` string, parsed: which CLIP it names and where its weights come from, before any is read.

Every form the seed and open_clip accept is recognised here (OpenAI's names, ARCH:TAG, ARCH:/path,
hf-hub:org/repo, local-dir:, a folder or a file); a bare architecture without OpenAI's weights, an
unknown architecture or tag is refused, with close matches, because open_clip would otherwise build
it with random weights. Loading is clip_loader.py's.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

import open_clip

from video_aesthetics.errors import ConfigError
from video_aesthetics.openai_clip import OPENAI_NAMES
from video_aesthetics.parameters import CLIP_MODEL

DEFAULT_CLIP_MODEL = CLIP_MODEL  # declared with the other parameters (video_aesthetics.parameters)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


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
