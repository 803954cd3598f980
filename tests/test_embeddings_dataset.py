"""Stored embeddings read back (embeddings_dataset.py): hostile files refused with the reason, parts checked to belong together."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.media import clip_record
from video_aesthetics.config import ScoringConfig
from video_aesthetics.embeddings import META_KEY, EmbeddingsOutput, EmbeddingWriter
from video_aesthetics.embeddings_dataset import (
    EmbeddingsDataset,
    check_clip,
    clip_checksum,
    integers_of,
    read_metadata,
    vectors_of,
)
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import sha256_file
from video_aesthetics.provenance import DIR_WEIGHT_FILENAMES
from video_aesthetics.records import Sample, SampleResult

WEIGHTS = "ab" * 32
FRAMES = 3


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four records of two clips each, FRAMES frames a clip, written by the writer as a run writes them (no model)."""
    folder = tmp_path_factory.mktemp("dataset")
    records = [clip_record(f"./v/v{i}.mp4", [f"v{i}_0", f"v{i}_1"]) for i in range(4)]
    model = {"clip": {"spec": "tiny", "files": {"/w/tiny.pt": WEIGHTS}}, "head": {}}
    rng = np.random.default_rng(0)
    vectors = []
    with EmbeddingWriter(EmbeddingsOutput(folder / "e.parquet", "float32"), ScoringConfig(), model) as writer:
        seq = 0
        for number, record in enumerate(records):
            for index in range(2):
                result = SampleResult(seq, 5.0)
                raw = rng.normal(size=(FRAMES, 16)).astype(np.float32)
                result.embeddings = raw / np.linalg.norm(raw, axis=1, keepdims=True)
                result.frames = [f"frame_{k:06d}.jpg" for k in range(FRAMES)]
                vectors.append(result.embeddings)
                writer.add(record, Sample(seq, number, index, None), result)
                seq += 1
        writer.commit(len(records))
    return {"path": folder / "e.parquet", "vectors": np.concatenate(vectors)}


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_a_dataset_reads_back_what_was_written_in_order(written: dict[str, Any]) -> None:
    dataset = EmbeddingsDataset(written["path"])
    assert (dataset.records, dataset.dim, dataset.meta["clip_sha256"]) == (4, 16, [WEIGHTS])
    lines, clips, keys, vectors = (list(x) for x in zip(*dataset.batches(), strict=True))
    np.testing.assert_array_equal(np.concatenate(vectors), written["vectors"])
    assert np.concatenate(lines).tolist() == [n for n in range(1, 5) for _ in range(2 * FRAMES)]
    assert np.concatenate(clips).tolist() == [c for _ in range(4) for c in (0, 1) for _ in range(FRAMES)]
    assert pa.Table.from_batches(keys).column("clip_id")[FRAMES].as_py() == "v0_1"


def test_vectors_are_a_view_of_the_column_and_refuse_a_wrong_width(written: dict[str, Any]) -> None:
    column = pq.read_table(written["path"]).column("embedding")
    np.testing.assert_array_equal(vectors_of(column, 16, "float32"), written["vectors"])
    with pytest.raises(InputError, match=r"not 8 x float32"):
        vectors_of(column, 8, "float32")
    nulls = pa.array([None], type=pa.binary(64))
    with pytest.raises(InputError, match="null"):
        vectors_of(nulls, 16, "float32")
    assert vectors_of(pa.chunked_array([], type=pa.binary(64)), 16, "float32").shape == (0, 16)


def test_the_clip_is_checked_by_digest_file_folder_or_name(tmp_path: Path, written: dict[str, Any]) -> None:
    meta = read_metadata(written["path"])
    check_clip(meta, None, "e.parquet")
    check_clip(meta, WEIGHTS, "e.parquet")
    check_clip(meta, "tiny", "e.parquet")  # a name is compared by its spelling
    weights = tmp_path / "other.pt"
    weights.write_bytes(b"other weights")
    assert clip_checksum(str(weights)) == clip_checksum(f"ViT-L-14:{weights}") == sha256_file(weights)
    with pytest.raises(ConfigError, match=r"made by CLIP 'tiny'.*not by --clip-model .*other\.pt"):
        check_clip(meta, str(weights), "e.parquet")
    with pytest.raises(ConfigError, match="not by --clip-model 'ViT-L/14'"):
        check_clip(meta, "ViT-L/14", "e.parquet")
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    with pytest.raises(ConfigError, match="holds none of"):
        clip_checksum(f"local-dir:{folder}")
    (folder / DIR_WEIGHT_FILENAMES[-1]).write_bytes(b"w")
    assert clip_checksum(str(folder)) == sha256_file(folder / DIR_WEIGHT_FILENAMES[-1])
    assert clip_checksum("hf-hub:org/repo") is None


def _rewrite(
    source: Path, target: Path, table: pa.Table | None = None, meta: dict[str, Any] | str | None = "keep"
) -> Path:
    original = pq.read_table(source)
    kv = dict(pq.read_metadata(source).metadata)
    kv.pop(b"ARROW:schema", None)
    if meta is None:
        kv.pop(META_KEY.encode())
    elif meta != "keep":
        kv[META_KEY.encode()] = meta.encode() if isinstance(meta, str) else json.dumps(meta).encode()
    table = (table if table is not None else original).replace_schema_metadata(None)
    with pq.ParquetWriter(target, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata(kv)
    return target


def test_hostile_embeddings_are_refused_with_the_reason(tmp_path: Path, written: dict[str, Any]) -> None:
    path = written["path"]
    meta = read_metadata(path)
    table = pq.read_table(path)
    cases: dict[str, Path] = {
        "not a readable Parquet": tmp_path / "text.parquet",
        "without video-aesthetics embeddings metadata": _rewrite(path, tmp_path / "nometa.parquet", meta=None),
        "not JSON": _rewrite(path, tmp_path / "badjson.parquet", meta="{"),
        "lacks or mistypes": _rewrite(path, tmp_path / "mistyped.parquet", meta={**meta, "dim": "768"}),
        "format 2": _rewrite(path, tmp_path / "format.parquet", meta={**meta, "format": 2}),
        "out of range": _rewrite(path, tmp_path / "dtype.parquet", meta={**meta, "dtype": "float64"}),
        "do not exist": tmp_path / "absent.parquet",
        "FIFO": _fifo(tmp_path / "fifo.parquet"),
        "holds no": tmp_path / "empty-folder",
    }
    cases["not a readable Parquet"].write_text("line,video\n1,a.mp4\n")
    cases["holds no"].mkdir()
    for reason, location in cases.items():
        with pytest.raises(InputError, match=re.escape(reason)):
            list(EmbeddingsDataset(location).batches())
    # Columns that contradict the metadata, rows out of order, lines past the file's records.
    narrow = _rewrite(path, tmp_path / "narrow.parquet", meta={**meta, "dim": 512})
    shuffled = _rewrite(path, tmp_path / "shuffled.parquet", table=table.take(list(reversed(range(table.num_rows)))))
    past = _rewrite(path, tmp_path / "past.parquet", meta={**meta, "records": 2})
    dropped = _rewrite(path, tmp_path / "dropped.parquet", table=table.drop_columns(["clip_id"]))
    from video_aesthetics.head import FoldedHead
    from video_aesthetics.rescore_matching import AffineHead, _RowStream

    for location, reason in ((narrow, "metadata says 512"), (past, "of a file of 2 records"), (dropped, "clip_id")):
        with pytest.raises(InputError, match=re.escape(reason)):
            list(EmbeddingsDataset(location).batches())
    with pytest.raises(InputError, match="not in input order"):
        dataset = EmbeddingsDataset(shuffled)
        _RowStream(dataset, AffineHead(FoldedHead(np.zeros(dataset.dim), 0.0), {})).through(10)


def test_parts_of_different_runs_are_refused(tmp_path: Path, written: dict[str, Any]) -> None:
    meta = read_metadata(written["path"])
    folder = tmp_path / "parts"
    folder.mkdir()
    _rewrite(written["path"], folder / "part-00000.parquet")
    _rewrite(written["path"], folder / "part-00001.parquet", meta={**meta, "clip_sha256": ["0" * 64]})
    with pytest.raises(InputError, match="clip_sha256"):
        EmbeddingsDataset(folder)
    (folder / "part-00001.parquet").unlink()
    _rewrite(written["path"], folder / "part-00001.parquet")
    dataset = EmbeddingsDataset(folder)
    assert dataset.records == 8 and [p.first_line for p in dataset.parts] == [0, 4]
    lines = np.concatenate([line for line, _, _, _ in dataset.batches()])
    assert lines.min() == 1 and lines.max() == 8


@pytest.mark.parametrize("kind", [pa.int8(), pa.int16(), pa.int32(), pa.int64()])
def test_integer_columns_read_from_their_buffers(kind: pa.DataType) -> None:
    # Sliced (an offset into the buffers) and with nulls, as a row group's clip column can be.
    column = pa.array([5, None, -3, 7, None, 2], kind).slice(1, 4)
    clips = integers_of(column, null=-1)
    assert clips.dtype == np.int64
    assert clips.tolist() == [-1, -3, 7, -1]
    assert integers_of(pa.array([1, 2, 3], kind).slice(1)).tolist() == [2, 3]


def test_integer_columns_of_another_type_are_converted() -> None:
    assert integers_of(pa.array([1.0, 4.0])).tolist() == [1, 4]
