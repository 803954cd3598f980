"""Scoring: batches decoded in DataLoader workers (batches.py), encoded and scored here, reduced per sample.

Workers each re-read the (re-iterable) record source and take every n-th batch, so the main
process never holds more than the batches in flight, whatever the size of the input; a worker
that dies hands its remaining batches to this process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from video_aesthetics.batches import ONE_RANK, FrameBatches, RankShare
from video_aesthetics.config import ScoringConfig
from video_aesthetics.decoding import decodes_on_device, jpeg_engine, resolve_decode
from video_aesthetics.device_decoder import DeviceDecoder, decoded_ahead
from video_aesthetics.errors import ConfigError, StoreAccessError
from video_aesthetics.frames import PreprocessConfig
from video_aesthetics.head import fold_head, head_scores, reduce_scores
from video_aesthetics.precision import prepare_tower, resolve_precision, tower_dtype
from video_aesthetics.processes import children_allowed, tie_to_parent
from video_aesthetics.records import NO_FRAMES, SampleResult

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """ "auto" takes CUDA when present; asking for CUDA where there is none is a configuration error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but torch sees no CUDA device; use device 'cpu' or 'auto'")
    return device


def check_device_options(config: ScoringConfig) -> None:
    """Refuse (ConfigError) a GPU-only decode or precision for a run that scores on the CPU, before any input is read.

    On CUDA the choice rests on the device's own probes, which run when the model loads (Scorer.load).
    """
    device = resolve_device(config.device)
    if device.type != "cuda":
        resolve_decode(config.decode, device)
        resolve_precision(config.precision, device)


# CPU images per forward pass. Each group runs on one intra-op thread (groups run side by side on
# the process's threads): MKL's SGEMM rounds differently with the number of threads it splits a
# matrix over, so only a fixed thread count per forward makes scores the same bits in every
# process, whatever its thread count, CPU affinity or load.
CPU_FORWARD_GROUP = 8


def forward_batch_for(config: ScoringConfig, device: torch.device) -> int:
    """Images per forward pass: a whole batch of clips on GPUs, which need large batches to be busy."""
    return config.batch_size * config.load_num if device.type == "cuda" else CPU_FORWARD_GROUP


class Scorer:
    """A CLIP image tower and an aesthetic head on one device: uint8 pixels in, one score per image out.

    ``model`` is an open_clip CLIP model (its ``visual`` tower is kept) or an image tower itself.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        head: torch.nn.Module,
        preprocess: PreprocessConfig,
        device: torch.device | str = "cpu",
        identity: dict[str, Any] | None = None,
        forward_batch: int = CPU_FORWARD_GROUP,
        precision: str = "auto",
    ) -> None:
        self.device = torch.device(device)
        # Checked against the device by Scorer.load; made directly (tests, benchmarks) any precision runs.
        self.precision = resolve_precision("auto", self.device) if precision == "auto" else precision
        self.dtype = tower_dtype(self.precision)
        self.forward_batch = forward_batch
        # The CPU threads this process may use, taken when the scorer is made (ranks set theirs first).
        self.cpu_threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        self._pool: ThreadPoolExecutor | None = None
        # open_clip's encode_image is its image tower; keeping only the tower frees the text
        # tower's memory (123M parameters for ViT-L/14) on the device.
        self.tower = prepare_tower(
            getattr(model, "visual", model).to(self.device, dtype=self.dtype).eval(), self.precision
        )
        # The head is applied on the CPU to the embeddings copied there, folded in float64
        # (head.head_scores), as rescore applies it: float32-stored embeddings rescore to the same bytes.
        # The module is kept (on the CPU, where it is used) for whoever inspects the scorer.
        self.head = head.to("cpu", dtype=torch.float32).eval()
        self.folded_head = fold_head(head)
        self.preprocess = preprocess
        self.identity = identity or {}
        shape = (1, 3, 1, 1)
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        mean, std = preprocess.mean or OPENAI_DATASET_MEAN, preprocess.std or OPENAI_DATASET_STD
        self.mean = torch.tensor(mean, device=self.device).view(shape) * 255.0
        self.std = torch.tensor(std, device=self.device).view(shape) * 255.0

    @classmethod
    def load(cls, config: ScoringConfig, device: torch.device | str | None = None) -> Scorer:
        """Load the CLIP model and head named by ``config``, checked against each other, once per run."""
        from video_aesthetics.clip_loader import load_clip
        from video_aesthetics.head import check_width, load_head

        # The head first: it is small, and a wrong path should not wait for a 900 MB tower to load.
        device = torch.device(device) if device is not None else resolve_device(config.device)
        # Before any weights load: decode "gpu" without a GPU is a configuration error, found at once.
        decode = resolve_decode(config.decode, device)
        precision = resolve_precision(config.precision, device)
        log.info("scoring on %s: the tower in %s, frames decoded on the %s path", device, precision, decode)
        head = load_head(config.mlp_checkpoint)
        clip = load_clip(config.clip_model)
        check_width(head.input_dim, clip.embed_dim, head.identity["path"])
        # How the scores were computed, beside which model: a run's summary and its embeddings' metadata say it.
        identity = {"clip": clip.identity, "head": head.identity, "precision": precision, "decode": decode}
        forward_batch = forward_batch_for(config, device)
        return cls(clip.model, head.module, clip.preprocess, device, identity, forward_batch, precision)

    @torch.inference_mode()
    def score_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scores (float32, on CPU) for uint8 images shaped (N, H, W, 3).

        The tower always sees ``forward_batch`` images, the last group padded with black ones:
        matrix kernels are chosen by shape, so a fixed shape makes each image's score independent
        of which other images share its batch. On the CPU every group also runs on exactly one
        intra-op thread (see CPU_FORWARD_GROUP). Sharded, multi-process and single runs then agree
        to the last bit.
        """
        return self.score_and_embed(pixels)[0]

    @torch.inference_mode()
    def score_and_embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores as ``score_pixels``, and the L2-normalised embeddings the head saw (float32, CPU, (N, D)).

        The embeddings come from the same forward pass: keeping them costs a copy to the host, not a second pass.
        """
        count = pixels.shape[0]
        groups = []
        for start in range(0, count, self.forward_batch):
            part = pixels[start : start + self.forward_batch]
            if part.shape[0] < self.forward_batch:
                padding = part.new_zeros((self.forward_batch - part.shape[0], *part.shape[1:]))
                part = torch.cat([part, padding])
            groups.append(part)
        if not groups:
            return torch.empty(0), torch.empty(0, 0)
        if self.device.type == "cpu":
            with torch_threads(1):
                outputs = list(self._cpu_pool().map(self._forward, groups))
        else:
            outputs = [self._forward(group) for group in groups]
        embeddings = torch.cat(outputs)[:count]
        return torch.from_numpy(head_scores(self.folded_head, embeddings.numpy())), embeddings

    def _cpu_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(1, self.cpu_threads), thread_name_prefix="scorer")
        return self._pool

    @torch.inference_mode()  # thread-local: the CPU pool's threads need their own
    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        # (x/255 - mean)/std folded into one step: the same arithmetic as ToTensor + Normalize.
        x = (x - self.mean) / self.std
        embeddings = self.tower(x.to(self.dtype)).float()
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        return embeddings.cpu()


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block, restored after; a Scorer made inside uses that many.

    CPU scores are the same bits whatever the count (see CPU_FORWARD_GROUP): only the speed changes.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Scored:
    """A run's sample results in input order (a lazy iterator or a gathered list) and the model that made them."""

    results: Iterable[SampleResult]
    identity: dict[str, Any]


def iter_results(
    source: Iterable[dict[str, Any]],
    config: ScoringConfig,
    scorer: Scorer,
    share: RankShare = ONE_RANK,
    *,
    embed: bool = False,
) -> Iterator[SampleResult]:
    """Results of this rank's share of the samples, in input order.

    With ``embed`` each scored result also carries its frames' names and embeddings (what the head saw).

    When a decoding worker dies, the batches not yet scored are decoded in this process instead:
    one lost worker must not end a run of millions of clips.
    """
    next_batch = 0
    workers = config.num_workers
    decode = resolve_decode(config.decode, scorer.device)
    while True:
        dataset = FrameBatches(
            source, config, scorer.preprocess, share, start_batch=next_batch, decode=decode, device=scorer.device
        )
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=scorer.device.type == "cuda",
            worker_init_fn=functools.partial(_worker_init, parent=os.getpid()) if workers else None,
        )
        batches: Iterable[dict[str, Any]] = _synchronous(loader)
        if decodes_on_device(decode):
            decoder = DeviceDecoder(scorer.preprocess, scorer.device, engine=jpeg_engine(decode))
            batches = decoded_ahead(batches, decoder)
        try:
            for batch in batches:
                if embed:
                    scores, embedded = scorer.score_and_embed(batch["pixels"])
                    results = list(_sample_results(batch, scores, config.reduction, embedded))
                else:
                    results = list(_sample_results(batch, scorer.score_pixels(batch["pixels"]), config.reduction))
                next_batch = batch["batch"] + 1
                yield from results
            return
        except WorkerFailure as failure:
            log.warning("a decoding worker failed (%r); decoding the rest in the main process", failure.__cause__)
            workers = 0


def _worker_init(_worker_id: int, parent: int) -> None:
    # A worker outliving its scorer (killed task, killed supervisor) would decode for nobody.
    tie_to_parent(parent)


class WorkerFailure(Exception):
    """A decoding worker process died or its transfer broke; samples' own errors never get here."""


def _synchronous(loader: DataLoader) -> Iterator[dict[str, Any]]:
    """Iterate ``loader`` so that a dead worker raises WorkerFailure from next(), not wherever the main thread is.

    DataLoader installs a SIGCHLD handler that raises asynchronously (inside a forward pass or the
    output writer); its own liveness polling raises inside next() within seconds, which we can handle.
    load_sample catches every error of a sample, so with workers anything next() raises is the
    workers' machinery failing (a killed process, a broken shared-memory hand-over).
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGCHLD) if in_main_thread else None
    with children_allowed():  # the workers start here, also inside a Celery worker's daemonic task process
        iterator = iter(loader)
    if in_main_thread and previous is not None:
        signal.signal(signal.SIGCHLD, previous)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except StoreAccessError as err:
            # Raised by a worker's read, not its machinery: the main process would meet the same store.
            raise StoreAccessError(_worker_message(err)) from err
        except Exception as err:
            if loader.num_workers == 0:
                raise
            raise WorkerFailure() from err
        yield batch


def _worker_message(err: StoreAccessError) -> str:
    """The worker's own message of an error DataLoader re-raised with the worker's traceback around it."""
    text = str(err)
    marker = f"{StoreAccessError.__name__}: "
    return text.rsplit(marker, 1)[1].strip() if marker in text else text


def _sample_results(
    batch: dict[str, Any], scores: torch.Tensor, reduction: str, embeddings: torch.Tensor | None = None
) -> Iterator[SampleResult]:
    offset = 0
    names = batch.get("names") or [None] * len(batch["seqs"])
    counts = [count for count in batch["counts"] if count]
    # rescore's reduction too: the same clip score from the same frame scores.
    frame_values = scores.numpy()[: sum(counts)]
    reduced = iter(reduce_scores(frame_values, np.asarray(counts, dtype=np.int64), reduction).tolist())
    for seq, count, error, frame_names in zip(batch["seqs"], batch["counts"], batch["errors"], names, strict=False):
        if not count:
            yield SampleResult(seq, None, error or NO_FRAMES)
            continue
        result = SampleResult(seq, next(reduced), None, frame_values[offset : offset + count].tolist())
        if embeddings is not None:
            result.embeddings = embeddings[offset : offset + count].numpy()
            result.frames = list(frame_names) if frame_names is not None else [str(i) for i in range(count)]
        offset += count
        yield result
