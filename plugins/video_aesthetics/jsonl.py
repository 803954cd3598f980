"""JSONL lines in and out: reading a file's lines, parsing each into a record or a BadLine, writing lines.

A line is a record only if it can be written back without loss: valid UTF-8 (a BOM on the first
line is allowed), one JSON object, finite numbers, no lone UTF-16 surrogates, no repeated keys, at
most MAX_DEPTH levels deep and integers of at most 4300 digits. Any other non-blank line is a
malformed line: it stops the run with file:line, or (skip_bad_records) goes to the rejects file,
where ``raw`` holds its text exactly, or ``raw_base64`` its bytes when they are not UTF-8.
A JsonlSource is read several times (counted, decoded, merged): each pass checks that the file is
still the one it was when the source was made (``file_identity``), so a file rewritten, truncated,
appended to or replaced during a run stops it instead of mixing two versions of the input.
What a record holds (its samples) is records.py's concern; this module knows only lines and objects.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from video_aesthetics.errors import InputError
from video_aesthetics.files import atomic_writer, is_stream

BOM = b"\xef\xbb\xbf"
# Deeper records could not be copied and written back within Python's recursion limit.
MAX_DEPTH = 100
_JSON_SPACE = b" \t\r\n"
# A lone surrogate can only come from a \uD800-\uDFFF escape; most lines have none and skip the check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
Check = Callable[[dict[str, Any]], "str | None"]
# A pass checks the file's identity when it opens it, every 4096 lines and at its end.
_CHECK_MASK = 4096 - 1
Identity = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class BadLine:
    """A line that is not a record: where it is, why, and its bytes exactly (without the newline)."""

    source: str
    line: int
    reason: str
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def as_reject(self) -> dict[str, Any]:
        """The rejects-file record: ``raw`` is the line's text, or ``raw_base64`` its bytes when not UTF-8."""
        # A file name with undecodable bytes must not make the rejects file unwritable.
        source = self.source.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        reject: dict[str, Any] = {"source": source, "line": self.line, "error": self.reason}
        try:
            reject["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            reject["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        return reject


def raw_line(reject: dict[str, Any]) -> bytes:
    """The exact bytes of a rejected line, from its rejects-file record."""
    if "raw_base64" in reject:
        return base64.b64decode(reject["raw_base64"])
    return str(reject["raw"]).encode("utf-8")


@dataclass
class JsonlSource:
    """A JSONL file read lazily, as often as needed (decoding workers each read it again).

    Every pass reads the file as it was when the source was made: ``identity`` (``file_identity``)
    is taken then, and each pass compares the open file's with it when it opens it, every few
    thousand lines and when it reaches the end, raising InputError on any difference. A file
    rewritten in place (``cat new > in``), truncated or appended to changes its size or times. A
    file replaced by rename (or deleted) is refused too: a later pass opens another inode, and the
    pass that has the old one open sees its change time move when its name goes (unlinking it).
    So the run scores the input as it was when it started, or stops with InputError and publishes
    nothing. Producers should write a new file and rename it into place before the run starts.

    With ``skip_bad_records`` a malformed line is reported through ``bad_lines`` and skipped;
    otherwise reading stops with an InputError that names the file and the line. ``name`` is how
    messages and rejects call the input (default: its path); ``check`` may refuse parsed records
    (see ``record_check``). The file must be a regular file: streams are spooled by ``score_file``.
    """

    path: Path
    skip_bad_records: bool = False
    name: str | None = None
    check: Check | None = None
    # The file as the run found it; pickled with the source, so spawned ranks and workers check the same.
    identity: Identity | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        try:
            info = os.stat(self.path)
        except (OSError, ValueError):
            return  # the first pass says what is wrong with it
        if stat.S_ISREG(info.st_mode):
            self.identity = file_identity(info)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self._parsed():
            if isinstance(item, dict):
                yield item

    def bad_lines(self) -> Iterator[BadLine]:
        for item in self._parsed():
            if isinstance(item, BadLine):
                yield item

    def _parsed(self) -> Iterator[dict[str, Any] | BadLine]:
        with open_input(self.path, self.label) as handle:
            self._check_unchanged(handle)
            for number, raw in _lines(handle, self.label):
                if not number & _CHECK_MASK:
                    self._check_unchanged(handle)
                record = parse_line(raw, self.label, number)
                if isinstance(record, dict) and self.check is not None:
                    problem = self.check(record)
                    if problem is not None:
                        record = BadLine(self.label, number, problem, raw)
                if isinstance(record, BadLine) and not self.skip_bad_records:
                    self._check_unchanged(handle)  # a line torn by a rewrite is the rewrite's fault, not the line's
                    raise InputError(
                        f"{record.source}:{record.line}: {record.reason}; fix or remove that line, "
                        "or pass --skip-bad-records (skip_bad_records=True) to send such lines to a rejects file"
                    )
                yield record
            # Before the consumer sees the end (and publishes what it made of the pass).
            self._check_unchanged(handle)

    def _check_unchanged(self, handle: Any) -> None:
        try:
            now = file_identity(os.fstat(handle.fileno()))
        except OSError as err:
            raise InputError(f"cannot read input {self.label}: {err.strerror}") from None
        if self.identity is None:
            self.identity = now  # made before its file existed: the first pass's file is the run's
        elif now != self.identity:
            raise InputError(
                f"input {self.label} changed while the run was reading it ({_what_changed(self.identity, now)}); the run "
                "stops rather than mix two versions of it: write inputs to a new file and rename them "
                "into place, then rerun"
            )


def file_identity(info: os.stat_result) -> Identity:
    """What tells one version of a file from another: a rewrite in place (even to the same size) moves
    its modification and change times, a replacement by rename is another inode (and moves the old
    one's change time). The change time cannot be set back (utime moves it); Linux 6.13+ gives a
    change right after a stat a distinct time (older kernels may not, within one clock tick)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _what_changed(before: Identity, after: Identity) -> str:
    if before[:2] != after[:2]:
        return "another file was renamed into its place"
    if before[2] != after[2]:
        return f"its size went from {before[2]} to {after[2]} bytes"
    if before[3] != after[3]:
        return "it was written to: its modification time moved"
    return "its change time moved: it was written to, renamed over, deleted, linked or its permissions changed"


def input_kind(path: Path | str, label: str | None = None) -> str:
    """ "file" (read as often as needed) or "stream" (a pipe, FIFO or socket: read once); InputError otherwise."""
    label = label if label is not None else str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"input file {label} does not exist; check the --input path") from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read input {label}: {getattr(err, 'strerror', None) or err}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"input {label} is a folder; pass one JSONL file (the DAG takes folders and globs)")
    if is_stream(mode):
        return "stream"
    if not stat.S_ISREG(mode):
        raise InputError(f"input {label} is a device, not a file of records; pass a JSONL file, a pipe or -")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as err:
        raise InputError(f"cannot read input {label}: {err.strerror}; check its permissions") from None
    return "file"


def open_input(path: Path | str, label: str | None = None) -> Any:
    """A regular file opened for reading in binary; InputError (saying what to change) when it cannot be."""
    label = label if label is not None else str(path)
    if input_kind(path, label) == "stream":
        raise InputError(
            f"input {label} is a pipe or socket, which can be read only once but is read several times "
            "here; score_file and the CLI copy such inputs first, or save it to a file"
        )
    try:
        return open(path, "rb")
    except OSError as err:
        raise InputError(f"cannot read input {label}: {err.strerror}; check its permissions") from None


def read_lines(path: Path | str, label: str | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the newline) of each non-blank line; only "\\n" ends a line."""
    label = label if label is not None else str(path)
    with open_input(path, label) as handle:
        yield from _lines(handle, label)


def _lines(handle: Any, label: str) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the newline) of each non-blank line of an open file."""
    number = 0
    while True:
        try:
            raw = handle.readline()
        except OSError as err:
            raise InputError(f"cannot read input {label} after line {number}: {err.strerror}") from None
        if not raw:
            return
        number += 1
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        body = raw[len(BOM) :] if number == 1 and raw.startswith(BOM) else raw
        if body.strip(_JSON_SPACE):
            yield number, raw


def parse_line(data: str | bytes, source: Path | str, number: int) -> dict[str, Any] | BadLine:
    """One JSONL line (bytes or text, with or without its newline) as a record, or a BadLine saying why not."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    body = raw[len(BOM) :] if number == 1 and raw.startswith(BOM) else raw

    def bad(reason: str) -> BadLine:
        return BadLine(str(source), number, reason, raw)

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return bad(f"not valid UTF-8 (byte 0x{body[err.start]:02x} at byte {err.start + 1})")
    try:
        if text.startswith("\ufeff"):
            # What json.loads says of a BOM (a line's first BOM is taken off above); decode() alone would not check.
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        record = _STRICT.decode(text)
    except json.JSONDecodeError as err:
        return bad(f"malformed JSON ({err.msg} at column {err.colno})")
    except RecursionError:
        return bad(f"nested deeper than {MAX_DEPTH} levels")
    except ValueError as err:
        return bad(_refusal(err, text))
    if not isinstance(record, dict):
        return bad(f"a record must be a JSON object, got {type(record).__name__}")
    problem = _unwritable(record, text)
    return bad(problem) if problem else record


def decode_object(text: str, start: int = 0) -> tuple[dict[str, Any], int]:
    """The JSON object that starts at ``text[start]`` and the index just after it, held to the rules of
    a line (module docstring) by the same decoder; json.JSONDecodeError (a ValueError) for malformed
    JSON, ValueError saying why for any other refusal. For a JSON array of records (dataflow.storage)."""
    try:
        record, end = _STRICT.raw_decode(text, start)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:
        raise ValueError(_refusal(err, text, start)) from None
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    problem = _unwritable(record, text[start:end])
    if problem:
        raise ValueError(problem)
    return record, end


class _BadNumber(ValueError):
    """A number the decoder refuses; ``literal`` is how it is written, to find the field it is in."""

    def __init__(self, message: str, literal: str) -> None:
        super().__init__(message)
        self.literal = literal


def _refusal(err: ValueError, text: str, start: int = 0) -> str:
    """Why the decoder refused ``text`` (from ``start``), naming the field of a refused number when it can."""
    message = str(err)
    if "integer string conversion" in message:
        return f"an integer of more than {_int_digits()} digits"
    if isinstance(err, _BadNumber):
        # Only on the way to an error: the first place the refused literal is a field's value.
        found = re.compile(rf'"((?:[^"\\]|\\.)*)"\s*:\s*{re.escape(err.literal)}(?![\w.+-])').search(text, start)
        if found:
            return f"{message}, in field {found.group(1)!r}"
    return message


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a JSON number (only finite numbers can be written back)", name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"the number {text[:40]} is too large for a 64-bit float", text)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears twice in one object (one value would be lost)")
            seen.add(key)
    return record


# One strict decoder for every line: json.loads with options builds a new one (and its scanner) per call.
_STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys)


def _int_digits() -> int:
    import sys

    return sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300


def _unwritable(record: dict[str, Any], text: str) -> str | None:
    """Why a parsed record could not be written back as it came, or None."""
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(record) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if _SURROGATE_ESCAPE.search(text):
        try:
            dumps(record).encode("utf-8")
        except UnicodeEncodeError:
            return "a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair) cannot be written as UTF-8"
    return None


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def dumps(record: dict[str, Any]) -> str:
    """One output line; non-ASCII is kept as it is, NaN is refused rather than written as invalid JSON."""
    return _ENCODER.encode(record)


def write_jsonl(path: Path | str, records: Iterable[dict[str, Any]]) -> int:
    count = 0
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
            count += 1
    return count


def rejects_location(output: str) -> str:
    """``<output stem>.rejects.jsonl`` beside ``output``, a path or a URL (pathlib would fold a URL's "//")."""
    stem = output[: -len(".jsonl")] if output.endswith(".jsonl") else output
    return f"{stem}.rejects.jsonl"


def default_rejects_path(output: Path | str) -> Path:
    return Path(rejects_location(str(output)))
