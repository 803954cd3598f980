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
