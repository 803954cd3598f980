"""Samples into batches (batches.py): each sample's pixels or its reason, and each rank and worker its own batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.media import clip_record, link_frames, write_frames, write_video
from video_aesthetics.batches import DECODE_ERROR, FrameBatches, RankShare, load_batch, load_sample
from video_aesthetics.config import ScoringConfig
from video_aesthetics.extraction import has_frames
from video_aesthetics.frames import PreprocessConfig, load_frame
from video_aesthetics.records import CORRUPT_FRAMES, NO_FRAMES, UNREADABLE_VIDEO, UNSAFE_PATH, Sample, iter_samples
from video_aesthetics.stopping import Terminated, clear_stop, request_stop

PP = PreprocessConfig(size=32)


def _config(root: Path, **changes: object) -> ScoringConfig:
    return ScoringConfig(figure_root=str(root), load_num=3, batch_size=2, num_workers=0, **changes)


def test_a_clip_folder_gives_its_selected_frames_as_pixels_and_names(tmp_path: Path) -> None:
    write_frames(tmp_path, "v", "v_0", 5, seed=1)
    pixels, names, error = load_sample(Sample(0, 0, 0, tmp_path / "v" / "v_0" / "img"), _config(tmp_path), PP)
    assert error is None and len(pixels) == len(names) == 3
    assert names == ["frame_000000.jpg", "frame_000050.jpg", "frame_000100.jpg"]
    assert all(p.shape == (32, 32, 3) and p.dtype == np.uint8 for p in pixels)


@pytest.mark.parametrize("decode", ["exact", "fast"])
def test_a_sample_without_usable_frames_gets_its_reason_never_an_exception(tmp_path: Path, decode: str) -> None:
    config = _config(tmp_path)
    empty = tmp_path / "v" / "empty" / "img"
    empty.mkdir(parents=True)
    damaged = write_frames(tmp_path, "v", "damaged", 2)
    for path in damaged:
        path.write_bytes(b"\xff\xd8 not a jpeg")
    cases = {
        NO_FRAMES: Sample(0, 0, 0, tmp_path / "v" / "missing" / "img"),
        CORRUPT_FRAMES: Sample(1, 0, 1, damaged[0].parent),
        UNSAFE_PATH: Sample(2, 0, 2, None, UNSAFE_PATH),
    }
    assert load_sample(Sample(3, 0, 3, empty), config, PP, decode)[2] == NO_FRAMES
    for reason, sample in cases.items():
        assert load_sample(sample, config, PP, decode) == ([], [], reason)


def test_a_video_is_sampled_by_index_and_an_unreadable_one_says_so(tmp_path: Path) -> None:
    config = _config(tmp_path, video_clips_key="")
    video = write_video(tmp_path / "a.mp4", frames=9, seed=2)
    pixels, names, error = load_sample(Sample(0, 0, None, video), config, PP)
    assert error is None and names == ["#0", "#4", "#8"] and len(pixels) == 3
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    assert load_sample(Sample(1, 1, None, broken), config, PP)[2] == UNREADABLE_VIDEO
    assert load_sample(Sample(2, 2, None, tmp_path / "absent.mp4"), config, PP)[2] == UNREADABLE_VIDEO


def test_a_stop_that_pyav_swallowed_ends_the_run_instead_of_marking_the_video(tmp_path: Path) -> None:
    config = _config(tmp_path, video_clips_key="")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(Terminated):
        request_stop(15)  # what the CLI's SIGTERM handler does; PyAV may turn the exception into its own
    try:
        with pytest.raises(Terminated):
            load_sample(Sample(1, 1, None, broken), config, PP)
    finally:
        clear_stop()
    assert load_sample(Sample(1, 1, None, broken), config, PP)[2] == UNREADABLE_VIDEO


def test_a_batch_counts_each_samples_frames_and_keeps_their_order(tmp_path: Path) -> None:
    write_frames(tmp_path, "v", "v_0", 2, seed=1)
    samples = (Sample(4, 0, 0, tmp_path / "v" / "v_0" / "img"), Sample(5, 0, 1, tmp_path / "nowhere"))
    batch = load_batch(7, samples, _config(tmp_path), PP)
    assert (batch["batch"], batch["seqs"], batch["counts"], batch["errors"]) == (7, [4, 5], [2, 0], [None, NO_FRAMES])
    assert tuple(batch["pixels"].shape) == (2, 32, 32, 3)
    assert DECODE_ERROR == "decode_error"  # the reason of a sample whose decoding raised


def test_ranks_take_every_nth_batch_and_a_restart_skips_the_scored_ones(tmp_path: Path) -> None:
    for clip in ("a", "b", "c", "d", "e"):
        write_frames(tmp_path, "v", clip, 1, seed=ord(clip))
    records = [clip_record("v.mp4", ["a", "b", "c"]), clip_record("v.mp4", ["d", "e"])]
    config = _config(tmp_path)

    def seqs(share: RankShare | None = None, start_batch: int = 0) -> list[tuple[int, list[int]]]:
        dataset = FrameBatches(records, config, PP, share or RankShare(), start_batch)
        return [(b["batch"], b["seqs"]) for b in dataset]

    assert seqs() == [(0, [0, 1]), (1, [2, 3]), (2, [4])]
    assert seqs(share=RankShare(0, 2)) == [(0, [0, 1]), (2, [4])]
    assert seqs(share=RankShare(1, 2)) == [(1, [2, 3])]
    assert seqs(start_batch=1) == [(1, [2, 3]), (2, [4])]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's whole-video batches")
def test_whole_video_batches_on_a_machine_without_nvdec_are_decoded_by_the_workers(tmp_path: Path) -> None:
    records = [{"video": str(write_video(tmp_path / f"{n}.mp4", frames=7, seed=n))} for n in range(3)]
    config = _config(tmp_path, video_clips_key="")
    dataset = FrameBatches(records, config, PP, decode="gpu")
    assert dataset.videos_on_device is False
    batches = list(dataset)
    assert [b["counts"] for b in batches] == [[3, 3], [3]]
    samples = (Sample(0, 0, None, tmp_path / "0.mp4"), Sample(1, 1, None, tmp_path / "1.mp4"))
    today = load_batch(0, samples, config, PP, "gpu")
    assert "videos" not in batches[0] and batches[0]["slots"] == today["slots"] == list(range(6))
    assert torch.equal(batches[0]["pixels"], today["pixels"]) and batches[0]["names"] == today["names"]


def test_a_video_hand_over_carries_paths_and_indices_and_each_samples_reason(tmp_path: Path) -> None:
    config = _config(tmp_path, video_clips_key="")
    good = write_video(tmp_path / "a.mp4", frames=9, seed=2)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    samples = (Sample(0, 0, None, good), Sample(1, 1, None, broken), Sample(2, 2, None, None, UNSAFE_PATH))
    batch = load_batch(4, samples, config, PP, "gpu", videos_on_device=True)
    assert (batch["batch"], batch["seqs"], batch["counts"]) == (4, [0, 1, 2], [3, 0, 0])
    assert batch["errors"] == [None, UNREADABLE_VIDEO, UNSAFE_PATH]
    assert batch["names"] == [["#0", "#4", "#8"], [], []]
    assert batch["videos"][0]["path"] == str(good.resolve()) and batch["videos"][0]["indices"] == [0, 4, 8]
    assert batch["videos"][1:] == [None, None]
    # Nothing was decoded in the worker: the packed part is empty.
    assert batch["pixels"].shape == (0, 32, 32, 3) and batch["slots"] == [] and batch["jpegs"].numel() == 0
    # Outside whole-video mode the flag changes nothing.
    write_frames(tmp_path, "v", "v_0", 2, seed=1)
    clip = (Sample(0, 0, 0, tmp_path / "v" / "v_0" / "img"),)
    assert "videos" not in load_batch(0, clip, _config(tmp_path), PP, "gpu", videos_on_device=True)


# --- what records.stays_inside checked is what the workers read ----------------------------------------


def _relink(link: Path, target: Path) -> None:
    staged = link.with_name(link.name + ".swap")
    staged.symlink_to(target, target_is_directory=target.is_dir())
    os.replace(staged, link)


@pytest.mark.parametrize("decode", ["exact", "fast", "gpu"])
def test_a_clip_folder_swapped_outside_after_its_check_is_never_read(tmp_path: Path, decode: str) -> None:
    """The reviewer's race, made deterministic: samples checked, the folder link swapped, then decoded."""
    root = tmp_path / "frames"
    real = write_frames(root, "v", "real", 3, seed=1)[0].parent
    outside = write_frames(tmp_path / "outside", "v", "real", 3, seed=2)[0].parent  # same frame names
    (root / "v" / "race").mkdir()
    (root / "v" / "race" / "img").symlink_to(real, target_is_directory=True)  # inside: fine
    config = _config(root)
    [sample] = list(iter_samples([clip_record("v.mp4", ["race"])], config))
    assert sample.error is None  # checked while the link stayed inside
    pixels, _, error = load_sample(sample, config, PP, decode)
    assert error is None and len(pixels) == 3
    _relink(root / "v" / "race" / "img", outside)
    assert load_sample(sample, config, PP, decode) == ([], [], UNSAFE_PATH)
    batch = load_batch(0, (sample,), config, PP, decode)
    assert batch["errors"] == [UNSAFE_PATH] and batch["counts"] == [0]
    _relink(root / "v" / "race" / "img", real)
    assert load_sample(sample, config, PP, decode)[2] is None


@pytest.mark.parametrize("decode", ["exact", "fast", "gpu"])
def test_a_frame_linked_to_another_inside_figure_root_is_scored_as_has_frames_counts_it(
    tmp_path: Path, decode: str
) -> None:
    """One rule for the scorer and the DAG's check: a dedup link inside figure_root is a frame."""
    root = tmp_path / "frames"
    source = write_frames(root, "v", "c0", 3, seed=1)
    dedup = root / "v" / "dedup" / "img"
    link_frames(source, dedup)
    config = _config(root)
    assert has_frames(dedup, config.load_num, root)
    pixels, names, error = load_sample(Sample(0, 0, 0, dedup), config, PP, decode)
    assert error is None and names == [frame.name for frame in source]
    if decode == "exact":
        for got, frame in zip(pixels, source, strict=True):
            np.testing.assert_array_equal(got, load_frame(frame, PP))
