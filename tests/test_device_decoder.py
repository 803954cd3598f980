"""device_decoder.py: DeviceDecoder, the device half of the gpu and hardware paths, and decoding ahead.

DeviceDecoder runs here on the CPU: the same code, torchvision decoding the JPEGs on the CPU
(libjpeg-turbo, PIL's decoder) instead of with nvJPEG, and the exact resize the GPU uses, so that
its pixels are the exact path's bit for bit. The engines themselves run where CUDA is (the test
marked so). The paths' pixels and scores against each other are tests/test_decoding.py's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.media import (
    clip_frames,
    jpeg_bytes,
    picture,
    pixel_delta,
    save_image,
    without_segment,
)
from video_aesthetics.batches import FrameBatches
from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import frame_for_device, pack_for_device
from video_aesthetics.device_decoder import DeviceDecoder, decoded_ahead
from video_aesthetics.errors import ConfigError
from video_aesthetics.frames import PreprocessConfig, load_frame
from video_aesthetics.jpeg_hardware import hardware_decode_error
from video_aesthetics.records import CORRUPT_FRAMES
from video_aesthetics.scoring import WorkerFailure

# device_decoder.py silences torchvision 0.29's deprecation of its codecs at import; pytest resets filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:.*TorchCodec:DeprecationWarning")
PP = PreprocessConfig()

# The device half on the CPU decodes with libjpeg-turbo, as PIL does, and resizes as Pillow does: no deviation.
DEVICE_MAX_DELTA = 0
DEVICE_MEAN_DELTA = 0.0


def _config(model_args: dict[str, str], root: Path, **changes: object) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": str(root), "num_workers": 0, "device": "cpu", **changes})


def test_device_decoder_drops_only_the_bad_frames_and_keeps_order(tmp_path: Path) -> None:
    good = [save_image(tmp_path / f"{seed}.jpg", picture(seed, 320, 180), quality=90) for seed in range(3)]
    png = save_image(tmp_path / "x.png", picture(7, 320, 180))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(without_segment(jpeg_bytes(), 0xDB))
    # sample 0: good0, bad, png; sample 1: bad only; sample 2: good1, good2 (in that order)
    frames = [frame_for_device(p, PP) for p in (good[0], bad, png, bad, good[1], good[2])]
    names = [["good0.jpg", "bad.jpg", "x.png"], ["bad.jpg"], ["good1.jpg", "good2.jpg"]]
    batch = {"batch": 5, "seqs": [10, 11, 12], "counts": [3, 1, 2], "errors": [None, None, None], "names": names}
    done = DeviceDecoder(PP, "cpu")({**batch, **pack_for_device(frames, PP)})
    assert done["batch"] == 5 and done["seqs"] == [10, 11, 12]
    assert done["counts"] == [2, 0, 2] and done["errors"] == [None, CORRUPT_FRAMES, None]
    # The kept frames' names, so that embeddings made on the device name the frames they came from.
    assert done["names"] == [["good0.jpg", "x.png"], [], ["good1.jpg", "good2.jpg"]]
    expected = np.stack([load_frame(p, PP) for p in (good[0], png, good[1], good[2])])
    delta = pixel_delta(done["pixels"].numpy(), expected)
    assert delta.max() <= DEVICE_MAX_DELTA and delta.mean() <= DEVICE_MEAN_DELTA


def test_device_decoder_refuses_the_hardware_engine_where_it_cannot_run() -> None:
    with pytest.raises(ConfigError, match="cannot decode JPEGs on the hardware engines.*scores on cpu"):
        DeviceDecoder(PP, "cpu", engine="hardware")
    with pytest.raises(ConfigError, match="engine must be one of nvjpeg, hardware"):
        DeviceDecoder(PP, "cpu", engine="nvdec")


def _hardware_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device"
    return hardware_decode_error(torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("engine", ["nvjpeg", "hardware"])
def test_device_engines_on_cuda_decode_every_kind_of_jpeg_near_exact(tmp_path: Path, engine: str) -> None:
    """On a GPU: plain, greyscale, progressive (the engines refuse it: nvJPEG takes over) and broken JPEGs."""
    if engine == "hardware" and _hardware_skip_reason() is not None:
        pytest.skip(str(_hardware_skip_reason()))
    paths = [save_image(tmp_path / f"{seed}.jpg", picture(seed, 1280, 720), quality=90) for seed in range(3)]
    paths.append(save_image(tmp_path / "grey.jpg", Image.fromarray(picture(5, 640, 360)).convert("L"), quality=90))
    paths.append(save_image(tmp_path / "progressive.jpg", picture(6, 640, 360), quality=90, progressive=True))
    frames = [frame_for_device(path, PP) for path in paths]
    frames.insert(2, without_segment(jpeg_bytes(7), 0xDB))  # no quantisation tables: nothing decodes it
    batch = {"batch": 0, "seqs": [0], "counts": [len(frames)], "errors": [None], **pack_for_device(frames, PP)}
    done = DeviceDecoder(PP, torch.device("cuda"), engine=engine)(batch)
    assert done["counts"] == [len(paths)] and done["pixels"].is_cuda
    delta = pixel_delta(done["pixels"].cpu().numpy(), np.stack([load_frame(path, PP) for path in paths]))
    # nvJPEG's and the engines' IDCT and chroma upsampling are not libjpeg-turbo's (docs/performance.md).
    assert delta.mean() <= 2.0


def test_decoding_ahead_keeps_order_and_raises_where_the_loader_fails(tmp_path: Path, model_args: dict) -> None:
    records = clip_frames(tmp_path, videos=3, clips=1, width=160, height=90)
    config = _config(model_args, tmp_path, batch_size=1)
    batches = list(FrameBatches(records, config, PP, decode="gpu"))

    def failing():
        yield from batches[:2]
        raise WorkerFailure()

    decoder = DeviceDecoder(PP, "cpu")
    assert [b["batch"] for b in decoded_ahead(iter(batches), decoder)] == [0, 1, 2]
    got = []
    with pytest.raises(WorkerFailure):
        for batch in decoded_ahead(failing(), decoder):
            got.append(batch["batch"])
    # Batch 1 was decoded but not handed over: iter_results starts again after the last batch it scored.
    assert got == [0]
