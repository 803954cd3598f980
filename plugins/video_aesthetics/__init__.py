"""Aesthetic scoring of video clips: CLIP image embeddings through LAION's aesthetic head.

The package is a plain library (records, frames, video, clip_loader, head, scoring, runner, ...)
with two wings that the library never imports: ``video_aesthetics.dataflow`` (the seed's
DataFlow-MM API) and ``video_aesthetics.airflow`` (operator, DAG task bodies, provider, plugin).

Importing the package is cheap and imports no torch: Airflow imports it while parsing DAGs and
loading plugins, in processes that later fork task runners. The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VideoAestheticEvaluator": "video_aesthetics.dataflow.evaluator",
    "JsonlStorage": "video_aesthetics.dataflow.storage",
    "ScoringConfig": "video_aesthetics.config",
    "score_file": "video_aesthetics.runner",
    "score_records": "video_aesthetics.runner",
}

__all__ = ["JsonlStorage", "ScoringConfig", "VideoAestheticEvaluator", "__version__", "score_file", "score_records"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'video_aesthetics' has no attribute {name!r}")
