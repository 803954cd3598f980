"""nvdec.py: whether NVDEC decodes whole videos, the workers' hand-over, and the reads by NVDEC or PyAV.

On a machine without CUDA or PyNvVideoCodec (this one) the selection, the hand-over from the workers
and the PyAV reads run for real; the NVDEC reads themselves run only where a GPU can decode (the last test).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from helpers.media import decode_rgb, write_video
from video_aesthetics import nvdec, video
from video_aesthetics.batches import load_batch
from video_aesthetics.config import ScoringConfig
from video_aesthetics.frames import PreprocessConfig, select_evenly
from video_aesthetics.nvdec_source import NvdecError
from video_aesthetics.records import Sample

PP = PreprocessConfig(size=32)
HAS_PACKAGE = importlib.util.find_spec(nvdec.PACKAGE) is not None
CUDA = torch.cuda.is_available()


def _config(root: Path) -> ScoringConfig:
    return ScoringConfig(figure_root=str(root), load_num=3, batch_size=4, num_workers=0, video_clips_key="")


# --- availability and selection ---------------------------------------------------------------------


def test_nvdec_error_names_what_is_missing() -> None:
    assert "not one" in str(nvdec.nvdec_error("cpu")) and "CUDA" in str(nvdec.nvdec_error(torch.device("cpu")))
    if not CUDA:
        assert nvdec.nvdec_error("cuda") == "no CUDA device is available"
        assert nvdec.nvdec_error("cuda:1") == "no CUDA device is available"


@pytest.mark.skipif(HAS_PACKAGE, reason="PyNvVideoCodec is installed here")
def test_without_the_package_the_reason_says_how_to_install_it() -> None:
    with pytest.raises(NvdecError, match=r"PyNvVideoCodec is not installed \(pip install 'video-aesthetics\[gpu\]'\)"):
        nvdec._pynvvideocodec()


@pytest.mark.skipif(CUDA, reason="tests the choice made where CUDA is absent")
def test_without_cuda_whole_videos_stay_with_pyav_and_the_choice_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="video_aesthetics.nvdec"):
        assert nvdec.videos_on_device() is False
        assert nvdec.videos_on_device("cpu") is False
    messages = [record.getMessage() for record in caplog.records]
    assert any("decoded by PyAV in the decoding workers" in m and "no CUDA device" in m for m in messages)
    assert any("not one" in m for m in messages)


def test_nvdec_can_be_switched_off_for_a_comparison(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(nvdec, "ENABLED", False)
    with caplog.at_level(logging.INFO, logger="video_aesthetics.nvdec"):
        assert nvdec.videos_on_device("cuda") is False
    assert "nvdec.ENABLED is off" in caplog.text


def test_reading_with_nvdec_off_cuda_is_refused_clearly(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=4)
    with pytest.raises(NvdecError, match="CUDA devices, and cpu is not one"):
        nvdec.read_frames_nvdec(path, [0], "cpu")


# --- the hand-over --------------------------------------------------------------------------------


def test_a_request_holds_the_pyav_paths_indices_and_clock(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=9, fps=12)
    request = nvdec.video_request(path, 3)
    assert request is not None
    assert request.path == str(path.resolve()) and request.indices == (0, 4, 8)
    assert request.indices == tuple(select_evenly(video.probe(path).frames, 3))
    assert request.clock == video.probe_with_clock(path)[1]
    assert nvdec.sampled_indices(path, 3) == [0, 4, 8]


class _Batches(IterableDataset):
    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_the_hand_over_survives_the_data_loader_unchanged(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=9, fps=Fraction(30000, 1001))
    request = nvdec.video_request(path, 3)
    assert request is not None and request.clock is not None and request.clock.rate == Fraction(30000, 1001)
    batch = load_batch(0, (Sample(0, 0, None, path),), _config(tmp_path), PP, "gpu", videos_on_device=True)
    [through] = list(DataLoader(_Batches([batch]), batch_size=None, num_workers=0))
    assert through["videos"] == [request.to_batch()]
    assert nvdec.VideoRequest.from_batch(through["videos"][0]) == request
    assert nvdec.VideoRequest.from_batch({"path": "x", "indices": [2, 1]}) == nvdec.VideoRequest("x", (2, 1))


def test_pyav_reads_the_asked_frames_as_planar_tensors(tmp_path: Path) -> None:
    path = nvdec.make_test_video(tmp_path / "t.mp4", frames=8, width=96, height=64)
    frames = decode_rgb(path)
    # Neighbours differ by far more than the self-test's tolerance: a misnumbered frame fails it.
    assert len(frames) == 8 and all(
        np.abs(a.astype(int) - b).mean() > 2 * nvdec._TEST_TOLERANCE for a, b in itertools.pairwise(frames)
    )
    got = nvdec.read_frames_pyav(path, [5, 1, 5, 50])
    assert got.shape == (4, 3, 64, 96) and got.dtype == torch.uint8
    for tensor, index in zip(got, [5, 1, 5, 7], strict=True):
        np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), frames[index])


# --- NVDEC itself, where a GPU can decode -----------------------------------------------------------------


def _nvdec_skip() -> str | None:
    return "no CUDA device" if not CUDA else nvdec.nvdec_error("cuda")


@pytest.mark.skipif(_nvdec_skip() is not None, reason=f"NVDEC cannot decode here: {_nvdec_skip()}")
def test_nvdec_gives_pyavs_frames_at_the_same_indices(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=60, seed=5, width=320, height=180)
    clock = video.probe_with_clock(path)[1]
    indices = [0, 59, 17, 17, 30, 500]
    got = nvdec.read_frames_nvdec(path, indices, "cuda", clock=clock)
    expected = nvdec.read_frames_pyav(path, indices)
    assert got.shape == expected.shape and got.is_cuda
    delta = (got.cpu().float() - expected.float()).abs()
    assert delta.mean() <= 3.0, f"mean deviation {delta.mean():.2f}"
