"""Samples into batches of pixels, in DataLoader workers: each worker re-reads the records and decodes its own batches.

A sample that cannot be decoded gets its reason (no_frames, corrupt_frames, unreadable_video,
decode_error) and never stops the batch; only a store that refuses access is raised, so the run
fails and is retried instead of marking clips. Scoring the batches is scoring.py's.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from video_aesthetics import nvdec, video
from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import decodes_on_device, frame_loader, image_pixels, pack_for_device
from video_aesthetics.errors import StoreAccessError
from video_aesthetics.frame_store import RemoteFrames, remote_frames
from video_aesthetics.frames import OutsideRootError, PreprocessConfig, list_frames, select_evenly, select_frames
from video_aesthetics.records import CORRUPT_FRAMES, NO_FRAMES, UNREADABLE_VIDEO, UNSAFE_PATH, Sample, iter_samples
from video_aesthetics.stopping import check_stop

log = logging.getLogger(__name__)

DECODE_ERROR = "decode_error"


@dataclass(frozen=True)
class RankShare:
    """This process's share of the batches when several processes (ranks) score one input."""

    rank: int = 0
    world: int = 1


# One process scoring the whole input: the default share.
ONE_RANK = RankShare()


class FrameBatches(IterableDataset):
    """Batches of ``batch_size`` samples as uint8 pixels; each worker decodes only its own batches.

    ``decode`` is a resolved decode path (decoding.resolve_decode): on "gpu" and "hardware" a batch carries its
    JPEGs' bytes (decoding.pack_for_device) for the scoring process to decode on the device. In
    whole-video mode on a device path, where NVDEC can decode on ``device`` (nvdec.videos_on_device,
    decided here, in the scoring process), a batch carries each video's path and frame indices instead.
    """

    def __init__(
        self,
        source: Iterable[dict[str, Any]],
        config: ScoringConfig,
        preprocess: PreprocessConfig,
        share: RankShare = RankShare(),
        start_batch: int = 0,
        decode: str = "exact",
        device: torch.device | str | None = None,
    ) -> None:
        self.source = source
        self.config = config
        self.preprocess = preprocess
        self.share = share
        self.start_batch = start_batch
        self.decode = decode
        # CUDA cannot be used in the (forked) workers: whether NVDEC decodes the videos is asked here.
        self.videos_on_device = config.whole_video and decodes_on_device(decode) and nvdec.videos_on_device(device)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        batches = _batched(iter_samples(self.source, self.config), self.config.batch_size)
        for number, samples in enumerate(batches):
            if number < self.start_batch or number % self.share.world != self.share.rank:
                continue
            # Within a rank, batches go round-robin to workers: the order DataLoader collects them in.
            if (number // self.share.world) % workers != worker:
                continue
            yield load_batch(number, samples, self.config, self.preprocess, self.decode, self.videos_on_device)


def _batched(items: Iterable[Sample], size: int) -> Iterator[tuple[Sample, ...]]:
    iterator = iter(items)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


def load_batch(
    number: int,
    samples: tuple[Sample, ...],
    config: ScoringConfig,
    pp: PreprocessConfig,
    decode: str = "exact",
    videos_on_device: bool = False,
) -> dict[str, Any]:
    """A batch's pixels (or, on the device paths, what the scoring process decodes) and each sample's count and reason.

    With ``videos_on_device`` (whole-video mode, NVDEC in the scoring process) no video is decoded
    here: ``videos`` holds each sample's nvdec.VideoRequest (as ``to_batch()``), or None for a sample
    that has no frames, and the packed frames are empty.
    """
    if videos_on_device and config.whole_video:
        return _video_request_batch(number, samples, config, pp)
    frames: list[Any] = []
    counts, errors, names = [], [], []
    for sample in samples:
        loaded, loaded_names, error = load_sample(sample, config, pp, decode)
        frames.extend(loaded)
        counts.append(len(loaded))
        errors.append(error)
        names.append(loaded_names)
    batch = {"batch": number, "seqs": [s.seq for s in samples], "counts": counts, "errors": errors, "names": names}
    if decodes_on_device(decode):
        return {**batch, **pack_for_device(frames, pp)}
    stacked = np.stack(frames) if frames else np.zeros((0, pp.size, pp.size, 3), dtype=np.uint8)
    return {**batch, "pixels": torch.from_numpy(stacked)}


def _video_request_batch(
    number: int, samples: tuple[Sample, ...], config: ScoringConfig, pp: PreprocessConfig
) -> dict[str, Any]:
    requests, counts, errors, names = [], [], [], []
    for sample in samples:
        request, error = video_request(sample, config.load_num)
        requests.append(None if request is None else request.to_batch())
        counts.append(0 if request is None else len(request.indices))
        errors.append(error)
        names.append([] if request is None else [f"#{index}" for index in request.indices])
    batch = {"batch": number, "seqs": [s.seq for s in samples], "counts": counts, "errors": errors, "names": names}
    return {**batch, **pack_for_device([], pp), "videos": requests}


def video_request(sample: Sample, load_num: int) -> tuple[nvdec.VideoRequest | None, str | None]:
    """A whole video's hand-over to the scoring process (its path and frame indices), or the reason it has none.

    The indices are those the PyAV path decodes (video.probe's frame count, evenly spread). Never raises.
    """
    if sample.error is not None or sample.path is None:
        return None, sample.error
    try:
        request = nvdec.video_request(sample.path, load_num)
    except Exception as err:  # noqa: BLE001 - PyAV raises its own error tree for broken files
        log.warning("cannot read video %s: %s", sample.path, err)
        return None, UNREADABLE_VIDEO
    return (request, None) if request is not None else (None, UNREADABLE_VIDEO)


def load_sample(
    sample: Sample, config: ScoringConfig, pp: PreprocessConfig, decode: str = "exact"
) -> tuple[list[Any], list[str], str | None]:
    """A sample's selected frames as pixels (on "gpu", JPEGs as bytes) and their names, or the reason it has none.

    A frame's name is its file name, or in whole-video mode ``#`` and its index in the video. Never raises.
    """
    if sample.error is not None or sample.path is None:
        return [], [], sample.error
    try:
        if config.whole_video:
            return _video_pixels(sample.path, config.load_num, pp, decode)
        return _folder_pixels(sample.path, config.load_num, pp, decode, remote_frames(config), config.frames_root)
    except StoreAccessError:
        raise  # the store failed, not the sample: the run fails (and is retried), no clip is marked
    except Exception:
        log.exception("could not load sample %s", sample.path)
        return [], [], DECODE_ERROR


def _folder_pixels(
    folder: Path,
    load_num: int,
    pp: PreprocessConfig,
    decode: str,
    store: RemoteFrames | None = None,
    root: Path | None = None,
) -> tuple[list[Any], list[str], str | None]:
    """A clip folder's selected frames, read by extraction.has_frames's rule: everything inside ``root`` (figure_root).

    Locally the folder is listed, and each frame read, through descriptors checked inside
    ``root`` (frames.list_frames, frames.open_inside): a link swapped after records.stays_inside
    checked the folder cannot lead a read outside. A folder found outside then is unsafe_path,
    as is a clip whose every selected frame was.
    """
    real_root = None if store is not None or root is None else os.path.realpath(root)
    try:
        frames: list[Any] = list_frames(folder, root) if store is None else store.list(folder)
    except OutsideRootError as err:
        log.warning("not reading %s: %s", folder, err)
        return [], [], UNSAFE_PATH
    if not frames:
        return [], [], NO_FRAMES
    load = frame_loader(decode)
    pixels, names, outside = [], [], False
    selected = select_frames(frames, load_num)
    # Remote frames are fetched side by side; one that cannot be fetched fails below like a damaged file.
    fetched = selected if store is None else store.fetch(selected)
    for chosen, path in zip(selected, fetched, strict=True):
        try:
            pixels.append(load(path, pp, real_root))
        except OutsideRootError as err:
            log.warning("skipping frame %s: %s", path, err)
            outside = True
            continue
        except Exception as err:  # noqa: BLE001 - PIL raises many types for damaged files
            log.warning("skipping unreadable frame %s: %s", path, err)
            continue
        names.append(os.path.basename(str(chosen).rstrip("/")))
    if pixels:
        return pixels, names, None
    return pixels, names, UNSAFE_PATH if outside else CORRUPT_FRAMES


def _video_pixels(
    path: Path, load_num: int, pp: PreprocessConfig, decode: str
) -> tuple[list[np.ndarray], list[str], str | None]:
    try:
        # Probed and read through one checked opening: a file swapped in between cannot be read.
        with video.pinned(path) as source:
            count = video.probe(source).frames
            indices = select_evenly(count, load_num) if count else []
            images = video.read_frames(source, indices) if count else []
    except Exception as err:  # noqa: BLE001 - PyAV raises its own error tree for broken files
        check_stop()  # PyAV turns a SIGTERM raised inside FFmpeg into one of its errors
        log.warning("cannot read video %s: %s", path, err)
        return [], [], UNREADABLE_VIDEO
    if not images:
        return [], [], UNREADABLE_VIDEO
    # Video frames are decoded here by PyAV on every path; only the resize differs.
    resize = "exact" if decode == "exact" else "fast"
    # A video's frames have no file names: "#<index in the video>" names each one.
    names = [f"#{index}" for index in indices] if len(indices) == len(images) else [f"#{i}" for i in range(len(images))]
    return [image_pixels(image, pp, resize) for image in images], names, None
