"""nvdec.py: whole videos' sampled frames decoded by NVDEC in the scoring process, or by PyAV where it cannot.

On a machine without CUDA or PyNvVideoCodec (this one) the selection, the hand-over from the workers,
the frame-number check, the frame layouts and the PyAV fallback inside DeviceDecoder run for real;
the NVDEC reads themselves run only where a GPU can decode (the last tests).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from helpers.media import decode_rgb, write_video
from video_aesthetics import nvdec, video
from video_aesthetics.batches import load_batch
from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import DeviceDecoder
from video_aesthetics.frames import PreprocessConfig, select_evenly
from video_aesthetics.records import UNREADABLE_VIDEO, Sample

PP = PreprocessConfig(size=32)
HAS_PACKAGE = importlib.util.find_spec(nvdec.PACKAGE) is not None
CUDA = torch.cuda.is_available()


def _config(root: Path) -> ScoringConfig:
    return ScoringConfig(figure_root=str(root), load_num=3, batch_size=4, num_workers=0, video_clips_key="")


def _device_resize(full: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """DeviceDecoder's own resize of full frames (what it makes of decoded JPEGs)."""
    return DeviceDecoder(PP, "cpu")._resized(full)


# --- availability and selection ---------------------------------------------------------------------


def test_nvdec_error_names_what_is_missing() -> None:
    assert "not one" in str(nvdec.nvdec_error("cpu")) and "CUDA" in str(nvdec.nvdec_error(torch.device("cpu")))
    if not CUDA:
        assert nvdec.nvdec_error("cuda") == "no CUDA device is available"
        assert nvdec.nvdec_error("cuda:1") == "no CUDA device is available"


@pytest.mark.skipif(HAS_PACKAGE, reason="PyNvVideoCodec is installed here")
def test_without_the_package_the_reason_says_how_to_install_it() -> None:
    with pytest.raises(
        nvdec.NvdecError, match=r"PyNvVideoCodec is not installed \(pip install 'video-aesthetics\[gpu\]'\)"
    ):
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
    with pytest.raises(nvdec.NvdecError, match="CUDA devices, and cpu is not one"):
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


# --- frame numbers and layouts -----------------------------------------------------------------------


def test_a_frame_number_must_match_the_pyav_numbering(tmp_path: Path) -> None:
    clock = video.FrameClock(rate=Fraction(24), time_base=Fraction(1, 12288), start=1024)
    nvdec.check_frame_number(1024 + 5 * 512, 5, clock, "v.mp4")  # the packet's own timestamp
    nvdec.check_frame_number(5 * 512, 5, clock, "v.mp4")  # the same with the stream's start taken off
    nvdec.check_frame_number(None, 5, clock, "v.mp4")  # no timestamp to check
    nvdec.check_frame_number(123, 5, None, "v.mp4")  # no clock to check against
    with pytest.raises(
        nvdec.NvdecError, match=r"v.mp4: NVDEC gave the frame at timestamp 4096 \(frame 6 .*for frame 5"
    ):
        nvdec.check_frame_number(1024 + 6 * 512, 5, clock, "v.mp4")


def test_frame_timestamps_are_read_from_either_attribute() -> None:
    assert nvdec.frame_pts(SimpleNamespace(timestamp=3003)) == 3003
    assert nvdec.frame_pts(SimpleNamespace(getPTS=lambda: 42)) == 42
    assert nvdec.frame_pts(SimpleNamespace()) is None


def test_planar_rgb_is_taken_from_every_layout_a_release_exports() -> None:
    planar = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
    cpu = torch.device("cpu")
    for exported in (planar, planar.permute(1, 2, 0).contiguous(), planar.reshape(12, 5)):
        assert torch.equal(nvdec._planar(exported, cpu), planar)
    with pytest.raises(nvdec.NvdecError, match="not uint8"):
        nvdec._planar(planar.to(torch.int16), cpu)
    with pytest.raises(nvdec.NvdecError, match=r"shape \(4, 5\)"):
        nvdec._planar(planar[0], cpu)


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
    placed, frames = nvdec.place_videos(batch, packed, torch.device("cpu"), None, _device_resize)
    assert placed["counts"] == [1, 2, 2] and len(frames) == 5
    assert [int(f[0, 0, 0]) for f in (frames[0], frames[3], frames[4])] == [10, 20, 30]
    expected = _device_resize(list(nvdec.read_frames_pyav(path, request.indices)))
    assert all(torch.equal(a, b) for a, b in zip(frames[1:3], expected, strict=True))


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


@pytest.mark.skipif(_nvdec_skip() is not None, reason=f"NVDEC cannot decode here: {_nvdec_skip()}")
def test_the_device_decoder_decodes_handed_over_videos_with_nvdec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert nvdec.checks_frame_numbers(torch.device("cuda")), nvdec.nvdec_timestamps(
        nvdec.make_test_video(tmp_path / "t.mp4", frames=6), [1, 4], "cuda"
    )
    paths = [write_video(tmp_path / f"{n}.mp4", frames=30, seed=n, width=320, height=180) for n in range(4)]
    samples = tuple(Sample(n, n, None, path) for n, path in enumerate(paths))
    batch = load_batch(0, samples, _config(tmp_path), PP, "gpu", videos_on_device=True)
    today = DeviceDecoder(PP, "cpu")(load_batch(0, samples, _config(tmp_path), PP, "gpu"))
    for threads in (1, 3):
        monkeypatch.setattr(nvdec, "THREADS", threads)
        done = DeviceDecoder(PP, "cuda")(batch)
        assert done["counts"] == [3, 3, 3, 3] and done["errors"] == [None] * 4
        delta = (done["pixels"].cpu().int() - today["pixels"].int()).abs().float()
        assert delta.mean() <= 2.0, f"{threads} threads: mean deviation {delta.mean():.2f}"


# ---------------------------------------------------------------------------------------------------
# What NVDEC's own FFmpeg may open: MP4/MOV files alone, the very file checked


def test_nvdec_reads_an_mp4_through_the_descriptor_it_checked(tmp_path: Path) -> None:
    path = nvdec.make_test_video(tmp_path / "v.mp4", frames=3)
    with nvdec.pinned_mp4(path) as pinned:
        assert pinned.startswith("/proc/self/fd/")
        # Replacing the path after the check changes nothing: the name refers to the file opened.
        path.rename(tmp_path / "moved.mp4")
        path.write_bytes(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\nhttp://127.0.0.1:9/x.ts\n")
        assert Path(pinned).read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("playlist.mp4", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/segment.ts\n"),
        ("concat.mp4", b"ffconcat version 1.0\nfile /etc/passwd\n"),
        ("dash.mp4", b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>'),
        ("short.mp4", b"ftyp"),
        ("empty.mp4", b""),
    ],
)
def test_anything_but_an_mp4_is_left_to_pyav(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(nvdec.NvdecError, match="is not an MP4/MOV file"), nvdec.pinned_mp4(path):
        pass


def test_a_fifo_or_folder_never_reaches_nvdec(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(nvdec.NvdecError, match="not a regular file"), nvdec.pinned_mp4(fifo):
        pass
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(nvdec.NvdecError, match="not a regular file"), nvdec.pinned_mp4(tmp_path / "folder.mp4"):
        pass


class _RecordingDecoder:
    """Stands in for PyNvVideoCodec's SimpleDecoder (no GPU here): it opens its source by name, as the
    real one does again when it seeks back, and hands out frames as (3, H, W) tensors."""

    def __init__(self, source: str, **_: object) -> None:
        self.sources: list[str] = []
        self.reconfigure_decoder(source)

    def reconfigure_decoder(self, source: str) -> None:
        self.source = source
        self.sources.append(Path(source).read_bytes()[:64])

    def reopen(self) -> bytes:
        return Path(self.source).read_bytes()[:64]

    def __len__(self) -> int:
        return 10

    def get_batch_frames_by_index(self, indices: list[int]) -> list[torch.Tensor]:
        return [torch.full((3, 4, 6), index, dtype=torch.uint8) for index in indices]


def test_the_reader_keeps_a_videos_descriptor_open_while_its_decoder_may_reopen_it(tmp_path: Path) -> None:
    first = nvdec.make_test_video(tmp_path / "a.mp4", frames=3)
    second = nvdec.make_test_video(tmp_path / "b.mp4", frames=5, width=96, height=64)
    fake = SimpleNamespace(SimpleDecoder=_RecordingDecoder, OutputColorType=SimpleNamespace(RGBP="RGBP"))
    reader = nvdec._Reader(fake, torch.device("cpu"), SimpleNamespace(cuda_stream=7))  # type: ignore[arg-type]
    frames = reader.read(str(first), [2, 0, 2], None)
    assert frames[:, 0, 0, 0].tolist() == [2, 0, 2]
    held = reader.fd
    assert held is not None and reader.decoder.source == f"/proc/self/fd/{held}"
    # A seek back reopens the name: it is still the first video, whatever was opened since.
    other = os.open(second, os.O_RDONLY)
    try:
        assert reader.decoder.reopen() == first.read_bytes()[:64]
    finally:
        os.close(other)
    reader.read(str(second), [1], None)
    assert reader.decoder.reopen() == second.read_bytes()[:64]
    with pytest.raises(OSError):
        os.fstat(held)  # the first video's descriptor was closed once the decoder had moved on
    reader.close()
    assert reader.fd is None and reader.decoder is None


def test_the_reader_refuses_a_playlist_before_any_decoder_sees_it(tmp_path: Path) -> None:
    playlist = tmp_path / "list.mp4"
    playlist.write_bytes(b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n")
    fake = SimpleNamespace(SimpleDecoder=_RecordingDecoder, OutputColorType=SimpleNamespace(RGBP="RGBP"))
    reader = nvdec._Reader(fake, torch.device("cpu"), SimpleNamespace(cuda_stream=7))  # type: ignore[arg-type]
    with pytest.raises(nvdec.NvdecError, match="not an MP4/MOV file"):
        reader.read(str(playlist), [0], None)
    assert reader.decoder is None and reader.fd is None
