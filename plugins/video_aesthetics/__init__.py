"""Aesthetic scoring of video clips: CLIP image embeddings through LAION's aesthetic head.

Importing the package is cheap and imports no torch: Airflow imports it while parsing DAGs and
loading plugins, in processes that later fork task runners. The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VideoAestheticEvaluator": "video_aesthetics.evaluator",
    "JsonlStorage": "video_aesthetics.storage",
    "ScoringConfig": "video_aesthetics.config",
    "score_jsonl": "video_aesthetics.pipeline",
    "run_scoring": "video_aesthetics.pipeline",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'video_aesthetics' has no attribute {name!r}")
