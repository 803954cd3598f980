"""The decode paths (exact, fast, gpu, hardware, auto): pixels and scores against the exact path, odd and hostile files.

The gpu path's device half (device_decoder.DeviceDecoder) runs here on the CPU: the same code, torchvision
decoding the JPEGs on the CPU (libjpeg-turbo, PIL's decoder) instead of with nvJPEG, and the exact resize
the GPU uses, so that its pixels are the exact path's bit for bit. The hardware path needs a GPU with
JPEG engines: here only its selection, refusals and fallbacks are tested. DeviceDecoder's own tests are
tests/test_device_decoder.py's.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.media import (
    clip_frames,
    clip_record,
    jpeg_bytes,
    picture,
    pixel_delta,
    save_image,
    without_segment,
    write_frames,
    write_video,
)
from video_aesthetics.batches import FrameBatches
from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import (
    CPU_DEFAULT,
    MAX_FRAME_BYTES,
    decodes_on_device,
    frame_for_device,
    frame_loader,
    gpu_decode_error,
    is_complete_jpeg,
    is_plain_jpeg,
    jpeg_engine,
    load_frame_fast,
    pack_for_device,
    read_frame,
    resolve_decode,
)
from video_aesthetics.device_decoder import DeviceDecoder, decoded_ahead
from video_aesthetics.errors import ConfigError
from video_aesthetics.frames import OutsideRootError, PreprocessConfig, list_frames, load_frame
from video_aesthetics.records import CORRUPT_FRAMES, NO_FRAMES
from video_aesthetics.scoring import Scorer, iter_results

ROOT = Path(__file__).resolve().parents[1]
# decoding.py silences torchvision 0.29's deprecation of its codecs at import; pytest resets filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:.*TorchCodec:DeprecationWarning")
PP = PreprocessConfig()

# The stated deviations from the exact path (README, "Decode paths"): levels of 0..255 per channel.
FAST_MAX_DELTA = 1  # downscaling, the case of video frames; upscaling a tiny frame may reach 2
FAST_MAX_DELTA_UPSCALED = 2
FAST_MEAN_DELTA = 0.01
# The device half on the CPU decodes with libjpeg-turbo, as PIL does, and resizes as Pillow does: no deviation.
DEVICE_MAX_DELTA = 0
DEVICE_MEAN_DELTA = 0.0
# Scores of the tiny test model: the tolerance the suite holds the exact path to against open_clip.
SCORE_DELTA = 1e-5


def _device_pixels(paths: list[Path], pp: PreprocessConfig = PP) -> np.ndarray:
    """The gpu path on the CPU: the workers' half, then the device half, for one sample of ``paths``."""
    frames = [frame_for_device(path, pp) for path in paths]
    batch = {"batch": 0, "seqs": [0], "counts": [len(frames)], "errors": [None], **pack_for_device(frames, pp)}
    done = DeviceDecoder(pp, "cpu")(batch)
    assert done["counts"] == [len(paths)]
    return done["pixels"].numpy()


SIZES = [(1280, 720), (1920, 1080), (640, 360), (360, 640), (225, 224)]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_fast_pixels_are_within_a_level_of_exact(tmp_path: Path, width: int, height: int) -> None:
    paths = [save_image(tmp_path / f"{seed}.jpg", picture(seed, width, height), quality=90) for seed in range(3)]
    exact = np.stack([load_frame(path, PP) for path in paths])
    fast = np.stack([load_frame_fast(path, PP) for path in paths])
    assert fast.shape == exact.shape == (3, 224, 224, 3) and fast.dtype == np.uint8
    delta = pixel_delta(fast, exact)
    assert delta.max() <= FAST_MAX_DELTA and delta.mean() <= FAST_MEAN_DELTA


@pytest.mark.parametrize(
    "pp",
    [
        PreprocessConfig(size=160),
        PreprocessConfig(interpolation="bilinear"),
        PreprocessConfig(resize_mode="squash"),
        PreprocessConfig(resize_mode="longest", fill_color=128),
    ],
    ids=["size160", "bilinear", "squash", "longest-padded"],
)
def test_fast_and_device_paths_follow_the_models_preprocessing(tmp_path: Path, pp: PreprocessConfig) -> None:
    paths = [save_image(tmp_path / f"{seed}.jpg", picture(seed, 400, 240), quality=90) for seed in range(2)]
    exact = np.stack([load_frame(path, pp) for path in paths])
    fast = np.stack([load_frame_fast(path, pp) for path in paths])
    device = _device_pixels(paths, pp)
    assert fast.shape == device.shape == exact.shape == (2, pp.size, pp.size, 3)
    assert pixel_delta(fast, exact).max() <= FAST_MAX_DELTA
    assert (
        pixel_delta(device, exact).max() <= DEVICE_MAX_DELTA and pixel_delta(device, exact).mean() <= DEVICE_MEAN_DELTA
    )


def test_tiny_frames_are_upscaled_within_bounds(tmp_path: Path) -> None:
    paths = [save_image(tmp_path / f"{seed}.jpg", picture(seed, 100, 60), quality=90) for seed in range(3)]
    exact = np.stack([load_frame(path, PP) for path in paths])
    assert pixel_delta(np.stack([load_frame_fast(p, PP) for p in paths]), exact).max() <= FAST_MAX_DELTA_UPSCALED
    assert pixel_delta(_device_pixels(paths), exact).max() <= DEVICE_MAX_DELTA


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_device_path_pixels_are_within_bounds_of_exact(tmp_path: Path, width: int, height: int) -> None:
    paths = [save_image(tmp_path / f"{seed}.jpg", picture(seed, width, height), quality=90) for seed in range(3)]
    exact = np.stack([load_frame(path, PP) for path in paths])
    delta = pixel_delta(_device_pixels(paths), exact)
    assert delta.max() <= DEVICE_MAX_DELTA and delta.mean() <= DEVICE_MEAN_DELTA


def test_fast_pixels_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """Workers decode on one thread, the main process (num_workers 0) on several: the same bytes either way."""
    paths = [save_image(tmp_path / f"{seed}.jpg", picture(seed, 1280, 720), quality=90) for seed in range(2)]
    paths.append(save_image(tmp_path / "tiny.jpg", picture(5, 90, 50), quality=90))
    before = torch.get_num_threads()
    outputs = set()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outputs.add(b"".join(load_frame_fast(path, PP).tobytes() for path in paths))
    finally:
        torch.set_num_threads(before)
    assert len(outputs) == 1


@pytest.mark.parametrize(
    ("name", "mode", "options"),
    [
        ("grey.jpg", "L", {"quality": 90}),
        ("progressive.jpg", "RGB", {"quality": 90, "progressive": True}),
        ("subsampled444.jpg", "RGB", {"quality": 95, "subsampling": 0}),
    ],
)
def test_other_jpeg_kinds_take_the_fast_path_within_bounds(tmp_path: Path, name: str, mode: str, options: dict) -> None:
    path = save_image(tmp_path / name, Image.fromarray(picture(3, 640, 360)).convert(mode), **options)
    assert is_plain_jpeg(path.read_bytes())
    assert pixel_delta(load_frame_fast(path, PP), load_frame(path, PP)).max() <= FAST_MAX_DELTA
    assert pixel_delta(_device_pixels([path])[0], load_frame(path, PP)).max() <= DEVICE_MAX_DELTA


@pytest.mark.parametrize(
    ("name", "mode", "options"),
    [
        ("cmyk.jpg", "CMYK", {"quality": 90}),
        ("frame.png", "RGB", {}),
        ("alpha.png", "RGBA", {}),
        ("palette.png", "P", {}),
        ("frame.webp", "RGB", {"quality": 90}),
    ],
)
def test_other_images_are_decoded_exactly(tmp_path: Path, name: str, mode: str, options: dict) -> None:
    """Not plain JPEGs: the fast path is the exact path, and the gpu path's workers decode them exactly."""
    path = save_image(tmp_path / name, Image.fromarray(picture(4, 320, 180)).convert(mode), **options)
    exact = load_frame(path, PP)
    np.testing.assert_array_equal(load_frame_fast(path, PP), exact)
    shipped = frame_for_device(path, PP)
    assert isinstance(shipped, np.ndarray)
    np.testing.assert_array_equal(shipped, exact)
    np.testing.assert_array_equal(_device_pixels([path])[0], exact)


def _with_size(data: bytes, width: int, height: int) -> bytes:
    at = data.index(b"\xff\xc0")  # baseline start of frame: length, precision, height, width
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


CORRUPT = {
    "truncated": lambda: jpeg_bytes()[:3000],
    "cut-before-scan": lambda: jpeg_bytes()[:300],
    "no-end-marker": lambda: jpeg_bytes()[:-2],
    "garbage": lambda: b"not a jpeg at all",
    "empty": lambda: b"",
    "no-quantisation-tables": lambda: without_segment(jpeg_bytes(), 0xDB),
    "decompression-bomb": lambda: _with_size(jpeg_bytes(), 65000, 65000),
    "larger-than-8k": lambda: _with_size(jpeg_bytes(), 8000, 8000),
    "a-sliver": lambda: jpeg_bytes(width=8, height=400),  # resized to 224x11200 before the crop
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_frames_the_exact_path_cannot_read_fail_on_every_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "frame.jpg"
    path.write_bytes(CORRUPT[kind]())
    with pytest.raises(Exception):  # noqa: B017 - PIL's own error types, whatever they are
        load_frame(path, PP)
    with pytest.raises(Exception):  # noqa: B017
        load_frame_fast(path, PP)
    try:
        shipped = frame_for_device(path, PP)
    except Exception:  # noqa: BLE001 - refused in the worker: skipped like any unreadable frame
        return
    # Only damage that no header check sees reaches the device; there it is dropped.
    assert isinstance(shipped, bytes) and kind == "no-quantisation-tables"
    batch = {"batch": 0, "seqs": [0], "counts": [1], "errors": [None], **pack_for_device([shipped], PP)}
    done = DeviceDecoder(PP, "cpu")(batch)
    assert done["counts"] == [0] and done["errors"] == [CORRUPT_FRAMES] and done["pixels"].shape[0] == 0


def test_video_frames_are_held_to_the_same_bounds_on_every_path() -> None:
    from video_aesthetics.decoding import image_pixels
    from video_aesthetics.frames import FrameTooLargeError

    sliver = Image.fromarray(picture(1, 8, 400))
    for decode in ("exact", "fast"):
        with pytest.raises(FrameTooLargeError):
            image_pixels(sliver, PP, decode)
    frame = Image.fromarray(picture(2, 320, 180))
    assert pixel_delta(image_pixels(frame, PP, "fast"), image_pixels(frame, PP, "exact")).max() <= FAST_MAX_DELTA


def test_a_truncated_jpeg_is_not_shipped_as_bytes() -> None:
    whole = jpeg_bytes()
    assert is_complete_jpeg(whole) and is_complete_jpeg(whole + b"trailing bytes")
    assert is_complete_jpeg(jpeg_bytes(progressive=True))
    for cut in (len(whole) // 2, len(whole) - 2, 400):
        assert not is_complete_jpeg(whole[:cut])


def test_pack_for_device_uses_one_tensor_for_all_jpegs(tmp_path: Path) -> None:
    jpegs = [jpeg_bytes(seed) for seed in range(3)]
    pixels = load_frame(save_image(tmp_path / "x.png", picture(1, 320, 180)), PP)
    packed = pack_for_device([jpegs[0], pixels, jpegs[1], jpegs[2]], PP)
    assert packed["slots"] == [-1, 0, -2, -3]
    assert packed["jpeg_ends"] == np.cumsum([len(j) for j in jpegs]).tolist()
    assert packed["jpegs"].dtype == torch.uint8 and bytes(packed["jpegs"].numpy()) == b"".join(jpegs)
    assert packed["pixels"].shape == (1, 224, 224, 3)
    empty = pack_for_device([], PP)
    assert empty["jpegs"].numel() == 0 and empty["pixels"].shape == (0, 224, 224, 3) and empty["slots"] == []


def _refused_without_blocking(read: Callable[[], object]) -> None:
    """``read`` of a FIFO returns at once, refusing it (a reader that opened it would wait for a writer forever)."""
    outcome: list[object] = []

    def attempt() -> None:
        try:
            outcome.append(read())
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "reading a FIFO must not block"
    assert isinstance(outcome[0], OSError) and "not a regular file" in str(outcome[0])


def test_read_frame_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "frame.jpg"
    os.mkfifo(fifo)
    _refused_without_blocking(lambda: read_frame(fifo))
    with pytest.raises(OSError, match="not a regular file"):
        read_frame(Path("/dev/zero"))


def test_a_frame_file_too_large_to_read_at_once_is_streamed_by_the_exact_path(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    path.write_bytes(jpeg_bytes())
    with path.open("r+b") as handle:
        handle.truncate(MAX_FRAME_BYTES + 1)  # sparse: trailing zeros after the image, which PIL ignores
    assert read_frame(path) is None
    exact = load_frame(path, PP)
    np.testing.assert_array_equal(load_frame_fast(path, PP), exact)
    shipped = frame_for_device(path, PP)
    assert isinstance(shipped, np.ndarray)
    np.testing.assert_array_equal(shipped, exact)


# ---------------------------------------------------------------------------------------------------
# Choosing a path


def test_resolve_decode_without_cuda() -> None:
    cpu = torch.device("cpu")
    assert resolve_decode("exact", cpu) == "exact" and resolve_decode("fast", cpu) == "fast"
    assert resolve_decode("auto", cpu) == CPU_DEFAULT in ("exact", "fast")
    with pytest.raises(ConfigError, match="decode 'gpu'.*use decode 'auto', 'fast' or 'exact'"):
        resolve_decode("gpu", cpu)
    with pytest.raises(ConfigError, match="decode must be one of"):
        resolve_decode("turbo", cpu)


def test_hardware_decode_without_cuda_is_a_config_error_naming_the_alternatives() -> None:
    with pytest.raises(
        ConfigError, match="decode 'hardware'.*hardware JPEG engines.*use decode 'auto', 'fast' or 'exact'"
    ):
        resolve_decode("hardware", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="decode 'hardware' cannot run: CUDA is not available.*use decode 'gpu'"):
            resolve_decode("hardware", torch.device("cuda"))


def test_the_device_paths_share_the_workers_half_and_name_their_engine() -> None:
    assert [decode for decode in ("auto", "exact", "fast", "gpu", "hardware") if decodes_on_device(decode)] == [
        "gpu",
        "hardware",
    ]
    assert frame_loader("hardware") is frame_loader("gpu") is frame_for_device
    assert jpeg_engine("gpu") == "nvjpeg" and jpeg_engine("hardware") == "hardware"
    with pytest.raises(ValueError, match="does not decode on the device"):
        jpeg_engine("fast")


def test_the_workers_ship_bytes_on_the_hardware_path(tmp_path: Path, model_args: dict) -> None:
    records = clip_frames(tmp_path, videos=1, clips=2, width=160, height=90)
    config = _config(model_args, tmp_path, batch_size=2)
    [batch] = list(FrameBatches(records, config, PP, decode="hardware"))
    assert len(batch["jpeg_ends"]) == 6 and batch["pixels"].shape[0] == 0
    # The device half of either engine makes the same pixels of them (here: nvjpeg's code on the CPU).
    done = DeviceDecoder(PP, "cpu")(batch)
    assert done["counts"] == [3, 3] and done["pixels"].shape == (6, 224, 224, 3)


def test_gpu_decode_is_refused_clearly_where_cuda_is_absent() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert "cannot decode JPEGs on cuda" in str(gpu_decode_error(torch.device("cuda")))


@pytest.mark.parametrize("decode", ["", "GPU", "nvjpeg", None, 1])
def test_config_refuses_unknown_decode_paths(decode: object) -> None:
    with pytest.raises(ConfigError, match="decode must be one of auto, exact, fast, gpu, hardware"):
        ScoringConfig(decode=decode)  # type: ignore[arg-type]


def test_config_from_params_takes_decode() -> None:
    assert ScoringConfig().decode == "auto"
    assert ScoringConfig.from_params({"decode": "fast"}).decode == "fast"
    assert ScoringConfig.from_params({"decode": None}).decode == "auto"


def test_scorer_load_refuses_gpu_decode_on_cpu_before_loading_weights() -> None:
    config = ScoringConfig(clip_model="/nonexistent/model.pt", device="cpu", decode="gpu")
    with pytest.raises(ConfigError, match="decode 'gpu'"):
        Scorer.load(config)


def test_cli_passes_decode(tmp_path: Path) -> None:
    from video_aesthetics.cli import build_parser, config_from_args

    base = ["score", "--input", "in.jsonl", "--output", "out.jsonl", "--figure-root", str(tmp_path)]
    assert config_from_args(build_parser().parse_args(base)).decode == "auto"
    assert config_from_args(build_parser().parse_args([*base, "--decode", "fast"])).decode == "fast"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--decode", "turbo"])


def test_cli_reports_gpu_decode_without_cuda_as_a_config_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from video_aesthetics.cli import main

    (tmp_path / "in.jsonl").write_text(json.dumps(clip_record("v.mp4", ["v_0"])) + "\n")
    args = ["score", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    code = main([*args, "--figure-root", str(tmp_path), "--device", "cpu", "--decode", "gpu"])
    assert code == 2 and not (tmp_path / "out.jsonl").exists()


def test_operator_and_evaluator_take_decode() -> None:
    from video_aesthetics.airflow.operators import VideoAestheticScoringOperator
    from video_aesthetics.dataflow.evaluator import VideoAestheticEvaluator

    operator = VideoAestheticScoringOperator(task_id="t", input_path="in", output_path="out", decode="fast")
    assert operator.scoring_config().decode == "fast"
    assert VideoAestheticScoringOperator(task_id="u", input_path="in", output_path="out").scoring_config().decode == (
        "auto"
    )
    assert VideoAestheticEvaluator(decode="exact").config.decode == "exact"
    with pytest.raises(ConfigError, match="decode must be one of"):
        VideoAestheticEvaluator(decode="fastest")


# ---------------------------------------------------------------------------------------------------
# Scores through the pipeline


def _config(model_args: dict[str, str], root: Path, **changes: object) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": str(root), "num_workers": 0, "device": "cpu", **changes})


def _device_path_results(records: list[dict], config: ScoringConfig, scorer: Scorer) -> list[tuple[int, float, str]]:
    """iter_results' loop on the gpu path, on the CPU: workers' batches, DeviceDecoder ahead, the scorer."""
    dataset = FrameBatches(records, config, scorer.preprocess, decode="gpu")
    out = []
    for batch in decoded_ahead(iter(dataset), DeviceDecoder(scorer.preprocess, "cpu")):
        scores = scorer.score_pixels(batch["pixels"])
        offset = 0
        for seq, count, error in zip(batch["seqs"], batch["counts"], batch["errors"], strict=True):
            out.append((seq, float(scores[offset : offset + count].mean()) if count else None, error))
            offset += count
    return out


def test_scores_on_every_path_stay_within_bounds_of_exact(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    records = clip_frames(tmp_path)
    exact = list(iter_results(records, _config(model_args, tmp_path, decode="exact"), scorer))
    fast = list(iter_results(records, _config(model_args, tmp_path, decode="fast"), scorer))
    device = _device_path_results(records, _config(model_args, tmp_path, batch_size=3), scorer)
    assert [r.seq for r in fast] == [r.seq for r in exact] == [seq for seq, _, _ in device] == [0, 1, 2, 3]
    assert all(r.error is None for r in exact + fast) and all(error is None for _, _, error in device)
    for ours in ([r.score for r in fast], [score for _, score, _ in device]):
        assert max(abs(a - b) for a, b in zip(ours, [r.score for r in exact], strict=True)) <= SCORE_DELTA
    # The deviation is not zero: the fast path really ran.
    assert [r.score for r in fast] != [r.score for r in exact]


def test_fast_scores_are_the_same_with_and_without_workers(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    records = clip_frames(tmp_path, width=320, height=180)
    config = _config(model_args, tmp_path, decode="fast", batch_size=2)
    in_process = [(r.seq, r.score) for r in iter_results(records, config, scorer)]
    assert [(r.seq, r.score) for r in iter_results(records, config.replace(num_workers=2), scorer)] == in_process


def test_missing_and_corrupt_frames_on_the_fast_and_device_paths(
    tmp_path: Path, model_args: dict, scorer: Scorer
) -> None:
    good = write_frames(tmp_path, "v", "v_partly", count=3, seed=2, suffix=".jpg")
    good[1].write_bytes(good[1].read_bytes()[:300])
    broken = write_frames(tmp_path, "v", "v_broken", count=2, seed=3, suffix=".jpg")
    broken[0].write_bytes(b"not a jpeg")
    broken[1].write_bytes(without_segment(broken[1].read_bytes(), 0xDB))  # only the decoder finds this one
    (tmp_path / "v" / "v_empty" / "img").mkdir(parents=True)
    records = [clip_record("v.mp4", ["v_partly", "v_broken", "v_empty", "v_absent"])]
    expected = [None, CORRUPT_FRAMES, NO_FRAMES, NO_FRAMES]
    exact = list(iter_results(records, _config(model_args, tmp_path, decode="exact"), scorer))
    fast = list(iter_results(records, _config(model_args, tmp_path, decode="fast"), scorer))
    device = _device_path_results(records, _config(model_args, tmp_path), scorer)
    assert [r.error for r in exact] == [r.error for r in fast] == [e for _, _, e in device] == expected
    assert abs(fast[0].score - exact[0].score) <= SCORE_DELTA and abs(device[0][1] - exact[0].score) <= SCORE_DELTA


def test_whole_video_scores_on_the_fast_path(tmp_path: Path, model_args: dict, scorer: Scorer) -> None:
    video = write_video(tmp_path / "clip.mp4", frames=12, seed=4, width=320, height=180)
    config = ScoringConfig(**model_args, video_clips_key="", num_workers=0, device="cpu", load_num=3)
    [exact] = list(iter_results([{"video": str(video)}], config.replace(decode="exact"), scorer))
    [fast] = list(iter_results([{"video": str(video)}], config.replace(decode="fast"), scorer))
    assert exact.error is None and fast.error is None
    assert fast.frame_scores == pytest.approx(exact.frame_scores, abs=SCORE_DELTA)


# ---------------------------------------------------------------------------------------------------
# What is checked is what is read: every path's reader checks the file it opened, not the name


def _relink(link: Path, target: Path) -> None:
    staged = link.with_name(link.name + ".swap")
    staged.symlink_to(target)
    os.replace(staged, link)


READERS = {"read_frame": read_frame, "fast": load_frame_fast, "device": frame_for_device}


def _read(reader: str, path: Path, real_root: str) -> object:
    if reader == "read_frame":
        return read_frame(path, real_root=real_root)
    return READERS[reader](path, PP, real_root)  # type: ignore[operator]


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("image", ["jpeg", "png", "huge"])
def test_a_link_swapped_outside_figure_root_after_listing_is_read_by_no_path(
    tmp_path: Path, reader: str, image: str
) -> None:
    """Frame link and clip folder link alike: listed while inside, swapped out, then read: refused."""
    root, outside = tmp_path / "frames", tmp_path / "outside"
    name = "frame_0.png" if image == "png" else "frame_0.jpg"
    for folder, seed in ((root / "v" / "c" / "real", 1), (outside, 2)):
        if image == "png":
            save_image(folder / name, picture(seed))
        else:
            folder.mkdir(parents=True)
            (folder / name).write_bytes(jpeg_bytes(seed))
            if image == "huge":  # over MAX_FRAME_BYTES: the exact path reopens it, checked again
                with (folder / name).open("r+b") as handle:
                    handle.truncate(MAX_FRAME_BYTES + 1)
    real_root = os.path.realpath(root)
    frame_link = root / "v" / "c" / "img" / name
    frame_link.parent.mkdir()
    frame_link.symlink_to(root / "v" / "c" / "real" / name)
    folder_link = root / "v" / "d" / "img"
    folder_link.parent.mkdir()
    folder_link.symlink_to(root / "v" / "c" / "real")
    for link, target in ((frame_link, outside / name), (folder_link, outside)):
        [listed] = list_frames(link if link.is_dir() else link.parent, root)
        _read(reader, listed, real_root)  # inside figure_root: read
        _relink(link, target)
        with pytest.raises(OutsideRootError, match="outside figure_root"):
            _read(reader, listed, real_root)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_fifo_swapped_in_for_a_listed_frame_never_blocks_a_reader(tmp_path: Path, reader: str) -> None:
    root = tmp_path / "frames"
    (root / "img").mkdir(parents=True)
    (root / "img" / "frame_0.jpg").write_bytes(jpeg_bytes())
    [listed] = list_frames(root / "img", root)
    listed.unlink()
    os.mkfifo(listed)
    _refused_without_blocking(lambda: _read(reader, listed, os.path.realpath(root)))


def test_a_frame_linked_inside_figure_root_reads_the_same_on_every_path(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    target = root / "v" / "a" / "img" / "frame_0.jpg"
    target.parent.mkdir(parents=True)
    target.write_bytes(jpeg_bytes(seed=5))
    link = root / "v" / "b" / "img" / "frame_0.jpg"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../a/img/frame_0.jpg")
    real_root = os.path.realpath(root)
    assert read_frame(link, real_root=real_root) == target.read_bytes()
    np.testing.assert_array_equal(load_frame(link, PP, real_root), load_frame(target, PP))
    np.testing.assert_array_equal(load_frame_fast(link, PP, real_root), load_frame_fast(target, PP))
    assert frame_for_device(link, PP, real_root) == frame_for_device(target, PP)
