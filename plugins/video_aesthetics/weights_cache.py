"""Where downloaded weights live, whether downloading is allowed, and a verified, atomic download.

Imports no torch: the CLI and Airflow use it to report cache locations without loading a model.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from video_aesthetics import settings
from video_aesthetics.errors import WeightsError
from video_aesthetics.files import sha256_file

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
# Named in every missing-weights message: how a machine without the model hub points each face at local files.
LOCAL_WEIGHTS_HELP = (
    "To use local files instead, point the settings at them: "
    "VIDEO_AESTHETICS_CLIP_MODEL=/path/to/ViT-L-14.pt (OpenAI's CLIP ViT-L/14) and "
    "VIDEO_AESTHETICS_MLP_CHECKPOINT=/path/to/sac+logos+ava1-l14-linearMSE.pth (LAION's head) in the environment "
    "of `make demo`, `make ui` and Airflow; --clip-model and --mlp-checkpoint on the command line; "
    "clip_model and mlp_checkpoint in Python and the DAG's params."
)


def offline() -> bool:
    """True when any of VIDEO_AESTHETICS_OFFLINE, HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE is 1/true/yes/on."""
    return bool(settings.offline_variables())


def fetch(url: str, dest: Path, sha256: str | None, *, hint: str = "") -> Path:
    """``dest``, downloaded from ``url`` if it is not there yet, its SHA-256 checked when ``sha256`` is given.

    The download goes to a temporary file beside ``dest`` and is renamed into place only once
    verified, so an interrupted or corrupt download never leaves a file that looks complete.
    ``hint`` is appended to the error messages: the parameter that points at a local copy instead.
    """
    dest = Path(dest)
    if dest.is_file():
        if sha256:
            verify(dest, sha256, hint=hint)
        return dest
    if offline():
        raise WeightsError(
            f"{dest.name} is not in the cache and downloading is off ({offline_reason()}): "
            f"download {url} and put it at {dest}{_hint(hint)}, or unset the offline variable. {LOCAL_WEIGHTS_HELP}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    handle, temp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            _download(url, out, dest, hint)
        if sha256:
            found = sha256_file(temp)
            if found != sha256.lower():
                raise WeightsError(
                    f"the download of {url} has SHA-256 {found}, expected {sha256.lower()}: "
                    f"the file was not kept; retry, or download it by hand to {dest}{_hint(hint)}"
                )
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    return dest


def verify(path: Path, sha256: str, *, hint: str = "") -> None:
    """Raise WeightsError naming both digests when ``path`` is not the file ``sha256`` describes."""
    found = sha256_file(path)
    if found != sha256.lower():
        raise WeightsError(
            f"{path} has SHA-256 {found}, expected {sha256.lower()}: it is not the expected file "
            f"(corrupt or replaced); delete it so that it is downloaded again{_hint(hint)}"
        )


def _download(url: str, out: BinaryIO, dest: Path, hint: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as source:
            shutil.copyfileobj(source, out, _CHUNK)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise WeightsError(
            f"could not download {dest.name} from {url} ({exc}): download it by hand and put it at {dest}{_hint(hint)}. "
            f"{LOCAL_WEIGHTS_HELP}"
        ) from exc


def offline_reason() -> str:
    """The variables that turned downloading off, as NAME=value, for error messages."""
    return ", ".join(settings.offline_variables())


def _hint(hint: str) -> str:
    return f", {hint}" if hint else ""
