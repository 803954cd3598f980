"""The aesthetic filter (DataFlow-MM's VideoAestheticFilter rule): which clips or records pass the thresholds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.records import FILTERED, SCORE, clip_list, is_finite_number


def passes_filter(target: Any, aes_min: float | None, aes_max: float | None) -> bool:
    """DataFlow-MM VideoAestheticFilter's rule for one clip (or, whole-video, one record).

    It passes when its score is a finite number with aes_min <= score <= aes_max (an unset bound
    does not limit); no score fails; and a sample an earlier filter marked ``filtered: false`` stays failed.
    """
    if not isinstance(target, dict) or target.get(FILTERED) is False:
        return False
    score = target.get(SCORE)
    if not is_finite_number(score):
        return False
    return (aes_min is None or score >= aes_min) and (aes_max is None or score <= aes_max)


def kept_records(records: Iterable[dict[str, Any]], config: ScoringConfig) -> Iterator[dict[str, Any]]:
    """The scored ``records`` with only their clips that pass the filter; records left with none are dropped.

    Clip mode keeps the passing clips of ``output_key`` (its other keys, and every other field,
    unchanged); whole-video mode keeps the records that pass. Passing is ``passes_filter`` with
    ``config``'s thresholds, so on output scored with the same thresholds it is ``filtered: true``.
    """
    if not config.filtering:
        raise ConfigError("kept records need a threshold: set aes_min and/or aes_max")
    for record in records:
        kept = _kept(record, config)
        if kept is not None:
            yield kept


def _kept(record: dict[str, Any], config: ScoringConfig) -> dict[str, Any] | None:
    if config.whole_video:
        return record if passes_filter(record, config.aes_min, config.aes_max) else None
    clips = clip_list(record, config.output_key)
    passing = [clip for clip in clips or [] if passes_filter(clip, config.aes_min, config.aes_max)]
    if not passing:
        return None
    container = record[config.output_key]
    kept = dict(record)
    kept[config.output_key] = {**container, "clips": passing} if isinstance(container, dict) else passing
    return kept
