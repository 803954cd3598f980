"""The parameters of a scoring run, shared by the CLI, the evaluator API and the Airflow operator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from video_aesthetics.errors import ConfigError

REDUCTIONS = ("mean", "min", "max")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ScoringConfig:
    """Everything that decides which frames are read and how they are scored.

    Defaults are the seed's (DataFlow-MM VideoAestheticEvaluator). ``video_clips_key`` set to
    None or "" switches to whole-video scoring: one sample per record, frames decoded from the video.
    """

    figure_root: str = "extract_frames"
    input_video_key: str = "video"
    video_clips_key: str | None = "video_clips"
    clip_model: str = "ViT-L/14"
    mlp_checkpoint: str | None = None
    load_num: int = 3
    batch_size: int = 64
    num_workers: int = 4
    output_key: str = "video_clips"
    device: str = "auto"
    reduction: str = "mean"
    frame_scores: bool = False
    skip_bad_records: bool = False

    @property
    def whole_video(self) -> bool:
        return not self.video_clips_key

    def replace(self, **changes: Any) -> "ScoringConfig":
        """A copy with ``changes`` applied; None values keep the current value (the seed's run() overrides)."""
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown scoring parameter(s) {sorted(unknown)}; known: {sorted(self.as_dict())}")
        return dataclasses.replace(self, **given)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "ScoringConfig":
        """Raise ConfigError naming the first bad parameter and the values it accepts."""
        _positive("load_num", self.load_num)
        _positive("batch_size", self.batch_size)
        if not isinstance(self.num_workers, int) or isinstance(self.num_workers, bool) or self.num_workers < 0:
            raise ConfigError(f"num_workers must be an integer >= 0 (0 decodes in the main process), got {self.num_workers!r}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("figure_root", "input_video_key", "clip_model", "output_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        if self.video_clips_key is not None and not isinstance(self.video_clips_key, str):
            raise ConfigError(f"video_clips_key must be a string (empty for whole-video scoring), got {self.video_clips_key!r}")
        return self


def optional_text(value: Any) -> str | None:
    """None for None, "" and the strings a template renders None as; else the text, stripped.

    Airflow params and rendered templates hand parameters over as text: "None" there means unset.
    """
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None", "null") else text


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
