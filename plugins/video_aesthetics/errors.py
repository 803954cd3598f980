"""Exceptions the library raises; each message names the input and what to change."""

from __future__ import annotations


class VideoAestheticsError(Exception):
    """Base class: the CLI turns these into a message and a non-zero exit, not a traceback."""


class ConfigError(VideoAestheticsError, ValueError):
    """A parameter is out of range or inconsistent with another."""


class InputError(VideoAestheticsError):
    """The input records cannot be read as they are (malformed JSONL, missing file)."""


class WeightsError(VideoAestheticsError):
    """Model or head weights are missing, unreadable or do not fit the architecture."""


class RankFailedError(VideoAestheticsError):
    """A process of a multi-process run raised or died; the run wrote nothing."""


class StoreAccessError(OSError):
    """An object store refused or failed a read (denied, expired credentials, unreachable, 5xx after retries).

    Not a VideoAestheticsError: nothing about the input is wrong, and a retry later (fixed credentials,
    a store back up) can succeed, so the Airflow wing lets it fail the task for a retry. Never a damaged
    frame: a clip whose frames could not be read is not marked corrupt_frames.
    """
