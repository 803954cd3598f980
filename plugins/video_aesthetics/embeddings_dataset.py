"""Stored embeddings read back: a file or a folder of parts checked to belong together, streamed by row group.

Everything read is untrusted: a file that is not Parquet, another tool's Parquet, metadata that is
not ours or contradicts the columns, lines past the records, parts of different runs are refused
with the reason. ``check_clip`` refuses a head's CLIP other than the one that made the embeddings.
The format is embeddings.py's, which writes it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from video_aesthetics.embeddings import (
    COLUMNS,
    DEFAULT_DTYPE,
    DTYPES,
    FORMAT,
    META_KEY,
    NUMPY_TYPES,
    PART_SUFFIX,
    ROW_GROUP_ROWS,
)
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import sha256_file
from video_aesthetics.provenance import DIR_WEIGHT_FILENAMES

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Part:
    """One Parquet file of a dataset: its metadata and the records of the parts before it."""

    path: Path
    meta: dict[str, Any]
    first_line: int


class EmbeddingsDataset:
    """An embeddings file, or a folder of them (read in name order), checked to belong together."""

    def __init__(self, location: Path | str) -> None:
        self.location = Path(location)
        files = _part_files(self.location)
        parts: list[Part] = []
        offset = 0
        for path in files:
            meta = read_metadata(path)
            parts.append(Part(path, meta, offset))
            offset += int(meta["records"])
        # A part without rows (a shard with no frame to score) cannot know the width: it fits any.
        reference = next((part for part in parts if part.meta.get("rows")), parts[0])
        for part in parts:
            keys = ("clip_sha256", "dim", "dtype", "whole_video") if part.meta.get("rows") else ("whole_video",)
            for key in keys:
                if part.meta.get(key) != reference.meta.get(key):
                    raise InputError(
                        f"embeddings {part.path} differs from {reference.path} in {key} "
                        f"({part.meta.get(key)!r} vs {reference.meta.get(key)!r}): a dataset's parts must come "
                        "from one run"
                    )
        self.parts = parts
        self.reference = reference
        self.records = offset

    @property
    def meta(self) -> dict[str, Any]:
        return self.reference.meta

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray, Any, np.ndarray]]:
        """(line, clip, key table, embeddings) per row group in order; lines count over the whole dataset.

        ``clip`` is -1 where null (whole-video); ``key table`` holds video and clip_id as pyarrow columns;
        the embeddings are a (rows, dim) numpy array of the stored type.
        """
        import pyarrow.parquet as pq

        for part in self.parts:
            # No read-ahead: pyarrow's background reading runs ahead of a slower consumer without bound.
            with pq.ParquetFile(part.path, pre_buffer=False) as handle:
                _check_schema(handle.schema_arrow, part)
                for batch in handle.iter_batches(batch_size=ROW_GROUP_ROWS, columns=list(COLUMNS), use_threads=False):
                    line = integers_of(batch.column("line"))
                    if len(line) and (line.min() < 1 or line.max() > int(part.meta["records"])):
                        raise InputError(
                            f"embeddings {part.path} name line {int(line.min())}..{int(line.max())} of a file of "
                            f"{part.meta['records']} records: the file is damaged"
                        )
                    clip = integers_of(batch.column("clip"), null=-1)
                    vectors = vectors_of(batch.column("embedding"), self.dim, part.meta["dtype"])
                    keys = batch.select(["video", "clip_id", "frame"])
                    yield line + part.first_line, clip, keys, vectors


# Integer columns read from their buffers: Array.to_numpy and fill_null import pandas, 0.2-0.4 s of a rescore's start.
_INTEGER_TYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64}


def integers_of(column: Any, null: int | None = None) -> np.ndarray:
    """An integer column (line, clip) as int64, a null as ``null`` (None: as pyarrow converts it);
    a column of another type as pyarrow converts it."""
    kind = _INTEGER_TYPES.get(str(column.type))
    if kind is None or (column.null_count and null is None):
        return np.asarray(column.to_numpy(zero_copy_only=False)).astype(np.int64)
    start, end = column.offset, column.offset + len(column)
    data = np.frombuffer(column.buffers()[1], dtype=kind, count=end)[start:].astype(np.int64)
    if null is not None and column.null_count:
        valid = np.unpackbits(np.frombuffer(column.buffers()[0], np.uint8), bitorder="little")[start:end]
        data[valid == 0] = null
    return data


def vectors_of(column: Any, dim: int, dtype: str = DEFAULT_DTYPE) -> np.ndarray:
    """The ``embedding`` column (an array or a chunked array) as a (rows, dim) numpy array of ``dtype``.

    A view of the column's bytes where it has one chunk; the file's metadata says ``dim`` and ``dtype``.
    """
    kind = np.dtype(NUMPY_TYPES[dtype])
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    arrays = []
    for chunk in chunks:
        if chunk.null_count:
            raise InputError("embeddings hold null values; the file is damaged")
        if chunk.type.byte_width != dim * kind.itemsize:
            raise InputError(
                f"embeddings of {chunk.type.byte_width} bytes are not {dim} x {dtype}; the file is damaged"
            )
        data = np.frombuffer(chunk.buffers()[1], dtype=kind, count=(chunk.offset + len(chunk)) * dim)
        arrays.append(data[chunk.offset * dim :].reshape(len(chunk), dim))
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(arrays) if arrays else np.zeros((0, dim), dtype=kind)


def _part_files(location: Path) -> list[Path]:
    try:
        mode = os.stat(location).st_mode
    except FileNotFoundError:
        raise InputError(
            f"embeddings {location} do not exist; pass the file (or folder) score --embeddings wrote"
        ) from None
    except OSError as err:
        raise InputError(f"cannot read embeddings {location}: {err.strerror}") from None
    if stat.S_ISREG(mode):
        return [location]
    if not stat.S_ISDIR(mode):
        raise InputError(f"embeddings {location} is a device, FIFO or socket, not a Parquet file or a folder of them")
    files = sorted(
        path for path in location.iterdir() if path.name.endswith(PART_SUFFIX) and not path.name.startswith(".")
    )
    files = [path for path in files if path.is_file()]
    if not files:
        raise InputError(f"embeddings folder {location} holds no *.parquet files")
    return files


def read_metadata(path: Path | str) -> dict[str, Any]:
    """The embeddings metadata of one Parquet file; InputError for anything else (not Parquet, another tool's file)."""
    import pyarrow.parquet as pq

    try:
        kv = pq.read_metadata(path).metadata or {}
    except (OSError, ValueError) as err:
        raise InputError(f"embeddings {path} is not a readable Parquet file ({err})") from None
    raw = kv.get(META_KEY.encode())
    if raw is None:
        raise InputError(f"{path} is a Parquet file without video-aesthetics embeddings metadata ({META_KEY})")
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"embeddings {path}: its {META_KEY} metadata is not JSON; the file is damaged") from None
    problems = [
        key
        for key, kind in (("format", int), ("dim", int), ("records", int), ("dtype", str), ("whole_video", bool))
        if not isinstance(meta.get(key) if isinstance(meta, dict) else None, kind)
    ]
    if problems:
        raise InputError(f"embeddings {path}: metadata lacks or mistypes {problems}; the file is damaged")
    if meta["format"] != FORMAT:
        raise InputError(f"embeddings {path} are in format {meta['format']}; this version reads format {FORMAT}")
    if meta["dtype"] not in DTYPES or meta["dim"] < 0 or meta["records"] < 0:
        raise InputError(f"embeddings {path}: metadata dtype/dim/records out of range; the file is damaged")
    return meta


def _check_schema(schema: Any, part: Part) -> None:
    import pyarrow as pa

    missing = [name for name in COLUMNS if schema.get_field_index(name) < 0]
    if missing:
        raise InputError(f"embeddings {part.path} lack the column(s) {missing}; the file is not ours or is damaged")
    kind = schema.field("embedding").type
    width = part.meta["dim"] * np.dtype(NUMPY_TYPES[part.meta["dtype"]]).itemsize
    empty = not part.meta.get("rows") and pa.types.is_binary(kind)
    if not empty and (not pa.types.is_fixed_size_binary(kind) or kind.byte_width != width):
        raise InputError(
            f"embeddings {part.path}: column embedding is {kind}, the metadata says {part.meta['dim']} x "
            f"{part.meta['dtype']}; the file is damaged"
        )


def check_clip(meta: Mapping[str, Any], clip_model: str | None, where: Path | str) -> None:
    """Refuse embeddings made by another CLIP than ``clip_model`` (None: any); the message names both."""
    if clip_model is None or not str(clip_model).strip():
        return
    stored = [str(d) for d in meta.get("clip_sha256") or []]
    spec = str((meta.get("clip") or {}).get("spec", "?"))
    named = clip_checksum(clip_model)
    if named is None:
        # A name the loader would fetch (ViT-L/14): without loading it, only its spelling can be compared.
        if clip_model.strip() == spec.strip():
            return
        raise ConfigError(
            f"the embeddings {where} were made by CLIP {spec!r} (sha256 {', '.join(stored) or 'unknown'}), "
            f"not by --clip-model {clip_model!r}: rescore them without --clip-model, or with that model"
        )
    if named not in stored:
        raise ConfigError(
            f"the embeddings {where} were made by CLIP {spec!r} (sha256 {', '.join(stored) or 'unknown'}), "
            f"not by --clip-model {clip_model!r} (sha256 {named}): a head sees only its own CLIP's embeddings; "
            "score the clips again with that model, or rescore without --clip-model"
        )


def clip_checksum(clip_model: str) -> str | None:
    """The SHA-256 of the weights ``clip_model`` names without loading them: a digest, a file, or a checkpoint folder.

    None for a name the loader would resolve through its cache or a hub (ViT-L/14, hf-hub:...).
    """
    text = clip_model.strip()
    if _SHA256.match(text.lower()):
        return text.lower()
    for prefix in ("local-dir:",):
        text = text.removeprefix(prefix)
    path = Path(text).expanduser()
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        for name in DIR_WEIGHT_FILENAMES:
            if (path / name).is_file():
                return sha256_file(path / name)
        raise ConfigError(f"--clip-model {clip_model}: the folder holds none of {', '.join(DIR_WEIGHT_FILENAMES)}")
    _, colon, rest = text.partition(":")
    if colon and Path(rest).expanduser().is_file():
        return sha256_file(Path(rest).expanduser())
    return None
