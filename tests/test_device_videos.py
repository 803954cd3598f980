"""device_videos.py: whole videos handed over by the workers, decoded in DeviceDecoder and placed in order.

Without CUDA or PyNvVideoCodec (this machine) the videos are decoded by PyAV inside DeviceDecoder,
for real; NVDEC's own decoding runs only where a GPU can decode (the last test).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.media import write_video
from video_aesthetics import nvdec
from video_aesthetics.batches import load_batch
from video_aesthetics.config import ScoringConfig
from video_aesthetics.device_decoder import DeviceDecoder
from video_aesthetics.device_videos import place_videos
from video_aesthetics.frames import PreprocessConfig
from video_aesthetics.records import UNREADABLE_VIDEO, Sample

PP = PreprocessConfig(size=32)
CUDA = torch.cuda.is_available()


def _config(root: Path) -> ScoringConfig:
    return ScoringConfig(figure_root=str(root), load_num=3, batch_size=4, num_workers=0, video_clips_key="")


def _device_resize(full: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """DeviceDecoder's own resize of full frames (what it makes of decoded JPEGs)."""
    return DeviceDecoder(PP, "cpu")._resized(full)


# --- DeviceDecoder's hook, with PyAV where NVDEC is absent ------------------------------------------------


def test_handed_over_videos_are_decoded_in_the_device_decoder(tmp_path: Path) -> None:
    good = write_video(tmp_path / "a.mp4", frames=9, seed=3, width=160, height=96)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    other = write_video(tmp_path / "b.mp4", frames=5, seed=4, width=128, height=96)
    samples = (Sample(0, 0, None, good), Sample(1, 1, None, broken), Sample(2, 2, None, other))
    batch = load_batch(3, samples, _config(tmp_path), PP, "gpu", videos_on_device=True)
    assert batch["counts"] == [3, 0, 3] and batch["errors"] == [None, UNREADABLE_VIDEO, None]
    assert batch["names"] == [["#0", "#4", "#8"], [], ["#0", "#2", "#4"]]
    assert batch["videos"][1] is None and batch["pixels"].shape == (0, 32, 32, 3) and batch["slots"] == []

    done = DeviceDecoder(PP, "cpu")(batch)
    assert done["counts"] == [3, 0, 3] and done["errors"] == [None, UNREADABLE_VIDEO, None]
    expected = [
        *_device_resize(list(nvdec.read_frames_pyav(good, [0, 4, 8]))),
        *_device_resize(list(nvdec.read_frames_pyav(other, [0, 2, 4]))),
    ]
    assert torch.equal(done["pixels"], torch.stack(expected))

    # Within a level of what the workers make of the same frames today (PyAV, torch's uint8 resize).
    today = load_batch(3, samples, _config(tmp_path), PP, "gpu")
    assert today["counts"] == [3, 0, 3] and "videos" not in today
    delta = (done["pixels"].int() - DeviceDecoder(PP, "cpu")(today)["pixels"].int()).abs()
    assert delta.max() <= 1


def test_a_video_that_breaks_after_its_hand_over_is_unreadable(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", frames=6)
    batch = load_batch(0, (Sample(0, 0, None, path),), _config(tmp_path), PP, "gpu", videos_on_device=True)
    path.write_bytes(b"gone")
    done = DeviceDecoder(PP, "cpu")(batch)
    assert done["counts"] == [0] and done["errors"] == [UNREADABLE_VIDEO] and done["pixels"].shape == (0, 32, 32, 3)


def test_packed_samples_and_handed_over_videos_keep_their_order(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", frames=6, seed=9)
    request = nvdec.video_request(path, 2)
    assert request is not None
    packed = [torch.full((32, 32, 3), value, dtype=torch.uint8) for value in (10, 20, 30)]
    batch = {"counts": [1, 2, 2], "errors": [None, None, None], "videos": [None, request.to_batch(), None]}
    placed, frames = place_videos(batch, packed, torch.device("cpu"), None, _device_resize)
    assert placed["counts"] == [1, 2, 2] and len(frames) == 5
    assert [int(f[0, 0, 0]) for f in (frames[0], frames[3], frames[4])] == [10, 20, 30]
    expected = _device_resize(list(nvdec.read_frames_pyav(path, request.indices)))
    assert all(torch.equal(a, b) for a, b in zip(frames[1:3], expected, strict=True))


# --- NVDEC itself, where a GPU can decode -----------------------------------------------------------------


def _nvdec_skip() -> str | None:
    return "no CUDA device" if not CUDA else nvdec.nvdec_error("cuda")


@pytest.mark.skipif(_nvdec_skip() is not None, reason=f"NVDEC cannot decode here: {_nvdec_skip()}")
def test_the_device_decoder_decodes_handed_over_videos_with_nvdec(tmp_path: Path) -> None:
    assert nvdec.checks_frame_numbers(torch.device("cuda")), nvdec.nvdec_timestamps(
        nvdec.make_test_video(tmp_path / "t.mp4", frames=6), [1, 4], "cuda"
    )
    paths = [write_video(tmp_path / f"{n}.mp4", frames=30, seed=n, width=320, height=180) for n in range(4)]
    samples = tuple(Sample(n, n, None, path) for n, path in enumerate(paths))
    batch = load_batch(0, samples, _config(tmp_path), PP, "gpu", videos_on_device=True)
    today = DeviceDecoder(PP, "cpu")(load_batch(0, samples, _config(tmp_path), PP, "gpu"))
    done = DeviceDecoder(PP, "cuda")(batch)
    assert done["counts"] == [3, 3, 3, 3] and done["errors"] == [None] * 4
    delta = (done["pixels"].cpu().int() - today["pixels"].int()).abs().float()
    assert delta.mean() <= 2.0, f"mean deviation {delta.mean():.2f}"
