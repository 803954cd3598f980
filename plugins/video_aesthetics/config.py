"""The parameters of a scoring run: one self-validating config, and the one mapping onto it.

Every face of the project (CLI, seed-compatible evaluator, Airflow operator, DAG tasks) hands its
parameters to ``ScoringConfig.from_params``. Each field's default, bounds and help are declared
once, in ``video_aesthetics.parameters``. A ScoringConfig checks itself on construction, so an
invalid one cannot exist.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from video_aesthetics.errors import ConfigError
from video_aesthetics.parameters import BY_NAME, CLIPS_KEY, DECODES, DEFAULTS, DEVICES, REDUCTIONS

__all__ = ["DECODES", "DEFAULT_CLIPS_KEY", "DEVICES", "PARAM_NAMES", "REDUCTIONS", "ScoringConfig", "optional_text"]

DEFAULT_CLIPS_KEY = CLIPS_KEY
_UNSET_TEXT = frozenset({"", "None", "null"})


@dataclass(frozen=True)
class ScoringConfig:
    """Everything that decides which frames are read and how they are scored.

    Defaults are the seed's (DataFlow-MM VideoAestheticEvaluator). ``video_clips_key`` None or ""
    switches to whole-video scoring: one sample per record, frames decoded from the video.
    """

    # Defaults, bounds and help live in video_aesthetics.parameters, the one declaration of each parameter.
    figure_root: str = DEFAULTS.figure_root
    input_video_key: str = DEFAULTS.input_video_key
    video_clips_key: str | None = DEFAULTS.video_clips_key
    clip_model: str = DEFAULTS.clip_model
    mlp_checkpoint: str | None = DEFAULTS.mlp_checkpoint
    load_num: int = DEFAULTS.load_num
    batch_size: int = DEFAULTS.batch_size
    num_workers: int = DEFAULTS.num_workers
    output_key: str = DEFAULTS.output_key
    device: str = DEFAULTS.device
    decode: str = DEFAULTS.decode
    precision: str = DEFAULTS.precision
    reduction: str = DEFAULTS.reduction
    frame_scores: bool = DEFAULTS.frame_scores
    skip_bad_records: bool = DEFAULTS.skip_bad_records
    aes_min: float | None = DEFAULTS.aes_min
    aes_max: float | None = DEFAULTS.aes_max
    # Relative video paths (whole-video scoring) are taken against this folder; None: as they are.
    video_root: str | None = DEFAULTS.video_root
    # fsspec storage options for a figure_root URL (s3://...): credentials, endpoint. Not a scoring
    # parameter: kept out of as_dict (manifests) and PARAM_NAMES, and out of comparisons.
    frames_storage_options: Mapping[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Types, bounds and closed choices as declared (parameters.PARAMETERS); the finer rules follow.
        for name in (
            "load_num",
            "batch_size",
            "num_workers",
            "reduction",
            "frame_scores",
            "skip_bad_records",
            "precision",
        ):
            BY_NAME[name].check(getattr(self, name))
        if not isinstance(self.device, str) or not _is_device(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index), got {self.device!r}")
        if self.decode not in DECODES:
            raise ConfigError(
                f"decode must be one of {', '.join(DECODES)} (auto: hardware or gpu on CUDA, else the CPU default), got {self.decode!r}"
            )
        for name in ("figure_root", "input_video_key", "clip_model", "output_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        if self.video_clips_key is not None and not isinstance(self.video_clips_key, str):
            raise ConfigError(
                f"video_clips_key must be a string (empty for whole-video scoring), got {self.video_clips_key!r}"
            )
        if self.video_root is not None and (not isinstance(self.video_root, str) or not self.video_root):
            raise ConfigError(f"video_root must be a folder or None (paths as given), got {self.video_root!r}")
        if self.mlp_checkpoint is not None and (not isinstance(self.mlp_checkpoint, str) or not self.mlp_checkpoint):
            raise ConfigError(
                f"mlp_checkpoint must be a path or None (LAION's official head), got {self.mlp_checkpoint!r}"
            )
        _check_thresholds(self.aes_min, self.aes_max)
        if self.frames_storage_options is not None and not isinstance(self.frames_storage_options, Mapping):
            raise ConfigError(
                f"frames_storage_options must be a mapping of fsspec options, got {type(self.frames_storage_options).__name__}"
            )
        if not self.whole_video and self.output_key == self.input_video_key:
            raise ConfigError(
                f"output_key {self.output_key!r} is the video field (input_video_key): scores would "
                "replace the video path; choose another output_key, or the field that holds the video as input_video_key"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ScoringConfig:
        """The config that ``params`` (any face's parameters by the seed's names) describe.

        Absent keys and None take the default; optional texts ("", "None", "null": what templates
        and forms render for nothing) count as unset. ``output_key`` follows ``video_clips_key``
        unless given. Unknown keys are refused with the list of known ones.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown scoring parameter(s) {unknown}; known: {sorted(known)}")
        given: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
        for name in ("mlp_checkpoint", "video_root"):
            if name in given:
                given[name] = optional_text(given[name])
        if "video_clips_key" in params:
            # The seed's switch: None or "" means whole-video scoring, not "the default key".
            given["video_clips_key"] = optional_text(params["video_clips_key"]) or ""
        for name in ("aes_min", "aes_max"):
            if name in given:
                given[name] = _threshold_param(name, given[name])
        if optional_text(given.get("output_key")) is None:
            given["output_key"] = given.get("video_clips_key") or DEFAULT_CLIPS_KEY
        return cls(**given)

    @property
    def whole_video(self) -> bool:
        return not self.video_clips_key

    @property
    def filtering(self) -> bool:
        """Whether the aesthetic filter is on: each sample then gets ``filtered`` (DataFlow-MM's VideoAestheticFilter)."""
        return self.aes_min is not None or self.aes_max is not None

    @property
    def frames_root(self) -> Path:
        return Path(self.figure_root)

    def replace(self, **changes: Any) -> ScoringConfig:
        """A copy with ``changes`` applied; None values keep the current value (the seed's run() overrides)."""
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown scoring parameter(s) {sorted(unknown)}; known: {sorted(self.as_dict())}")
        return dataclasses.replace(self, **given)

    def as_dict(self) -> dict[str, Any]:
        # Storage options may hold credentials: never in a manifest or a log.
        return {name: getattr(self, name) for name in PARAM_NAMES}


def optional_text(value: Any) -> str | None:
    """None for None, "" and the strings a template renders None as; else the text, stripped."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in _UNSET_TEXT else text


def _check_thresholds(aes_min: Any, aes_max: Any) -> None:
    for name, value in (("aes_min", aes_min), ("aes_max", aes_max)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number (a score threshold, e.g. 4.5) or None, got {value!r}")
    if aes_min is not None and aes_max is not None and aes_min > aes_max:
        raise ConfigError(
            f"aes_min ({aes_min}) is above aes_max ({aes_max}): no clip could pass; swap them or drop one"
        )


def _threshold_param(name: str, value: Any) -> Any:
    """A threshold from a form or template: unset texts are None, numeric text is a float, anything else stays."""
    if not isinstance(value, str):
        return value
    text = optional_text(value)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number (a score threshold, e.g. 4.5), got {value!r}") from None


def _is_device(name: str) -> bool:
    if name in DEVICES:
        return True
    kind, _, index = name.partition(":")
    # ASCII digits only, and a plausible count: str.isdigit() also accepts "٣" and "²".
    return kind == "cuda" and re.fullmatch(r"[0-9]{1,3}", index) is not None


# The parameters every face passes by name: the seed's ten, then our extras.
PARAM_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ScoringConfig) if f.name != "frames_storage_options"
)
