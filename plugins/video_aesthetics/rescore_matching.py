"""Rescore's reading and checking: stored embeddings scored by a folded head and matched with the records.

The embeddings' rows are read in input order (checked), each batch scored as it is read, and
grouped by clip with each clip's reduced score; ``rescore_records`` hands the groups out to the
records, a chunk at a time, and raises InputError at the first record whose clips do not match
the embeddings' keys (line, clip index, video, clip id). Writing the result is rescore.py's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from video_aesthetics.config import ScoringConfig
from video_aesthetics.embeddings_dataset import EmbeddingsDataset
from video_aesthetics.errors import InputError
from video_aesthetics.records import (
    ERROR,
    SCORE,
    UNSCORED,
    RecordCounts,
    classify,
    clip_id,
    clip_list,
    clip_plan,
    is_finite_number,
    samples_of,
    video_path,
)

if TYPE_CHECKING:
    from video_aesthetics.head import FoldedHead
    from video_aesthetics.writeback import Outcome


# Records read per step: their embeddings are scored together (a few MB of them at ViT-L/14 sizes).
CHUNK_RECORDS = 256
_CLIP_SHIFT = 1 << 32


@dataclass(frozen=True)
class AffineHead:
    """The head folded into ``score = embedding . weight + bias`` (head.fold_head, float64), and its identity."""

    folded: FoldedHead
    identity: dict[str, Any]

    @property
    def weight(self) -> np.ndarray:
        return self.folded.weight

    @property
    def bias(self) -> float:
        return self.folded.bias

    @property
    def dim(self) -> int:
        return self.folded.dim


def load_affine_head(mlp_checkpoint: str | None, embed_dim: int) -> AffineHead:
    """The head in ``mlp_checkpoint`` (None: LAION's official one), folded for ``embed_dim``-wide embeddings."""
    from video_aesthetics.head import fold_head, load_head

    loaded = load_head(mlp_checkpoint, embed_dim=embed_dim)
    return AffineHead(fold_head(loaded.module), loaded.identity)


def frame_scores(head: AffineHead, vectors: np.ndarray) -> np.ndarray:
    """Each row's score, float32, computed as the scoring run computes it (head.head_scores): the same bytes
    for the same (float32-stored) embedding."""
    from video_aesthetics.head import head_scores

    return head_scores(head.folded, vectors)


@dataclass
class _Rows:
    """Embedding rows of a chunk of records: keys, their groups (one per clip) and the clips' scores."""

    lines: np.ndarray
    clips: np.ndarray
    keys: Any  # pyarrow table: video, clip_id, frame
    scores: np.ndarray  # each row's frame score (float32)


class _RowStream:
    """The dataset's rows, handed out through a given line, in order; checks that rows come in input order.

    Each batch read is scored at once, in place: its rows are handed out as frame scores, so chunks
    never copy the embeddings themselves (a chunk spanning two batches would).
    """

    def __init__(self, dataset: EmbeddingsDataset, head: AffineHead) -> None:
        self.dataset = dataset
        self.head = head
        self.batches = dataset.batches()
        self.pending: list[tuple[np.ndarray, np.ndarray, Any, np.ndarray]] = []
        self.last_key = -1
        self.done = False

    def _pull(self) -> bool:
        try:
            line, clip, keys, vectors = next(self.batches)
        except StopIteration:
            self.done = True
            return False
        key = line * _CLIP_SHIFT + (clip + 1)
        if len(key) and (key[0] < self.last_key or np.any(key[1:] < key[:-1])):
            raise InputError(
                f"embeddings {self.dataset.location}: rows are not in input order (line {int(line[0])}); "
                "the file is damaged or was not written by video-aesthetics score"
            )
        if len(key):
            self.last_key = int(key[-1])
            self.pending.append((line, clip, keys, frame_scores(self.head, vectors)))
        return True

    def through(self, last_line: int) -> _Rows:
        """Every remaining row whose line is at most ``last_line``."""
        import pyarrow as pa

        while not self.done and (not self.pending or self.pending[-1][0][-1] <= last_line):
            self._pull()
        taken: list[tuple[np.ndarray, np.ndarray, Any, np.ndarray]] = []
        rest: list[tuple[np.ndarray, np.ndarray, Any, np.ndarray]] = []
        for line, clip, keys, scores in self.pending:
            cut = int(np.searchsorted(line, last_line, side="right"))
            if cut:
                taken.append((line[:cut], clip[:cut], keys.slice(0, cut), scores[:cut]))
            if cut < len(line):
                rest.append((line[cut:], clip[cut:], keys.slice(cut), scores[cut:]))
        self.pending = rest
        if not taken:
            return _Rows(np.zeros(0, np.int64), np.zeros(0, np.int64), None, np.zeros(0, np.float32))
        return _Rows(
            np.concatenate([t[0] for t in taken]),
            np.concatenate([t[1] for t in taken]),
            pa.Table.from_batches([t[2] for t in taken]),
            np.concatenate([t[3] for t in taken]),
        )

    def leftover_line(self) -> int | None:
        """The first line of a row not yet handed out (rows beyond the input's records), or None."""
        while not self.pending and not self.done:
            self._pull()
        return int(self.pending[0][0][0]) if self.pending else None


def rescore_records(
    records: Iterator[tuple[int, dict[str, Any]]],
    dataset: EmbeddingsDataset,
    head: AffineHead,
    config: ScoringConfig,
    counts: RecordCounts,
    label: str,
) -> Iterator[dict[str, Any]]:
    """The rescored records, in order; InputError at the first record that does not match the embeddings."""
    from video_aesthetics.writeback import with_outcomes

    stream = _RowStream(dataset, head)
    while chunk := list(itertools.islice(records, CHUNK_RECORDS)):
        last_line = chunk[-1][0] + 1
        groups = _Groups(stream.through(last_line), config)
        for record_no, record in chunk:
            outline = _outline(record, config)
            counts.records += 1
            if not outline:
                counts.passthrough += 1
                yield record
                continue
            try:
                outcomes = groups.match(record_no + 1, outline, _RecordKeys(record, config))
            except _Mismatch as mismatch:
                raise _mismatch(label, record_no, dataset, str(mismatch)) from None
            _count(counts, outcomes, groups.scored_count)
            yield with_outcomes(record, outcomes, config, owned=True)
        leftover = groups.unmatched()
        if leftover is not None:
            line, clip = leftover
            raise _mismatch(label, line - 1, dataset, f"it has no clip {clip}, but the embeddings hold one")
    extra = stream.leftover_line()
    if extra is not None or counts.records != dataset.records:
        raise InputError(
            f"{label} holds {counts.records} records but the embeddings {dataset.location} were written for "
            f"{dataset.records}: rescore the scored file those embeddings were written with; nothing was written"
        )


def _count(counts: RecordCounts, outcomes: list[Outcome], scored: int) -> None:
    """RecordCounts.count_result of each outcome, without a SampleResult; ``scored`` of them have no error."""
    counts.clips += len(outcomes)
    if scored == len(outcomes):  # the common case, without a look at each
        counts.scored += scored
        return
    for _, error, _ in outcomes:
        if error is None:
            counts.scored += 1
        else:
            counts.failed += 1
            counts.errors[error] = counts.errors.get(error, 0) + 1


def _outline(record: dict[str, Any], config: ScoringConfig) -> list[tuple[str | None, str | None]]:
    """(clip id, error known before decoding) of each sample of ``record``, in order, as scoring enumerates
    them (records.clip_plan, samples_of); the id is None where the record names no video, or whole-video."""
    if config.whole_video:
        return [(None, sample.error) for sample in samples_of(record, 0, config, 0, paths=False)]
    plan = clip_plan(record, config)
    return [] if plan is None else plan[1]


# Past every row's key: the cursor of _Groups.match stops here without a bounds check.
_END_KEY = 1 << 62


class _Groups:
    """One chunk's embedding rows grouped by clip (one group per line and clip, in input order), with each
    clip's reduced score; ``match`` hands them out to the chunk's records, in order, through a cursor."""

    def __init__(self, rows: _Rows, config: ScoringConfig) -> None:
        self.frame_scores = config.frame_scores
        self.cursor = 0
        self.skipped: int | None = None  # the first group no clip of the input took
        self.scored_count = 0  # of the samples the last match handed out, how many have a score
        self.keys: list[int] = [_END_KEY]
        self.videos: list[str | None] = []
        self.ids: list[str | None] = []
        self.scores: list[float] = []
        self.frames: list[list[float]] = []
        self.lines, self.clips = rows.lines, rows.clips
        if not len(rows.lines):
            return
        from video_aesthetics.head import reduce_scores

        key = rows.lines * _CLIP_SHIFT + (rows.clips + 1)
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        sizes = np.diff(np.r_[starts, len(key)])
        # The scoring run's own reduction: the same bytes from the same frame scores.
        self.scores = reduce_scores(rows.scores, sizes, config.reduction).tolist()
        self.keys = key[starts].tolist()
        self.keys.append(_END_KEY)
        self.lines, self.clips = rows.lines[starts], rows.clips[starts]
        self.videos = _strings_at(rows.keys.column("video"), starts)
        self.ids = _strings_at(rows.keys.column("clip_id"), starts)
        if self.frame_scores:
            frames = rows.scores.tolist()
            ends = (starts + sizes).tolist()
            self.frames = [frames[start:end] for start, end in zip(starts.tolist(), ends, strict=True)]

    def match(self, line: int, outline: list[tuple[str | None, str | None]], keys: _RecordKeys) -> list[Outcome]:
        """The outcome of each sample of the record at ``line``; _Mismatch where it contradicts its embeddings.
        ``scored_count`` is then how many have a score."""
        outcomes: list[Outcome] = []
        scored_clips = 0
        base = line * _CLIP_SHIFT  # a row's key: line * _CLIP_SHIFT + clip + 1, clip -1 for a whole video
        found, videos, ids, scores = self.keys, self.videos, self.ids, self.scores
        frames = self.frames if self.frame_scores else None
        whole, scored, isfinite = keys.whole_video, keys.scored or (), math.isfinite
        at = self.cursor
        for index, (cid, error) in enumerate(outline):
            clip = None if whole else index
            want = base if clip is None else base + index + 1
            while found[at] < want:  # groups of no clip of the input: refused once the chunk is done
                if self.skipped is None:
                    self.skipped = at
                at += 1
            if found[at] != want:
                outcomes.append(_without_embeddings(keys, clip, error))
                continue
            # Where the input holds the sample's earlier result (_RecordKeys.target), inline: it runs per clip.
            target = keys.record if whole else scored[index] if index < len(scored) else None
            if isinstance(target, dict) and (prior := target.get(ERROR)) and isinstance(prior, str):
                raise _Mismatch(f"{_what(clip)} failed ({prior}) but has embeddings")
            if videos[at] != keys.video or ids[at] != (cid if cid is not None else keys.clip_id(clip)):
                raise _Mismatch(_wrong_clip(keys, clip, cid, videos[at], ids[at]))
            score = scores[at]
            frame_list = frames[at] if frames is not None else None
            if isfinite(score):
                outcomes.append((score, None, frame_list))
                scored_clips += 1
            else:
                outcomes.append((*classify(score, None), frame_list))
            at += 1
        self.cursor = at
        self.scored_count = scored_clips
        return outcomes

    def unmatched(self) -> tuple[int, int] | None:
        """(line, clip) of the first group no record took, or None."""
        at = self.skipped if self.skipped is not None else self.cursor
        if self.keys[at] == _END_KEY:
            return None
        return int(self.lines[at]), int(self.clips[at])


def _strings_at(column: Any, rows: np.ndarray) -> list[str | None]:
    """``column[rows]`` (a string column of a table; ``rows`` ascending) as Python strings.

    Gathered from the column's buffers where it has no null: pyarrow's ``take`` imports pyarrow.compute,
    0.05 s of every run; and converting numpy indices imports pandas (0.3 s), so they go in as a buffer.
    """
    import pyarrow as pa

    chunks = column.chunks
    if any(chunk.null_count or str(chunk.type) != "string" for chunk in chunks):
        indices = pa.Array.from_buffers(pa.int64(), len(rows), [None, pa.py_buffer(rows.astype(np.int64))])
        return column.take(indices).to_pylist()
    values: list[str | None] = []
    first = 0
    for chunk in chunks:
        end = first + len(chunk)
        low, high = np.searchsorted(rows, [first, end])
        picked = rows[low:high] - first
        offsets = np.frombuffer(chunk.buffers()[1], np.int32, count=chunk.offset + len(chunk) + 1)[chunk.offset :]
        begins, lengths = offsets[picked].astype(np.int64), (offsets[picked + 1] - offsets[picked]).astype(np.int64)
        packed = np.zeros(len(picked) + 1, np.int32)
        np.cumsum(lengths, out=packed[1:])
        data = chunk.buffers()[2]
        if packed[-1] and data is not None:
            gather = np.repeat(begins - packed[:-1], lengths) + np.arange(int(packed[-1]))
            text = pa.py_buffer(np.frombuffer(data, np.uint8)[gather])
        else:
            text = pa.py_buffer(b"")
        values.extend(pa.StringArray.from_buffers(len(picked), pa.py_buffer(packed), text).to_pylist())
        first = end
    return values


def _without_embeddings(keys: _RecordKeys, clip: int | None, error: str | None) -> Outcome:
    prior_score, prior_error = keys.prior(clip)
    if prior_score:
        raise _Mismatch(f"{_what(clip)} has a score but no embeddings")
    # No embeddings: the clip keeps the reason it had none (or, from an unscored input, "unscored").
    return None, prior_error or error or UNSCORED, None


def _wrong_clip(keys: _RecordKeys, clip: int | None, cid: str | None, video: str | None, found_id: str | None) -> str:
    expected_id = cid if cid is not None else keys.clip_id(clip)
    return (
        f"{_what(clip)} is video {keys.video!r} clip {expected_id!r}, "
        f"the embeddings hold video {video!r} clip {found_id!r}"
    )


def _what(clip: int | None) -> str:
    return "its video" if clip is None else f"its clip {clip}"


class _RecordKeys:
    """What one record says of its clips, looked up once per record: the video, clip ids, earlier results."""

    def __init__(self, record: dict[str, Any], config: ScoringConfig) -> None:
        self.video = video_path(record, config.input_video_key)
        self.whole_video = config.whole_video
        self.record = record
        if config.whole_video:
            self.clips: list[Any] = []
            self.scored: list[Any] | None = None
        else:
            clips_key = config.video_clips_key or ""
            clips = clip_list(record, clips_key)
            self.clips = clips or []
            self.scored = clips if config.output_key == clips_key else clip_list(record, config.output_key)

    def clip_id(self, index: int | None) -> str | None:
        """The id of a clip of a record that names no video (clip_plan gives every other clip's id)."""
        return None if index is None else clip_id(self.clips[index], "", index)

    def target(self, index: int | None) -> Any:
        """Where the input holds a sample's earlier result: the record (whole video), its clip, or None."""
        if index is None:
            return self.record
        scored = self.scored
        return scored[index] if scored is not None and index < len(scored) else None

    def prior(self, index: int | None) -> tuple[bool, str | None]:
        """Whether the input already holds a score for a sample, and the error it holds (else None)."""
        target = self.target(index)
        if not isinstance(target, dict):
            return False, None
        score, error = target.get(SCORE), target.get(ERROR)
        return is_finite_number(score), (error if error and isinstance(error, str) else None)


class _Mismatch(Exception):
    """A sample that contradicts its embeddings; rescore_records names the record and the file."""


def _mismatch(label: str, record_no: int, dataset: EmbeddingsDataset, problem: str) -> InputError:
    return InputError(
        f"{label}: record {record_no + 1} does not match the embeddings {dataset.location}: {problem}; "
        "rescore the scored file these embeddings were written with (same records, same order, same field "
        "names); nothing was written"
    )
