from __future__ import annotations

import pytest

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError


def test_defaults_are_the_seeds() -> None:
    config = ScoringConfig()
    assert (config.figure_root, config.input_video_key, config.video_clips_key) == (
        "extract_frames",
        "video",
        "video_clips",
    )
    assert (config.clip_model, config.mlp_checkpoint, config.load_num) == ("ViT-L/14", None, 3)
    assert (config.batch_size, config.num_workers, config.output_key) == (64, 4, "video_clips")
    assert config.reduction == "mean" and not config.whole_video


def test_replace_keeps_values_given_as_none() -> None:
    config = ScoringConfig(load_num=5).replace(load_num=None, batch_size=8)
    assert (config.load_num, config.batch_size) == (5, 8)


def test_replace_refuses_unknown_names() -> None:
    with pytest.raises(ConfigError, match="load_nums"):
        ScoringConfig().replace(load_nums=3)


@pytest.mark.parametrize("video_clips_key", [None, ""])
def test_empty_clips_key_means_whole_video(video_clips_key: str | None) -> None:
    assert ScoringConfig(video_clips_key=video_clips_key).whole_video


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"load_num": 0}, "load_num must be an integer >= 1"),
        ({"batch_size": "8"}, "batch_size must be an integer >= 1"),
        ({"num_workers": -1}, "num_workers must be an integer >= 0"),
        ({"reduction": "median"}, "reduction must be one of mean, min, max"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"figure_root": ""}, "figure_root must be a non-empty string"),
    ],
)
def test_validate_names_the_parameter_and_what_it_accepts(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ScoringConfig(**changes)
