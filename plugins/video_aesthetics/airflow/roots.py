"""The deployment's allowed roots: where a run may read and write, whatever its conf says.

A run's conf is user input: whoever may trigger the DAG can point its paths (input, output, work
and figure roots, video_root) anywhere the worker can reach. The ``allowed_roots`` setting names
the local folders and store prefixes runs may use; the DAG's first task checks every location of
a run against it, and the results view serves only from inside it. Unset, any location is allowed
(as before the setting existed); SECURITY.md's deployment checklist says to set it.

Local locations are compared after resolving links, by path components (``/data/out2`` is not
inside ``/data/out``); store URLs by scheme, bucket and key prefix on ``/`` boundaries, with
``.``/``..`` segments refused outright. A local path never matches a URL root, nor the reverse.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from video_aesthetics.airflow.conf import setting
from video_aesthetics.errors import ConfigError
from video_aesthetics.files import LOCAL_SCHEMES, is_within
from video_aesthetics.settings import SETTINGS

SETTING = "allowed_roots"
ENV = SETTINGS[SETTING].env
_SEPARATORS = re.compile(r"[,\n]")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
# Spellings of one store: a root given as s3://b covers s3a://b/x, as the same bucket.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfss": "abfs"}


@dataclass(frozen=True)
class _Location:
    """A location reduced to what comparison needs: a resolved local path, or scheme, bucket and key."""

    local: str | None = None
    scheme: str = ""
    bucket: str = ""
    key: str = ""

    def __str__(self) -> str:
        if self.local is not None:
            return self.local
        return f"{self.scheme}://{self.bucket}" + (f"/{self.key}" if self.key else "")


class _Unsafe(ValueError):
    """A location that no root can contain: dot segments, a query, no bucket, a NUL byte."""


def _parse(location: str, *, strict_local: bool = False) -> _Location:
    text = location.strip()
    if not text or "\x00" in text:
        raise _Unsafe("it is empty or holds a NUL byte")
    if "://" not in text:
        return _local(text, strict_local)
    if "::" in text:
        # fsspec chains file systems ("simplecache::s3://", "zip://a::s3://b"): the location that is
        # finally opened is not the one the text starts with.
        raise _Unsafe("chained URLs (with '::') are not store locations")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme != text.split("://", 1)[0].lower() or not _SCHEME.match(scheme):
        raise _Unsafe("it does not start with a URL scheme such as s3://")
    if scheme in LOCAL_SCHEMES:
        return _local(unquote(parts.netloc + parts.path), strict_local)
    if parts.query or parts.fragment:
        raise _Unsafe("a store location has no query (?) or fragment (#)")
    # An Airflow connection id in the URL (s3://conn@bucket/key) says how to log in, not where.
    bucket = parts.netloc.rsplit("@", 1)[-1]
    if not bucket:
        raise _Unsafe("it names no bucket")
    segments = [s for s in parts.path.split("/") if s]
    # Stores differ in what they make of "." and ".." (S3 keeps them, fsspec may collapse them): no
    # answer is safe for both, so neither is accepted, encoded or not.
    if any(unquote(s) in (".", "..") for s in segments):
        raise _Unsafe("it has '.' or '..' segments")
    return _Location(scheme=_SCHEME_ALIASES.get(scheme, scheme), bucket=bucket, key="/".join(segments))


def _local(text: str, strict: bool) -> _Location:
    path = os.path.expanduser(text)
    if strict and not os.path.isabs(path):
        raise _Unsafe("a local root must be an absolute path")
    return _Location(local=os.path.realpath(path))


def _contains(root: _Location, location: _Location) -> bool:
    if root.local is not None or location.local is not None:
        return root.local is not None and location.local is not None and is_within(location.local, root.local)
    if (root.scheme, root.bucket) != (location.scheme, location.bucket):
        return False
    return not root.key or location.key == root.key or location.key.startswith(root.key + "/")


def _configured() -> list[_Location] | None:
    value = setting(SETTING)
    entries = [e.strip() for e in _SEPARATORS.split(value or "") if e.strip()]
    if not entries:
        return None
    roots = []
    for entry in entries:
        try:
            roots.append(_parse(entry, strict_local=True))
        except _Unsafe as err:
            raise ConfigError(
                f"setting {SETTING} ({ENV}) has an entry {entry!r} that is not a root: {err}; give absolute "
                "local folders or store prefixes such as s3://bucket/prefix, separated by commas or newlines"
            ) from None
    return roots


def allowed_roots() -> list[str] | None:
    """The configured roots, normalised (local ones resolved, URLs as scheme://bucket/prefix); None when unset."""
    roots = _configured()
    return None if roots is None else [str(r) for r in roots]


def is_allowed(location: str) -> bool:
    """Whether ``location`` lies inside one of the allowed roots (always, when the setting is unset)."""
    roots = _configured()
    if roots is None:
        return True
    try:
        parsed = _parse(str(location))
    except _Unsafe:
        return False
    return any(_contains(root, parsed) for root in roots)


def check_location(location: str, param: str) -> None:
    """Refuse ``location`` (the value of ``param``) unless it lies inside the allowed roots."""
    roots = _configured()
    if roots is None:
        return
    try:
        parsed = _parse(str(location))
    except _Unsafe as err:
        raise ConfigError(
            f"{param}={location!r} cannot be checked against the setting {SETTING} ({ENV}): {err}; "
            "give a plain location inside one of the allowed roots"
        ) from None
    if not any(_contains(root, parsed) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ConfigError(
            f"{param}={location!r} (resolved: {parsed}) is outside the roots runs may use, set by {SETTING} "
            f"({ENV}): {allowed}; give a location inside one of them, or ask the deployment's admin to add its root"
        )


def same_location(first: str, second: str) -> bool:
    """Whether two locations name the same place once normalised (links followed, connections left out).

    Never true for a location that no root could contain (dot segments in a URL, a query, no bucket).
    """
    try:
        return _parse(str(first)) == _parse(str(second))
    except _Unsafe:
        return False
