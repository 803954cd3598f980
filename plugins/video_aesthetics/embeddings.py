"""CLIP embeddings beside the scores: one Parquet row per scored frame, written streaming and atomically.

A file holds the frames of one scored JSONL file, in input order. Its columns are the frame's key
(``line``: the 1-based line of its record in the scored JSONL; ``video``; ``clip``: the clip's index
in its record, null in whole-video mode; ``clip_id``; ``frame``: the frame's file name, or ``#N``
for frame N of a video) and ``embedding``, the L2-normalised image embedding the head saw: ``dim``
little-endian float16 (the default) or float32 values as one fixed-size binary value. Not a Parquet
list: a list column is decoded value by value with its nesting levels, about 10x slower to read than
the same bytes as one flat value (measured with pyarrow on this project's 768-wide vectors), and
``rescore`` reads nothing else. ``embeddings_dataset.vectors_of`` turns the column into a (rows, dim) array without copying. ``line`` and ``clip`` together name one clip
without ambiguity, even when two records hold clips with the same id.

The file's Parquet metadata (key ``video_aesthetics.embeddings``, JSON) names the CLIP model (the
identity a run summary records, with its weights' SHA-256s), the width, the storage type, the
number of records of the scored file and the project's version. A folder of such files (the DAG's
``embeddings/part-NNNNN.parquet``) is one dataset: its parts, in name order, follow each other,
and each part's lines count from the records of the parts before it. Reading them back is embeddings_dataset.py's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from video_aesthetics import __version__
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.files import PendingFile
from video_aesthetics.parameters import DEFAULTS, EMBEDDING_DTYPES
from video_aesthetics.records import Sample, SampleResult, clip_id, outcome, video_path, video_stem

log = logging.getLogger(__name__)

FORMAT = 1
META_KEY = "video_aesthetics.embeddings"
DTYPES = EMBEDDING_DTYPES  # declared with the other parameters (video_aesthetics.parameters)
# Stored little-endian whatever the machine, so that a file reads the same everywhere.
NUMPY_TYPES = {"float16": "<f2", "float32": "<f4"}
DEFAULT_DTYPE: str = DEFAULTS.embeddings_dtype
# Rows per row group: about 25 MB of float16 ViT-L/14 embeddings, so writer and reader hold one at a time.
ROW_GROUP_ROWS = 16384
COLUMNS = ("line", "video", "clip", "clip_id", "frame", "embedding")
PART_SUFFIX = ".parquet"


def check_dtype(dtype: Any) -> str:
    """The storage type named by ``dtype`` (float16 or float32); ConfigError otherwise."""
    if dtype is True:
        return DEFAULT_DTYPE
    text = str(dtype).strip().lower() if isinstance(dtype, str) else None
    if text not in DTYPES:
        raise ConfigError(
            f"embeddings_dtype must be float16 (half the size, scores within 1e-3) or float32, got {dtype!r}"
        )
    return text


@dataclass(frozen=True)
class EmbeddingsOutput:
    """Where a scoring run writes its embeddings, and in which storage type."""

    path: Path
    dtype: str = DEFAULT_DTYPE

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))


def clip_digests(clip_identity: Mapping[str, Any] | None) -> list[str]:
    """The SHA-256s of a CLIP model's weight files, from its identity (clip_loader's ``files``)."""
    files = (clip_identity or {}).get("files") or {}
    return sorted({str(d) for d in files.values()}) if isinstance(files, Mapping) else []


class EmbeddingWriter:
    """Rows for one scored JSONL file, streamed into row groups of a temporary file beside ``path``.

    ``add`` is merge_results' ``on_sample`` hook; ``commit`` writes the metadata and renames the file
    into place, and leaving the ``with`` block without it removes the temporary (a failed or killed
    run leaves no partial file behind).
    """

    def __init__(self, output: EmbeddingsOutput, config: ScoringConfig, model: Mapping[str, Any] | None) -> None:

        self.output = output
        self.config = config
        self.model = dict(model or {})
        self.numpy_type = np.dtype(NUMPY_TYPES[output.dtype])
        self.pending = PendingFile(output.path, "wb")
        self.writer: Any = None
        self.dim: int | None = None
        self.rows = 0
        self.clips = 0
        self.records = 0
        self._last_record = -1
        self._clear()

    def _clear(self) -> None:
        self._lines: list[int] = []
        self._videos: list[str | None] = []
        self._clip_index: list[int | None] = []
        self._clip_ids: list[str | None] = []
        self._frames: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._buffered = 0

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.pending.committed:
            self.discard()

    def add(self, record: dict[str, Any], sample: Sample, result: SampleResult) -> None:
        """Buffer the frames of one scored sample; its embeddings are dropped from ``result`` once buffered."""
        vectors, frames = result.embeddings, result.frames
        result.embeddings, result.frames = None, None
        # Only clips written with a score: one whose score is not finite is written as an error, and a
        # rescore keeps that error (the rows would contradict the scored file).
        if vectors is None or outcome(result)[1] is not None or not len(vectors):
            return
        vectors = np.asarray(vectors)
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(frames or []) != len(vectors):
            raise RuntimeError(f"internal error: embeddings of sample {sample.seq} have shape {vectors.shape}")
        count = len(vectors)
        video = video_path(record, self.config.input_video_key)
        if self.config.whole_video:
            cid = None
        else:
            stem = video_stem(record, self.config.input_video_key) or ""
            clips = record[self.config.video_clips_key or ""]
            clips = clips["clips"] if isinstance(clips, dict) else clips
            cid = clip_id(clips[sample.clip], stem, int(sample.clip or 0))
        self._lines.extend([sample.record + 1] * count)
        self._videos.extend([video] * count)
        self._clip_index.extend([sample.clip] * count)
        self._clip_ids.extend([cid] * count)
        self._frames.extend(frames or [])
        self._vectors.append(vectors)
        self._buffered += count
        self.clips += 1
        if self._buffered >= ROW_GROUP_ROWS:
            self._flush()

    def _schema(self) -> Any:
        import pyarrow as pa

        return pa.schema(
            [
                pa.field("line", pa.int64(), nullable=False),
                pa.field("video", pa.string()),
                pa.field("clip", pa.int32()),
                pa.field("clip_id", pa.string()),
                pa.field("frame", pa.string(), nullable=False),
                pa.field("embedding", _embedding_type(self.dim, self.numpy_type), nullable=False),
            ]
        )

    def _open(self) -> None:
        import pyarrow.parquet as pq

        # Dictionary encoding and statistics only for the key columns, which repeat: tried on the
        # embeddings they never pay, and a dictionary-encoded page reads 5x slower.
        self.writer = pq.ParquetWriter(
            self.pending.handle,
            self._schema(),
            # Random-looking floats do not compress: snappy on them only costs reading time.
            compression={
                "line": "snappy",
                "video": "snappy",
                "clip": "snappy",
                "clip_id": "snappy",
                "frame": "snappy",
                "embedding": "none",
            },
            use_dictionary=["video", "clip_id", "frame"],
            write_statistics=["line", "clip"],
        )

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._buffered:
            return
        if self.writer is None:
            self._open()
        flat = np.ascontiguousarray(np.concatenate(self._vectors), dtype=self.numpy_type)
        width = _embedding_type(self.dim, self.numpy_type)
        embedding = pa.FixedSizeBinaryArray.from_buffers(width, len(flat), [None, pa.py_buffer(flat.tobytes())])
        table = pa.Table.from_arrays(
            [
                pa.array(self._lines, pa.int64()),
                pa.array(self._videos, pa.string()),
                pa.array(self._clip_index, pa.int32()),
                pa.array(self._clip_ids, pa.string()),
                _utf8_array(self._frames),
                embedding,
            ],
            schema=self._schema(),
        )
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += self._buffered
        self._clear()

    def metadata(self, records: int) -> dict[str, Any]:
        clip = self.model.get("clip") or {}
        return {
            "format": FORMAT,
            "producer": "video-aesthetics",
            "version": __version__,
            "clip": clip,
            "clip_sha256": clip_digests(clip),
            "head": self.model.get("head") or {},
            "dim": self.dim or 0,
            "dtype": self.output.dtype,
            "records": records,
            "clips": self.clips,
            "rows": self.rows,
            "whole_video": self.config.whole_video,
            "input_video_key": self.config.input_video_key,
            "video_clips_key": self.config.video_clips_key,
            "output_key": self.config.output_key,
            "precision": self.model.get("precision"),
        }

    def finish(self, records: int) -> PendingFile:
        """Complete the file for a scored JSONL of ``records`` records; it is renamed into place by committing
        the returned PendingFile (with the run's other outputs: files.publish_together)."""
        self._flush()
        if self.writer is None:
            self._open()  # no frame was scored: an empty file still says so, with its metadata
        self.records = records
        meta = self.metadata(records)
        self.writer.add_key_value_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
        self.writer.close()
        self.writer = None
        self.pending.finish()
        log.info(
            "wrote %d embeddings (%d clips, %s) for %s", self.rows, self.clips, self.output.dtype, self.output.path
        )
        return self.pending

    def commit(self, records: int) -> dict[str, Any]:
        """Finish the file and rename it into place; its summary."""
        self.finish(records).commit()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """What a run summary says of its embeddings: where, how many rows and clips, the storage type."""
        return {"path": str(self.output.path), "rows": self.rows, "clips": self.clips, "dtype": self.output.dtype}

    def discard(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                log.debug("closing a discarded embeddings writer failed", exc_info=True)
        self.pending.discard()


def _embedding_type(dim: int | None, kind: np.dtype) -> Any:
    """The embedding column's type: ``dim`` values of ``kind`` as one fixed-size binary value.

    A file without rows never learnt the width, and Parquet has no fixed-size binary of 0 bytes: its
    column is plain binary, which the reader accepts only when the metadata says there are no rows.
    """
    import pyarrow as pa

    return pa.binary(dim * kind.itemsize) if dim else pa.binary()


def _utf8_array(names: list[str]) -> Any:
    """Frame file names as an Arrow string column; a name that is not UTF-8 is kept with \\xNN escapes.

    The file system hands such names over with surrogate escapes, which Parquet's UTF-8 cannot hold:
    one oddly named frame must not end a run.
    """
    import pyarrow as pa

    try:
        return pa.array(names, pa.string())
    except UnicodeEncodeError:
        escaped = [n.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for n in names]
        return pa.array(escaped, pa.string())
