"""The seed's Python API: VideoAestheticEvaluator over DataFlow-style storages."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from helpers.cli import score_args
from helpers.media import clip_record, read_jsonl, write_frames, write_jsonl, write_video
from video_aesthetics import JsonlStorage, VideoAestheticEvaluator
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.runner import score_file

# The seed document's usage example, verbatim except for its two import lines, which were
#     from dataflow.utils.storage import FileStorage
#     from dataflow.operators.core_vision import VideoAestheticEvaluator
# The model paths "/path/to/ViT-L-14.pt" and "/path/to/sac+logos+ava1-l14-linearMSE.pth" are
# replaced by the tiny test model's at run time: the only other change.
SEED_EXAMPLE = """
from video_aesthetics import JsonlStorage as FileStorage
from video_aesthetics import VideoAestheticEvaluator

# Step 1: Prepare FileStorage (needs video, video_clips columns)
# Note: VideoFrameFilter must be run first to extract frames
storage = FileStorage(
    first_entry_file_name="data/video_aesthetic_input.jsonl",
    cache_path="./cache_local",
    file_name_prefix="video_aesthetic",
    cache_type="jsonl"
)

# Step 2: Initialize operator
evaluator = VideoAestheticEvaluator(
    figure_root="./cache/extract_frames",
    input_video_key="video",
    video_clips_key="video_clips",
    clip_model="/path/to/ViT-L-14.pt",
    mlp_checkpoint="/path/to/sac+logos+ava1-l14-linearMSE.pth",
    load_num=3,
    batch_size=64,
    num_workers=4,
    init_distributed=False
)

# Step 3: Execute evaluation
evaluator.run(
    storage=storage.step()
)
"""


class MemoryStorage:
    """The least a DataFlow storage offers: read("dataframe") and write(df), no cache_path."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.written: list[pd.DataFrame] = []

    def read(self, output_type: str) -> pd.DataFrame:
        assert output_type == "dataframe"
        return self.frame

    def write(self, frame: pd.DataFrame) -> None:
        self.written.append(frame)


def _clips(record: dict[str, Any], key: str = "video_clips") -> list[dict[str, Any]]:
    return record[key]["clips"]


def _tricky_records(root: Path) -> list[dict[str, Any]]:
    """Seed-shaped records with what pandas would mangle: gaps, ints beside floats, nulls, odd clip fields."""
    write_frames(root, "video1", "video1_0", 4, seed=1)
    write_frames(root, "video1", "video1_1", 3, seed=2)
    write_frames(root, "video2", "video2_0", 5, seed=3)
    return [
        clip_record("./test/video1.mp4", ["video1_0", "video1_1"], n=1, note=None, title="ünïcode"),
        {"caption": "no clips: passes through", "n": 2.5},
        clip_record("./test/video2.mp4", ["video2_0", "video2_gone"], extra={"k": [1, None, 2]}),
        {"video": ["./test/video3.mp4"], "video_clips": "not clips", "n": 3},
    ]


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")  # the example's num_workers=4
def test_seed_usage_example_runs_and_writes_scores(
    tmp_path: Path, model_args: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A relative figure_root resolves against the storage's cache_path, as in DataFlow-MM.
    figure_root = Path("cache_local/cache/extract_frames")
    write_frames(figure_root, "video1", "video1_0", 3, seed=1)
    write_frames(figure_root, "video1", "video1_1", 5, seed=2)
    write_frames(figure_root, "video2", "video2_0", 2, seed=3)
    records = [
        clip_record("./test/video1.mp4", ["video1_0", "video1_1"]),
        clip_record("./test/video2.mp4", ["video2_0"], caption="second"),
    ]
    write_jsonl(Path("data/video_aesthetic_input.jsonl"), records)
    example = SEED_EXAMPLE.replace("/path/to/ViT-L-14.pt", model_args["clip_model"]).replace(
        "/path/to/sac+logos+ava1-l14-linearMSE.pth", model_args["mlp_checkpoint"]
    )
    Path("example.py").write_text(example, encoding="utf-8")

    runpy.run_path("example.py", run_name="__main__")

    got = read_jsonl(Path("cache_local/video_aesthetic_step1.jsonl"))
    score_file(
        "data/video_aesthetic_input.jsonl",
        "expected.jsonl",
        ScoringConfig(**model_args, figure_root=str(figure_root), num_workers=0),
    )
    assert got == read_jsonl(Path("expected.jsonl"))
    assert [len(_clips(r)) for r in got] == [2, 1]
    for record in got:
        for clip in _clips(record):
            assert isinstance(clip["aesthetic_score"], float) and "aesthetic_error" not in clip


def test_dataframe_path_and_cli_give_identical_output(tmp_path: Path, model_args: dict) -> None:
    root = tmp_path / "frames"
    source = write_jsonl(tmp_path / "in.jsonl", _tricky_records(root))
    cli_out = tmp_path / "cli.jsonl"
    command = [
        sys.executable,
        "-m",
        "video_aesthetics",
        *score_args(source, cli_out, model_args, figure_root=root, num_workers=0, batch_size=2),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr

    storage = JsonlStorage(str(source), cache_path=str(tmp_path / "cache"))
    evaluator = VideoAestheticEvaluator(figure_root=str(root), **model_args, num_workers=0, device="cpu")
    assert evaluator.run(storage.step()) == ["video_clips"]

    got = read_jsonl(tmp_path / "cache" / "dataflow_cache_step1.jsonl")
    assert got == read_jsonl(cli_out)
    assert [c.get("aesthetic_error") for c in _clips(got[0]) + _clips(got[2])] == [None, None, None, "no_frames"]
    assert (evaluator.last_stats.records, evaluator.last_stats.scored, evaluator.last_stats.passthrough) == (4, 3, 2)


def test_other_columns_are_left_exactly_as_they_were(tmp_path: Path, model_args: dict) -> None:
    records = _tricky_records(tmp_path)
    frame = pd.DataFrame(records)  # pandas' own dtypes: n is float64 with a NaN, title a string column
    before = frame.copy(deep=True)
    storage = MemoryStorage(frame)
    VideoAestheticEvaluator(figure_root=str(tmp_path), **model_args, num_workers=0).run(storage)
    [out] = storage.written
    pd.testing.assert_frame_equal(frame, before)  # the input is not modified
    assert list(out.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(out.drop(columns="video_clips"), frame.drop(columns="video_clips"))
    assert [c["aesthetic_score"] is not None for c in _clips(out.loc[0])] == [True, True]
    assert pd.isna(out.loc[1, "video_clips"]) and out.loc[3, "video_clips"] == "not clips"
    assert {k: v for k, v in _clips(out.loc[2])[0].items() if k != "aesthetic_score"} == _clips(frame.loc[2])[0]


def test_run_overrides_apply_to_that_call_only(tmp_path: Path, model_args: dict) -> None:
    write_frames(tmp_path, "v", "v_0", 5, seed=7)
    frame = pd.DataFrame([clip_record("v.mp4", ["v_0"])])
    evaluator = VideoAestheticEvaluator(
        figure_root=str(tmp_path), **model_args, load_num=1, num_workers=0, frame_scores=True
    )
    config = evaluator.config
    storage = MemoryStorage(frame)
    assert evaluator.run(storage, load_num=3, output_key="scored") == ["scored"]
    assert evaluator.run(storage) == ["video_clips"]
    assert evaluator.run(storage, load_num=None, output_key=None) == ["video_clips"]
    first, second, third = storage.written
    assert len(_clips(first.loc[0], "scored")[0]["aesthetic_frame_scores"]) == 3
    assert "aesthetic_score" not in _clips(first.loc[0])[0]  # the input column is left alone
    assert len(_clips(second.loc[0])[0]["aesthetic_frame_scores"]) == 1 and "scored" not in second.columns
    assert second.equals(third)
    assert evaluator.config == config


def test_the_model_is_loaded_once_and_reloaded_when_it_changes(tmp_path: Path, model_args: dict) -> None:
    from helpers.clip_models import build_head, save_head

    write_frames(tmp_path, "v", "v_0", 3, seed=8)
    storage = MemoryStorage(pd.DataFrame([clip_record("v.mp4", ["v_0"])]))
    evaluator = VideoAestheticEvaluator(figure_root=str(tmp_path), **model_args, num_workers=0)
    assert evaluator.scorer is None
    evaluator.run(storage)
    loaded = evaluator.scorer
    evaluator.run(storage, batch_size=2, load_num=2)
    assert evaluator.scorer is loaded
    other_head = save_head(build_head(768, seed=5), tmp_path / "other.pth")
    evaluator.run(storage, mlp_checkpoint=str(other_head))
    assert evaluator.scorer is not loaded
    scores = [_clips(df.loc[0])[0]["aesthetic_score"] for df in storage.written]
    assert scores[2] != scores[0]


def test_figure_root_resolution(tmp_path: Path, model_args: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_frames(Path("cache/frames"), "v", "v_0", 2, seed=1)
    source = write_jsonl(Path("in.jsonl"), [clip_record("v.mp4", ["v_0"])])

    def error_of(evaluator: VideoAestheticEvaluator, storage: Any, **overrides: Any) -> str | None:
        evaluator.run(storage, **overrides)
        if isinstance(storage, MemoryStorage):
            return _clips(storage.written[-1].loc[0])[0].get("aesthetic_error")
        return _clips(read_jsonl(storage.file_path(storage.operator_step + 1))[0])[0].get("aesthetic_error")

    relative = VideoAestheticEvaluator(figure_root="frames", **model_args, num_workers=0)
    # Relative to storage.cache_path ("cache") ...
    assert error_of(relative, JsonlStorage(str(source), cache_path="cache").step()) is None
    # ... or, for a storage without one, to the working directory.
    assert error_of(relative, MemoryStorage(pd.read_json(source, lines=True))) == "no_frames"
    # One given to run() is used as it is.
    assert error_of(relative, JsonlStorage(str(source), cache_path="cache").step(), figure_root="frames") == "no_frames"
    assert error_of(relative, JsonlStorage(str(source), cache_path="cache").step(), figure_root="cache/frames") is None
    absolute = VideoAestheticEvaluator(figure_root=str(tmp_path / "cache" / "frames"), **model_args, num_workers=0)
    assert error_of(absolute, JsonlStorage(str(source), cache_path="elsewhere").step()) is None


def test_whole_video_rows_gain_a_score_column(tmp_path: Path, model_args: dict) -> None:
    records = [
        {"video": str(write_video(tmp_path / "a.mp4", frames=6, seed=1)), "n": 1},
        {"video": [str(tmp_path / "absent.mp4")], "n": 2},
        {"caption": "nothing to score", "n": 3},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    storage = JsonlStorage(str(source), cache_path=str(tmp_path / "cache"))
    evaluator = VideoAestheticEvaluator(**model_args, num_workers=0)
    assert evaluator.run(storage.step(), video_clips_key="") == ["aesthetic_score"]
    got = read_jsonl(tmp_path / "cache" / "dataflow_cache_step1.jsonl")
    config = ScoringConfig(**model_args, video_clips_key="", num_workers=0)
    score_file(source, tmp_path / "expected.jsonl", config)
    assert got == read_jsonl(tmp_path / "expected.jsonl")
    assert isinstance(got[0]["aesthetic_score"], float) and "aesthetic_error" not in got[0]
    assert (got[1]["aesthetic_score"], got[1]["aesthetic_error"]) == (None, "unreadable_video")
    assert got[2] == records[2]


def test_a_missing_column_names_the_parameter_to_change(tmp_path: Path, model_args: dict) -> None:
    storage = MemoryStorage(pd.DataFrame([{"path": "a.mp4", "video_clips": {"clips": []}}]))
    evaluator = VideoAestheticEvaluator(figure_root=str(tmp_path), **model_args, num_workers=0)
    with pytest.raises(ConfigError, match=r"no column 'video'.*set input_video_key"):
        evaluator.run(storage)
    with pytest.raises(ConfigError, match=r"no column 'clips'.*set video_clips_key"):
        evaluator.run(storage, input_video_key="path", video_clips_key="clips")
    assert not storage.written
    with pytest.raises(ConfigError, match="load_num must be an integer >= 1"):
        evaluator.run(storage, load_num=0)


def test_constructor_takes_the_seeds_parameters_in_order() -> None:
    evaluator = VideoAestheticEvaluator("frames", "path", "clips", "ViT-B/32", "head.pth", 5, 8, 0, False, "out")
    assert evaluator.config == ScoringConfig(
        figure_root="frames",
        input_video_key="path",
        video_clips_key="clips",
        clip_model="ViT-B/32",
        mlp_checkpoint="head.pth",
        load_num=5,
        batch_size=8,
        num_workers=0,
        output_key="out",
    )
    assert evaluator.init_distributed is False
    assert VideoAestheticEvaluator().config == ScoringConfig()


@pytest.mark.parametrize("nproc", [0, -1, 10**6, True, 2.0])
def test_nproc_is_bounded_in_the_constructor_and_in_run(tmp_path: Path, model_args: dict, nproc: Any) -> None:
    with pytest.raises(ConfigError, match="nproc"):
        VideoAestheticEvaluator(str(tmp_path), nproc=nproc, device="cpu", **model_args)
    evaluator = VideoAestheticEvaluator(str(tmp_path), device="cpu", **{**model_args, "mlp_checkpoint": "/no/head.pth"})
    storage = JsonlStorage(str(write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["c"])])), str(tmp_path))
    with pytest.raises(ConfigError, match="nproc"):
        evaluator.run(storage.step(), nproc=nproc)
    assert evaluator.scorer is None and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_a_storage_that_would_overwrite_its_own_input_is_refused_before_the_model_loads(
    tmp_path: Path, model_args: dict, how: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    step1 = cache / "dataflow_cache_step1.jsonl"  # what step 0's write() produces
    real = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["c"])])
    first = {"same": step1, "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl"}[how]
    if how == "same":
        real.rename(step1)
    elif how == "symlink":
        first.symlink_to(real)
        os.link(real, step1)  # the step file exists, as the hard link of the input: one file by two names
    else:
        os.link(real, first)
        os.link(real, step1)
    before = first.read_bytes()
    storage = JsonlStorage(str(first), str(cache))
    evaluator = VideoAestheticEvaluator(str(tmp_path), device="cpu", **{**model_args, "mlp_checkpoint": "/no/head.pth"})
    with pytest.raises(ConfigError, match="is the input"):
        evaluator.run(storage.step())
    assert first.read_bytes() == before and evaluator.scorer is None


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ('{"video": "v.mp4", "x": NaN, "video_clips": {"clips": [{"id": "c"}]}}', "NaN is not a JSON number"),
        ('{"video": "v.mp4", "y": 1, "y": 2, "video_clips": {"clips": [{"id": "c"}]}}', "key 'y' appears twice"),
        ('{"video": "v.mp4", "z": Infinity, "video_clips": {"clips": [{"id": "c"}]}}', "in field 'z'"),
    ],
)
def test_a_json_first_entry_that_would_lose_data_is_refused_before_the_model_loads(
    tmp_path: Path, model_args: dict, element: str, reason: str
) -> None:
    first = tmp_path / "in.json"
    first.write_text('[{"video": "ok.mp4"},\n ' + element + "]", encoding="utf-8")
    storage = JsonlStorage(str(first), str(tmp_path / "cache"))
    evaluator = VideoAestheticEvaluator(str(tmp_path), device="cpu", **{**model_args, "mlp_checkpoint": "/no/head.pth"})
    with pytest.raises(InputError, match=r"in\.json: element 1 of the array \(line 2 column 2\): ") as err:
        evaluator.run(storage.step())
    assert reason in str(err.value)
    assert evaluator.scorer is None and not list((tmp_path / "cache").glob("*"))  # nothing scored or written
