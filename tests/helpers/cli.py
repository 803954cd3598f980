"""The `video-aesthetics score` command line the tests run, built from keyword options."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def score_args(source: Path, out: Path, model_args: dict[str, str], **options: Any) -> list[str]:
    """``score`` arguments for the tiny test model on CPU; ``figure_root=...`` becomes ``--figure-root ...``.

    True adds a flag, None leaves the option out, anything else is passed as text.
    """
    args = ["score", "--input", str(source), "--output", str(out), "--device", "cpu", *_model(model_args)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
    return args


def _model(model_args: dict[str, str]) -> list[str]:
    return ["--clip-model", model_args["clip_model"], "--mlp-checkpoint", model_args["mlp_checkpoint"]]
