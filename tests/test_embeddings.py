"""video_aesthetics.embeddings: what a scoring run stores beside its scores, and how the files are read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.media import clip_record, frame_dataset, read_jsonl, write_frames, write_jsonl
from video_aesthetics import __version__, embeddings
from video_aesthetics.config import ScoringConfig
from video_aesthetics.embeddings import EmbeddingsOutput, EmbeddingWriter
from video_aesthetics.embeddings_dataset import EmbeddingsDataset, read_metadata, vectors_of
from video_aesthetics.errors import ConfigError
from video_aesthetics.files import sha256_file
from video_aesthetics.runner import score_file, score_records

DOCS = Path(__file__).resolve().parents[1] / "docs" / "embeddings.md"


def _config(model_args: dict[str, str], root: Path, **changes: Any) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": str(root), "num_workers": 0, "device": "cpu", **changes})


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, model_args: dict[str, str]) -> dict[str, Any]:
    """One run in float32 with frame scores, over clips with duplicate ids across records and unscorable clips."""
    root = tmp_path_factory.mktemp("embeddings")
    frames = root / "frames"
    write_frames(frames, "a", "a_0", 5, seed=1)
    write_frames(frames, "a", "shared", 2, seed=2)
    write_frames(frames, "b", "shared", 4, seed=3)
    records = [
        clip_record("./v/a.mp4", ["a_0", "shared", "missing"]),
        {"caption": "passes through"},
        clip_record("./v/b.mp4", ["shared"]),
        # The same video and clip id again, in another record: a different (line, clip) key.
        clip_record("./v/a.mp4", ["shared"]),
    ]
    source = write_jsonl(root / "in.jsonl", records)
    out = root / "out.jsonl"
    config = _config(model_args, frames, frame_scores=True, load_num=3)
    stats = score_file(source, out, config, embeddings=EmbeddingsOutput(root / "e.parquet", "float32"))
    return {"root": root, "out": out, "path": root / "e.parquet", "stats": stats, "frames": frames}


def test_one_row_per_scored_frame_in_input_order(scored: dict[str, Any]) -> None:
    table = pq.read_table(scored["path"])
    assert table.column_names == ["line", "video", "clip", "clip_id", "frame", "embedding"]
    keys = table.drop_columns(["embedding"]).to_pylist()
    expected = [
        *[(1, "./v/a.mp4", 0, "a_0", name) for name in ("frame_000000.jpg", "frame_000050.jpg", "frame_000100.jpg")],
        *[(1, "./v/a.mp4", 1, "shared", name) for name in ("frame_000000.jpg", "frame_000025.jpg")],
        *[(3, "./v/b.mp4", 0, "shared", name) for name in ("frame_000000.jpg", "frame_000050.jpg", "frame_000075.jpg")],
        *[(4, "./v/a.mp4", 0, "shared", name) for name in ("frame_000000.jpg", "frame_000025.jpg")],
    ]
    assert [(k["line"], k["video"], k["clip"], k["clip_id"], k["frame"]) for k in keys] == expected
    # (line, clip) is unique per clip although "shared" is the id of three clips, two of them of one video.
    assert len({(k["line"], k["clip"]) for k in keys}) == 4
    assert scored["stats"].embeddings == {"path": str(scored["path"]), "rows": 10, "clips": 4, "dtype": "float32"}


def test_the_embedding_is_what_the_head_saw(scored: dict[str, Any], model_args: dict[str, str]) -> None:
    import torch

    from video_aesthetics.head import fold_head, head_scores, load_head

    table = pq.read_table(scored["path"])
    vectors = vectors_of(table.column("embedding"), 768, "float32").astype(np.float32)
    assert vectors.shape == (10, 768) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    head = load_head(model_args["mlp_checkpoint"]).module
    with torch.inference_mode():
        from_embeddings = head(torch.from_numpy(vectors)).squeeze(-1).tolist()
    written = [
        s
        for record in read_jsonl(scored["out"])
        for clip in (record.get("video_clips") or {}).get("clips", [])
        for s in clip.get("aesthetic_frame_scores") or []
    ]
    # The run applied the folded head (head.head_scores) to these very float32 values: the same bytes, and
    # within 1e-6 of the head applied layer by layer in float32.
    assert written == head_scores(fold_head(head), vectors).tolist()
    assert from_embeddings == pytest.approx(written, abs=1e-6)


def test_metadata_names_the_model_the_run_summary_records(scored: dict[str, Any]) -> None:
    meta = read_metadata(scored["path"])
    clip = scored["stats"].model["clip"]
    assert meta["clip"] == clip
    weights = Path(next(p for p in clip["files"] if p.endswith(".safetensors")))
    assert sha256_file(weights) in meta["clip_sha256"]
    assert meta["head"] == scored["stats"].model["head"]
    assert (meta["dim"], meta["dtype"], meta["version"], meta["records"], meta["rows"], meta["clips"]) == (
        768,
        "float32",
        __version__,
        4,
        10,
        4,
    )
    assert meta["whole_video"] is False and meta["video_clips_key"] == "video_clips"


def test_float16_is_the_default_and_half_the_size(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str]
) -> None:
    assert EmbeddingsOutput(tmp_path / "e.parquet").dtype == "float16"
    out = tmp_path / "out.jsonl"
    score_file(
        scored["root"] / "in.jsonl",
        out,
        _config(model_args, scored["frames"]),
        embeddings=EmbeddingsOutput(tmp_path / "e.parquet"),
    )
    column = pq.read_table(tmp_path / "e.parquet").column("embedding")
    assert column.type.byte_width == 768 * 2
    full = vectors_of(pq.read_table(scored["path"]).column("embedding"), 768, "float32")
    half = vectors_of(column, 768, "float16").astype(np.float32)
    assert np.abs(half - full).max() < 1e-3
    assert os.path.getsize(tmp_path / "e.parquet") < 0.7 * os.path.getsize(scored["path"])


@pytest.mark.parametrize("dtype", ["float64", "half", "", None, 16])
def test_other_storage_types_are_refused(tmp_path: Path, dtype: Any) -> None:
    with pytest.raises(ConfigError, match="float16"):
        EmbeddingsOutput(tmp_path / "e.parquet", dtype)


def test_rows_stream_in_row_groups(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embeddings, "ROW_GROUP_ROWS", 3)
    out = tmp_path / "out.jsonl"
    path = tmp_path / "e.parquet"
    score_file(
        scored["root"] / "in.jsonl",
        out,
        _config(model_args, scored["frames"], load_num=3),
        embeddings=EmbeddingsOutput(path, "float32"),
    )
    assert pq.ParquetFile(path).metadata.num_row_groups >= 3
    assert pq.read_table(path).equals(pq.read_table(scored["path"]))
    # Read back in batches, with the same keys and vectors.
    rows = sum(len(line) for line, _, _, _ in EmbeddingsDataset(path).batches())
    assert rows == 10


def test_a_failed_run_leaves_no_file_behind(tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str]) -> None:
    """The writer of a run whose output fails half-way (a disk error) removes its temporary; the old file stays."""
    from video_aesthetics.jsonl import JsonlSource

    path = tmp_path / "e.parquet"
    path.write_bytes(b"the previous run's file")
    config = _config(model_args, scored["frames"])

    def failing(records: Any) -> None:
        next(records)
        raise OSError(28, "No space left on device")

    with EmbeddingWriter(EmbeddingsOutput(path), config, None) as writer, pytest.raises(OSError, match="No space"):
        score_records(JsonlSource(scored["root"] / "in.jsonl"), config, failing, embeddings=writer)
    assert writer.rows == 0 and writer.clips == 2  # rows were buffered: the failure came before a row group
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet"]
    assert path.read_bytes() == b"the previous run's file"


def test_a_failed_cli_run_publishes_neither_output_nor_embeddings(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str]
) -> None:
    """A record scoring refuses (output_key clobbering text) stops the run before anything is published."""
    from video_aesthetics.cli import main

    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            *read_jsonl(scored["root"] / "in.jsonl"),
            '{"video": "x.mp4", "video_clips": [{"id": "x"}], "scores": "text"}',
        ],
    )
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    args = ["score", "--input", str(source), "--output", str(outputs / "o.jsonl"), "--figure-root", str(scored["frames"]),
            "--clip-model", model_args["clip_model"], "--mlp-checkpoint", model_args["mlp_checkpoint"], "--device", "cpu",
            "--num-workers", "0", "--output-key", "scores", "--embeddings", str(outputs / "e.parquet")]  # fmt: skip
    assert main(args) == 2
    assert list(outputs.iterdir()) == []


def test_reruns_replace_the_file_with_the_same_rows(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str]
) -> None:
    path = tmp_path / "e.parquet"
    tables = []
    for _ in range(2):
        score_file(
            scored["root"] / "in.jsonl",
            tmp_path / "o.jsonl",
            _config(model_args, scored["frames"], load_num=3),
            embeddings=EmbeddingsOutput(path, "float32"),
        )
        tables.append(pq.read_table(path))
    assert tables[0].equals(tables[1])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["e.parquet", "o.jsonl"]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "kind", ["folder", "fifo", "same as output", "same as input", "link out of its folder", "file as folder"]
)
def test_unusable_embeddings_paths_are_refused_before_scoring(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str], kind: str
) -> None:
    out = tmp_path / "o.jsonl"
    source = write_jsonl(tmp_path / "in.jsonl", read_jsonl(scored["root"] / "in.jsonl"))
    if kind == "folder":
        target = tmp_path / "folder"
        target.mkdir()
    elif kind == "fifo":
        target = _fifo(tmp_path / "fifo.parquet")
    elif kind == "same as output":
        target = out
    elif kind == "same as input":
        target = source
    elif kind == "link out of its folder":
        (tmp_path / "sub").mkdir()
        target = tmp_path / "sub" / "e.parquet"
        target.symlink_to(tmp_path / "elsewhere.parquet")
    else:
        (tmp_path / "plain").write_text("x")
        target = tmp_path / "plain" / "e.parquet"
    with pytest.raises(ConfigError, match="embeddings"):
        score_file(source, out, _config(model_args, scored["frames"]), embeddings=EmbeddingsOutput(target))
    assert not out.exists()
    assert source.read_text().count("\n") == 4


def test_several_processes_with_embeddings_are_refused(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="one process"):
        score_file(
            scored["root"] / "in.jsonl",
            tmp_path / "o.jsonl",
            _config(model_args, scored["frames"]),
            nproc=2,
            embeddings=EmbeddingsOutput(tmp_path / "e.parquet"),
        )
    assert list(tmp_path.iterdir()) == []


def test_whole_video_frames_are_named_by_index(tmp_path: Path, model_args: dict[str, str]) -> None:
    from helpers.media import write_video

    video = write_video(tmp_path / "v.mp4", frames=10)
    source = write_jsonl(tmp_path / "in.jsonl", [{"video": str(video)}])
    score_file(
        source,
        tmp_path / "o.jsonl",
        _config(model_args, tmp_path, video_clips_key="", load_num=3),
        embeddings=EmbeddingsOutput(tmp_path / "e.parquet"),
    )
    keys = pq.read_table(tmp_path / "e.parquet").drop_columns(["embedding"]).to_pylist()
    # Frames 0, 4 and 9 of 10: frames.select_evenly's choice.
    assert [(k["line"], k["video"], k["clip"], k["clip_id"], k["frame"]) for k in keys] == [
        (1, str(video), None, None, name) for name in ("#0", "#4", "#9")
    ]
    assert read_metadata(tmp_path / "e.parquet")["whole_video"] is True


def test_a_run_without_a_scored_frame_writes_an_empty_file(tmp_path: Path, model_args: dict[str, str]) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["absent"])])
    score_file(
        source, tmp_path / "o.jsonl", _config(model_args, tmp_path), embeddings=EmbeddingsOutput(tmp_path / "e.parquet")
    )
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0
    assert read_metadata(tmp_path / "e.parquet")["records"] == 1


def test_the_cli_flag_writes_embeddings(
    tmp_path: Path, model_args: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers.cli import score_args
    from video_aesthetics.cli import main

    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=2, frames_per_clip=2)
    args = score_args(
        source,
        tmp_path / "o.jsonl",
        model_args,
        figure_root=root,
        num_workers=0,
        embeddings=tmp_path / "e.parquet",
        embeddings_dtype="float32",
    )
    assert main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["embeddings"] == {"path": str(tmp_path / "e.parquet"), "rows": 4, "clips": 2, "dtype": "float32"}


# --- reading files that are not what they claim ----------------------------------------------------


def test_the_docs_nearest_neighbour_snippet_runs(tmp_path: Path, scored: dict[str, Any]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"<!-- nearest-neighbours:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/embeddings.md lost its nearest-neighbours example"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith("import ")]) == 5
    # The example reads the default storage, float16: the fixture's float32 vectors, stored so.
    table = pq.read_table(scored["path"])
    half = vectors_of(table.column("embedding"), 768, "float32").astype("<f2")
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(768 * 2), len(half), [None, pa.py_buffer(half.tobytes())])
    pq.write_table(table.set_column(5, "embedding", column), tmp_path / "scored.parquet")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()
    # Two header lines (columns, then the index names), then the other three clips, nearest first.
    assert "clip_id" in printed[0] and len(printed) == 2 + 3
    assert all("shared" in line for line in printed[2:])


def test_the_evaluator_writes_the_same_embeddings_as_the_cli(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str]
) -> None:
    from video_aesthetics import JsonlStorage, VideoAestheticEvaluator

    storage = JsonlStorage(str(scored["root"] / "in.jsonl"), cache_path=str(tmp_path / "cache"))
    evaluator = VideoAestheticEvaluator(
        figure_root=str(scored["frames"]), **model_args, num_workers=0, device="cpu",
        embeddings=str(tmp_path / "e.parquet"), embeddings_dtype="float32",
    )  # fmt: skip
    evaluator.run(storage.step())
    assert pq.read_table(tmp_path / "e.parquet").equals(pq.read_table(scored["path"]))
    assert read_metadata(tmp_path / "e.parquet")["records"] == 4
    with pytest.raises(ConfigError, match="float16"):
        evaluator.run(storage, embeddings=str(tmp_path / "f.parquet"), embeddings_dtype="float8")
    assert not (tmp_path / "f.parquet").exists()


def test_the_operator_writes_embeddings_locally_and_to_an_object_store(
    tmp_path: Path, scored: dict[str, Any], model_args: dict[str, str]
) -> None:
    import uuid

    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    from video_aesthetics.airflow.operators import VideoAestheticScoringOperator

    def run(output: str, target: str) -> dict[str, Any]:
        operator = VideoAestheticScoringOperator(
            task_id=f"score_{uuid.uuid4().hex[:6]}", input_path=str(scored["root"] / "in.jsonl"), output_path=output,
            figure_root=str(scored["frames"]), num_workers=0, device="cpu", embeddings=target,
            embeddings_dtype="float32", **model_args,
        )  # fmt: skip
        return operator.execute(context={})

    summary = run(str(tmp_path / "o.jsonl"), str(tmp_path / "e.parquet"))
    assert summary["embeddings"]["path"] == str(tmp_path / "e.parquet")
    assert summary["embeddings"]["sha256"] == sha256_file(tmp_path / "e.parquet")
    assert (summary["embeddings"]["rows"], summary["embeddings"]["clips"]) == (10, 4)
    assert pq.read_table(tmp_path / "e.parquet").equals(pq.read_table(scored["path"]))
    attach("memory", fs=MemoryFileSystem())
    bucket = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    remote = ObjectStoragePath(f"{bucket}/out/e.parquet")
    summary = run(f"{bucket}/out/o.jsonl", str(remote))
    (tmp_path / "remote.parquet").write_bytes(remote.read_bytes())
    assert pq.read_table(tmp_path / "remote.parquet").equals(pq.read_table(scored["path"]))
    assert summary["embeddings"]["path"] == str(remote)


def test_a_clip_written_as_an_error_has_no_rows(tmp_path: Path, model_args: dict[str, str]) -> None:
    """A non-finite score is written as non_finite_score: the writer keeps no rows that would contradict it."""
    from video_aesthetics.records import Sample, SampleResult

    config = _config(model_args, tmp_path)
    record = clip_record("v.mp4", ["a", "b"])
    with EmbeddingWriter(EmbeddingsOutput(tmp_path / "e.parquet", "float32"), config, None) as writer:
        for index, score in enumerate((float("nan"), 1.5)):
            result = SampleResult(index, score, None)
            result.embeddings = np.full((2, 768), 0.036, dtype=np.float32)
            result.frames = ["f0.jpg", "f1.jpg"]
            writer.add(record, Sample(index, 0, index, None), result)
            assert result.embeddings is None  # dropped once handed over
        writer.commit(1)
    keys = pq.read_table(tmp_path / "e.parquet").drop_columns(["embedding"]).to_pylist()
    assert [(k["clip"], k["clip_id"]) for k in keys] == [(1, "b"), (1, "b")]


def test_a_frame_whose_name_is_not_utf8_is_stored_with_escapes(tmp_path: Path, model_args: dict[str, str]) -> None:
    frames = tmp_path / "frames"
    paths = write_frames(frames, "v", "c", 2)
    odd = os.fsdecode(bytes(paths[1].parent) + b"/f\xff.jpg")
    os.rename(paths[1], odd)
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["c"])])
    path = tmp_path / "e.parquet"
    stats = score_file(
        source, tmp_path / "o.jsonl", _config(model_args, frames), embeddings=EmbeddingsOutput(path, "float32")
    )
    assert stats is not None and stats.scored == 1
    assert sorted(pq.read_table(path).column("frame").to_pylist()) == ["f\\xff.jpg", "frame_000000.jpg"]
