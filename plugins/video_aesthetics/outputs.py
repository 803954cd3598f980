"""The one guard every output of a run passes before any work: no collisions, no escaping links, writable.

A run names its inputs and outputs by role ("--input", "--output", "--rejects", "--report",
"--embeddings", ...). ``check_outputs`` refuses, before a model loads or a record is read:

- an output that is a folder, a device, a FIFO or a socket, or whose folder is a file;
- an output that is a symbolic link whose target lies outside the folder holding the link (a link
  to ``published/scores.jsonl`` beside it is written through; one to ``/etc/passwd`` or
  ``../elsewhere`` is not);
- two roles that name one file, after following links: the same path spelled differently
  (``a/../out.jsonl``), a symbolic link to it, or a hard link of it; inputs may share a file, an
  output may share it with nothing;
- an output whose folder cannot be written (a temporary file is created and removed there).

The CLI, the runner (``runner.score_file``) and the seed-compatible evaluator all call it; a caller
with an extra output adds a role: ``check_outputs([("--output", out), ("--embeddings", emb)], ...)``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from video_aesthetics.errors import ConfigError
from video_aesthetics.files import PendingFile, is_remote_url, is_within, same_file

# A role and its path; None (an output the run does not write, an input read from a stream) is skipped.
Role = tuple[str, "Path | str | None"]
# Outputs are files: "-" would be a file of that name in the working folder, not standard output.
STANDARD_STREAM = "-"


def check_outputs(outputs: Iterable[Role], inputs: Iterable[Role] = (), *, probe: bool = True) -> None:
    """Refuse (ConfigError) outputs that collide, escape through a link or cannot be written; see the module doc.

    ``probe`` creates and removes a temporary file beside each output, which proves its folder
    writable (and creates missing folders, as writing would). Remote URLs (s3://...) are compared by
    text only: their store checks them when written.
    """
    outs = [(role, path) for role, path in outputs if path is not None]
    ins = [(role, path) for role, path in inputs if path is not None]
    for role, path in outs:
        if str(path) == STANDARD_STREAM:
            raise ConfigError(
                f"{role} - would write a file named '-', not standard output: outputs are files; give {role} a "
                f"file path (./- for a file of that name)"
            )
    for role, path in outs:
        if not is_remote_url(path):
            check_output_path(role, Path(path))
    for index, (role, path) in enumerate(outs):
        # The later role is named as the one to change: the output comes before the report made of it.
        for other_role, other in [*ins, *outs[:index]]:
            if _same(path, other):
                what = "input" if (other_role, other) in ins else "output"
                raise ConfigError(
                    f"the {role} {path} is the {what} {other} ({other_role}) after following links: writing it "
                    f"would overwrite the {what}; give {role} another path"
                )
    if probe:
        for role, path in outs:
            if not is_remote_url(path):
                check_writable(role, Path(path))


def check_output_path(role: str, path: Path) -> None:
    """Refuse an output that is not a (future) regular file, or a link that leads out of its folder."""
    if path.is_symlink():
        folder = os.path.realpath(path.parent)
        target = os.path.realpath(path)
        if not is_within(target, folder):
            raise ConfigError(
                f"the {role} {path} is a symbolic link to {target}, outside {folder}: outputs are never written "
                f"through a link that leaves its folder; give {role} the real path"
            )
    target_path = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode: int | None = os.stat(target_path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None  # the folders are checked below
    except OSError as err:
        raise ConfigError(f"cannot use {path} as the {role}: {err.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise ConfigError(f"the {role} {path} is a folder; give {role} a file path, such as a new name inside it")
    if mode is not None and not stat.S_ISREG(mode):
        raise ConfigError(
            f"the {role} {path} is not a regular file (a device, FIFO or socket) and cannot be replaced "
            f"atomically; give {role} a file path"
        )
    for parent in target_path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"cannot write the {role} {path}: {parent} is a file, not a folder")
            break


def check_writable(role: str, path: Path) -> None:
    """Create and drop a temporary beside ``path``: the proof that the output can be written, before any work."""
    try:
        with PendingFile(path):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write the {role} {path}: {err.strerror or err} ({err.filename or path.parent}); "
            "choose a folder you can write to"
        ) from None


def _same(first: Path | str, second: Path | str) -> bool:
    if is_remote_url(first) or is_remote_url(second):
        return str(first).rstrip("/") == str(second).rstrip("/")
    return same_file(first, second)
