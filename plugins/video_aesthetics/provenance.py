"""Whether scores came from the official pair: OpenAI's CLIP ViT-L/14 and LAION's aesthetic head, by checksum.

A run records its model as the scorer's identity (``scoring.Scorer.identity``: ``clip`` with its
spec, architecture, pretrained source and each weight file's SHA-256; ``head`` with its file and
SHA-256). ``model_provenance`` reads that record, and only the checksums decide: a file named like
the official one is not official unless its bytes are. Imports nothing heavy: the report and the
Airflow views use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# LAION's sac+logos+ava1-l14-linearMSE.pth (improved-aesthetic-predictor); head.py checks downloads against it.
OFFICIAL_HEAD_SHA256 = "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"
# OpenAI's ViT-L-14.pt, as its download URL states (openaipublic.azureedge.net/clip/models/<sha256>/ViT-L-14.pt).
OFFICIAL_CLIP_SHA256 = frozenset({"b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"})
OFFICIAL_CLIP_ARCHITECTURE = "ViT-L-14"

# open_clip's own preference among the weight files of a checkpoint folder (factory._find_checkpoint_in_dir),
# so that the file hashed for a CLIP's identity (by the scorer, and by rescore, which must not import
# open_clip) is the file open_clip loads.
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


@dataclass(frozen=True)
class Provenance:
    """What scored a run, in words, and whether it is the official pair (None: the run did not record it)."""

    official: bool | None
    clip: str
    head: str
    problems: tuple[str, ...] = ()


def model_provenance(model: Mapping[str, Any] | None) -> Provenance:
    """The provenance of a recorded model identity (a run's ``model``); never raises on odd input."""
    if not isinstance(model, Mapping) or not model:
        return Provenance(None, "not recorded", "not recorded", ("the run did not record which model scored it",))
    clip_ok, clip_text, clip_problem = _clip(model.get("clip"))
    head_ok, head_text, head_problem = _head(model.get("head"))
    problems = tuple(p for p in (clip_problem, head_problem) if p)
    return Provenance(clip_ok and head_ok, clip_text, head_text, problems)


def _clip(clip: Any) -> tuple[bool, str, str | None]:
    if not isinstance(clip, Mapping):
        return False, "not recorded", "the CLIP model was not recorded"
    architecture = str(clip.get("architecture") or "unknown architecture")
    source = str(clip.get("source") or "unknown weights")
    files = clip.get("files")
    if not isinstance(files, Mapping):
        files = {}
    digests = {str(digest).lower() for digest in files.values()}
    named = f"{clip.get('spec') or architecture} ({architecture}, {source})"
    detail = "; ".join(f"{path} sha256 {digest}" for path, digest in files.items()) or "no weight file recorded"
    text = f"{named}: {detail}"
    if architecture == OFFICIAL_CLIP_ARCHITECTURE and digests & OFFICIAL_CLIP_SHA256:
        return True, text, None
    if architecture == OFFICIAL_CLIP_ARCHITECTURE and source == "openai":
        return (
            False,
            text,
            (
                f"the CLIP weights are named {architecture} openai, but no weight file has the SHA-256 OpenAI "
                "published for ViT-L-14.pt, so they could not be verified as the official ones"
            ),
        )
    return False, text, f"the CLIP model is {named}, not OpenAI's ViT-L/14"


def _head(head: Any) -> tuple[bool, str, str | None]:
    if not isinstance(head, Mapping):
        return False, "not recorded", "the aesthetic head was not recorded"
    digest = str(head.get("sha256") or "").lower()
    text = f"{head.get('path') or 'unknown file'} sha256 {digest or 'unknown'}"
    if digest == OFFICIAL_HEAD_SHA256:
        return True, text, None
    return False, text, "the aesthetic head is not LAION's sac+logos+ava1-l14-linearMSE.pth (its SHA-256 differs)"
