"""JsonlStorage: DataFlow's FileStorage contract over JSONL files, so the evaluator runs without DataFlow.

A pipeline calls ``step()`` once per operator. At step 0 ``read()`` reads ``first_entry_file_name``;
at step N > 0 it reads ``<cache_path>/<file_name_prefix>_step<N>.jsonl``, the file that step N-1's
``write()`` produced; ``write()`` at step N writes ``<cache_path>/<file_name_prefix>_step<N+1>.jsonl``.

Records survive the round trip exactly: ``read("dataframe")`` builds an object-dtype DataFrame, so
integers stay integers and JSON null stays None, while a key a record does not have is NaN; ``write()``
drops NaN (the key was absent) and writes None as null.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import atomic_writer
from video_aesthetics.jsonl import BOM, JsonlSource, decode_object, dumps

log = logging.getLogger(__name__)

OUTPUT_TYPES = ("dataframe", "dict")


class JsonlStorage:
    """A file storage with DataFlow FileStorage's constructor, ``step()``, ``read()`` and ``write()``.

    Only ``cache_type="jsonl"`` is supported. The first entry file may be JSONL or a ``.json`` file
    holding an array of objects.
    """

    def __init__(
        self,
        first_entry_file_name: str,
        cache_path: str = "./cache",
        file_name_prefix: str = "dataflow_cache",
        cache_type: str = "jsonl",
    ) -> None:
        if cache_type != "jsonl":
            raise ConfigError(
                f"JsonlStorage writes JSONL only, got cache_type={cache_type!r}; "
                "use cache_type='jsonl' (or DataFlow's FileStorage for other formats)"
            )
        self.first_entry_file_name = first_entry_file_name
        self.cache_path = cache_path
        self.file_name_prefix = file_name_prefix
        self.cache_type = cache_type
        self.operator_step = -1

    def step(self) -> JsonlStorage:
        """Advance to the next operator's step and return the storage (``evaluator.run(storage.step())``)."""
        self.operator_step += 1
        return self

    def reset(self) -> JsonlStorage:
        self.operator_step = -1
        return self

    def file_path(self, step: int) -> Path:
        """The file read at ``step`` (and written by ``step - 1``)."""
        if step == 0:
            return Path(self.first_entry_file_name)
        return Path(self.cache_path) / f"{self.file_name_prefix}_step{step}.{self.cache_type}"

    def read(self, output_type: str = "dataframe") -> pd.DataFrame | list[dict[str, Any]]:
        """This step's records as an object-dtype DataFrame, or as a list of dicts with ``"dict"``."""
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"read() output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        path = self.file_path(self._current_step("read"))
        records = self._read_records(path)
        log.info("read %d records from %s", len(records), path)
        if output_type == "dict":
            return records
        return pd.DataFrame(records, dtype=object)

    def write(self, data: pd.DataFrame | list[dict[str, Any]]) -> str:
        """Write ``data`` atomically as the next step's input; returns the path written."""
        records = _records_of(data)
        path = self.file_path(self._current_step("write") + 1)
        with atomic_writer(path) as handle:
            for number, record in enumerate(records):
                try:
                    handle.write(dumps(record) + "\n")
                except (TypeError, ValueError) as err:
                    raise InputError(
                        f"row {number} cannot be written as JSON ({err}); convert that column "
                        "to JSON types (str, int, float, bool, list, dict, None)"
                    ) from err
        log.info("wrote %d records to %s", len(records), path)
        return str(path)

    def _current_step(self, action: str) -> int:
        if self.operator_step < 0:
            raise RuntimeError(
                f"JsonlStorage.{action}() before step(): call storage.step() once per operator "
                "and hand the storage it returns to the operator, e.g. evaluator.run(storage.step())"
            )
        return self.operator_step

    def _read_records(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            if self.operator_step == 0:
                raise InputError(f"first_entry_file_name {path} does not exist; point it at the input JSONL")
            raise InputError(
                f"{path} does not exist: step {self.operator_step} reads what step "
                f"{self.operator_step - 1}'s operator wrote; run that operator first (or reset())"
            )
        if self.operator_step == 0 and path.suffix.lower() == ".json":
            return _read_json_array(path)
        return list(JsonlSource(path))


def _read_json_array(path: Path) -> list[dict[str, Any]]:
    """A ``.json`` file's array of records, each held to a JSONL line's rules by jsonl's decoder.

    NaN, Infinity, numbers too large for a float, integers of thousands of digits, repeated keys (at
    any depth), lone surrogates and nesting deeper than jsonl.MAX_DEPTH would each be lost or changed
    on the way to the output: they are refused, before any scoring, naming the file and the element.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}; check its permissions") from None
    body = data[len(BOM) :] if data.startswith(BOM) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path}: not valid UTF-8 (byte 0x{body[err.start]:02x} at byte {err.start + 1}); save it as UTF-8"
        ) from None
    not_array = f"{path}: a .json input must hold an array of objects; use JSONL (one object per line) otherwise"
    at = _skip_space(text, 0)
    if not text.startswith("[", at):
        raise InputError(not_array)
    records: list[dict[str, Any]] = []
    at = _skip_space(text, at + 1)
    if text.startswith("]", at):
        at += 1
    else:
        while True:
            record, end = _element(text, at, len(records), path)
            records.append(record)
            at = _skip_space(text, end)
            if text.startswith(",", at):
                at = _skip_space(text, at + 1)
            elif text.startswith("]", at):
                at += 1
                break
            else:
                raise InputError(f"{path}: malformed JSON (expected ',' or ']' at {_where(text, at)}); fix the file")
    at = _skip_space(text, at)
    if at != len(text):
        raise InputError(f"{path}: malformed JSON (extra data after the array at {_where(text, at)}); fix the file")
    return records


def _element(text: str, at: int, index: int, path: Path) -> tuple[dict[str, Any], int]:
    """Element ``index`` of the array, starting at ``text[at]``, and where it ends; InputError saying which and why."""
    try:
        return decode_object(text, at)
    except json.JSONDecodeError as err:
        where, reason = _where(text, err.pos), f"malformed JSON ({err.msg})"
    except ValueError as err:
        where, reason = _where(text, at), str(err)
    raise InputError(f"{path}: element {index} of the array ({where}): {reason}; fix or remove that element")


_SPACE = re.compile(r"[ \t\r\n]*")


def _skip_space(text: str, at: int) -> int:
    """The index of the first character at or after ``at`` that is not JSON whitespace."""
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _where(text: str, at: int) -> str:
    line = text.count("\n", 0, at) + 1
    return f"line {line} column {at - (text.rfind(chr(10), 0, at) + 1) + 1}"


def _records_of(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, pd.DataFrame):
        return [{str(k): json_value(v) for k, v in row.items() if not is_absent(v)} for row in data.to_dict("records")]
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return data
    raise InputError(f"write() takes a pandas DataFrame or a list of dicts, got {type(data).__name__}")


def is_absent(value: Any) -> bool:
    """A DataFrame cell that stands for a key the record does not have (NaN, pd.NA, NaT); None is JSON null."""
    return value is not None and pd.api.types.is_scalar(value) and bool(pd.isna(value))


def json_value(value: Any) -> Any:
    """Cells from non-JSON sources (numpy scalars and arrays, timestamps) as JSON types."""
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_value(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
