"""nvdec_reader.py: NVDEC's reader, its frame-number check and the frame layouts it takes.

No GPU is needed: the reader runs here with a stand-in for PyNvVideoCodec's SimpleDecoder, which
opens its source by name as the real one does.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from video_aesthetics import nvdec_reader, video
from video_aesthetics.nvdec import make_test_video
from video_aesthetics.nvdec_source import NvdecError

# --- frame numbers and layouts -----------------------------------------------------------------------


def test_a_frame_number_must_match_the_pyav_numbering(tmp_path: Path) -> None:
    clock = video.FrameClock(rate=Fraction(24), time_base=Fraction(1, 12288), start=1024)
    nvdec_reader.check_frame_number(1024 + 5 * 512, 5, clock, "v.mp4")  # the packet's own timestamp
    nvdec_reader.check_frame_number(5 * 512, 5, clock, "v.mp4")  # the same with the stream's start taken off
    nvdec_reader.check_frame_number(None, 5, clock, "v.mp4")  # no timestamp to check
    nvdec_reader.check_frame_number(123, 5, None, "v.mp4")  # no clock to check against
    with pytest.raises(NvdecError, match=r"v.mp4: NVDEC gave the frame at timestamp 4096 \(frame 6 .*for frame 5"):
        nvdec_reader.check_frame_number(1024 + 6 * 512, 5, clock, "v.mp4")


def test_frame_timestamps_are_read_from_either_attribute() -> None:
    assert nvdec_reader.frame_pts(SimpleNamespace(timestamp=3003)) == 3003
    assert nvdec_reader.frame_pts(SimpleNamespace(getPTS=lambda: 42)) == 42
    assert nvdec_reader.frame_pts(SimpleNamespace()) is None


def test_planar_rgb_is_taken_from_every_layout_a_release_exports() -> None:
    planar = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
    cpu = torch.device("cpu")
    for exported in (planar, planar.permute(1, 2, 0).contiguous(), planar.reshape(12, 5)):
        assert torch.equal(nvdec_reader.planar(exported, cpu), planar)
    with pytest.raises(NvdecError, match="not uint8"):
        nvdec_reader.planar(planar.to(torch.int16), cpu)
    with pytest.raises(NvdecError, match=r"shape \(4, 5\)"):
        nvdec_reader.planar(planar[0], cpu)


# --- the reader: the descriptor it reads through, and what it refuses ------------------------------


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
    first = make_test_video(tmp_path / "a.mp4", frames=3)
    second = make_test_video(tmp_path / "b.mp4", frames=5, width=96, height=64)
    fake = SimpleNamespace(SimpleDecoder=_RecordingDecoder, OutputColorType=SimpleNamespace(RGBP="RGBP"))
    reader = nvdec_reader.Reader(fake, torch.device("cpu"), SimpleNamespace(cuda_stream=7))  # type: ignore[arg-type]
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
    reader = nvdec_reader.Reader(fake, torch.device("cpu"), SimpleNamespace(cuda_stream=7))  # type: ignore[arg-type]
    with pytest.raises(NvdecError, match="not an MP4/MOV file"):
        reader.read(str(playlist), [0], None)
    assert reader.decoder is None and reader.fd is None
