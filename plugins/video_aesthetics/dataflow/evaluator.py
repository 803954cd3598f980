"""VideoAestheticEvaluator: the seed's (DataFlow-MM) operator API over the library's scoring pipeline.

It reads a DataFrame from any DataFlow-style storage (``read("dataframe")`` / ``write(df)``), scores
it with ``pipeline.run_scoring`` and writes a copy back in which only the scored column changed: the
``output_key`` column in clip mode, the ``aesthetic_score`` (and, where needed, ``aesthetic_error``)
column in whole-video mode. Every other column is the input's own, values and dtypes alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from video_aesthetics.capacity import check_nproc
from video_aesthetics.config import PARAM_NAMES, ScoringConfig
from video_aesthetics.dataflow.storage import is_absent, json_value
from video_aesthetics.errors import ConfigError
from video_aesthetics.outputs import check_outputs
from video_aesthetics.parameters import DEFAULTS, rst_docs
from video_aesthetics.records import ERROR, FILTERED, FRAME_SCORES, SCORE, samples_of

log = logging.getLogger(__name__)

_ABSENT = float("nan")  # pandas' mark for "this row has no such key"


class VideoAestheticEvaluator:
    """Scores video clips (or whole videos) with a CLIP image encoder and LAION's aesthetic head.

    The positional parameters and their defaults are the seed's. ``figure_root`` holds the
    extracted frames as ``<figure_root>/<video stem>/<clip id>/img/*.jpg``; as in DataFlow-MM, a
    relative ``figure_root`` given here is resolved against ``storage.cache_path`` at run time
    (``os.path.join``: an absolute one is used as it is), while one given to ``run()`` is used as it
    is. ``video_clips_key`` None or "" scores each row's whole video, ``load_num`` frames evenly
    spaced over it, into a top-level ``aesthetic_score``.

    Keyword-only extras: ``device`` ("auto", "cpu", "cuda", "cuda:N"), ``decode`` (how frames become
    pixels: "auto", "exact", "fast", "gpu", "hardware"; see ``video_aesthetics.decoding``), ``precision`` of the image
    tower ("auto", "fp32", "bf16", "fp8"; see ``video_aesthetics.precision``), ``reduction`` of frame scores
    ("mean", "min", "max"), ``frame_scores`` (also write ``aesthetic_frame_scores``) and ``nproc``.
    ``aes_min``/``aes_max`` apply DataFlow-MM's VideoAestheticFilter as the scores are written: each
    clip (whole-video: each row) gets ``filtered`` true when aes_min <= score <= aes_max, false
    when outside or unscored, and one already ``filtered: false`` stays false; nothing is removed.

    ``init_distributed=True`` (or WORLD_SIZE > 1 under torchrun, or nproc > 1) scores with several
    processes: under torchrun every rank runs the pipeline and rank 0 alone writes; otherwise
    ``nproc`` ranks are spawned (one per visible GPU by default; on CPU ``nproc`` is required), and
    this process writes once all of them have delivered. See ``video_aesthetics.ranks``.

    The model is loaded on the first ``run()`` and kept for later runs with the same clip_model,
    mlp_checkpoint and device.
    """

    def __init__(
        self,
        # The seed's ten, in its order; every default from its one declaration (video_aesthetics.parameters).
        figure_root: str = DEFAULTS.figure_root,
        input_video_key: str = DEFAULTS.input_video_key,
        video_clips_key: str | None = DEFAULTS.video_clips_key,
        clip_model: str = DEFAULTS.clip_model,
        mlp_checkpoint: str | None = DEFAULTS.mlp_checkpoint,
        load_num: int = DEFAULTS.load_num,
        batch_size: int = DEFAULTS.batch_size,
        num_workers: int = DEFAULTS.num_workers,
        init_distributed: bool = DEFAULTS.init_distributed,
        output_key: str = DEFAULTS.output_key,
        *,
        device: str = DEFAULTS.device,
        decode: str = DEFAULTS.decode,
        precision: str = DEFAULTS.precision,
        reduction: str = DEFAULTS.reduction,
        frame_scores: bool = DEFAULTS.frame_scores,
        nproc: int | None = DEFAULTS.nproc,
        aes_min: float | None = DEFAULTS.aes_min,
        aes_max: float | None = DEFAULTS.aes_max,
        video_root: str | None = DEFAULTS.video_root,
        embeddings: str | None = None,
        embeddings_dtype: str = DEFAULTS.embeddings_dtype,
    ) -> None:
        # The seed's parameters and our extras, by name: the one mapping onto the config.
        self.config = ScoringConfig.from_params(
            {name: value for name, value in locals().items() if name in PARAM_NAMES}
        )
        check_nproc(nproc, self.config.device)
        self.init_distributed = init_distributed
        self.nproc = nproc
        # A Parquet file for every scored frame's CLIP embedding (video_aesthetics.embeddings), when set.
        self.embeddings = embeddings
        self.embeddings_dtype = embeddings_dtype
        self.last_stats: Any = None
        self._scorer: Any = None
        self._scorer_key: tuple[str, str | None, str, str] | None = None

    @property
    def scorer(self) -> Any:
        """The model kept from the last in-process run (a ``scoring.Scorer``), or None before one."""
        return self._scorer

    @staticmethod
    def get_desc(lang: str = "zh") -> str:
        if lang == "zh":
            return "用 CLIP 图像编码器和 LAION 美学回归头为每个视频片段打美学分，并写回 video_clips"
        return (
            "Scores every video clip's aesthetics with a CLIP image encoder and LAION's aesthetic head, "
            "into video_clips."
        )

    def run(
        self,
        storage: Any,
        figure_root: str | None = None,
        input_video_key: str | None = None,
        video_clips_key: str | None = None,
        clip_model: str | None = None,
        mlp_checkpoint: str | None = None,
        load_num: int | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        init_distributed: bool | None = None,
        output_key: str | None = None,
        *,
        device: str | None = None,
        decode: str | None = None,
        precision: str | None = None,
        reduction: str | None = None,
        frame_scores: bool | None = None,
        nproc: int | None = None,
        aes_min: float | None = None,
        aes_max: float | None = None,
        video_root: str | None = None,
        embeddings: str | None = None,
        embeddings_dtype: str | None = None,
    ) -> list[str]:
        """Score ``storage.read("dataframe")`` and ``storage.write()`` the result.

        Every parameter overrides the constructor's value for this call only; None keeps it.
        Returns the names of the columns written, as DataFlow operators do: ``[output_key]`` in clip
        mode, ``["aesthetic_score"]`` in whole-video mode (plus ``"filtered"`` with a threshold);
        ranks that do not write return [].
        """
        if figure_root is None:
            figure_root = resolve_figure_root(self.config.figure_root, storage)
        config = self.config.replace(**{name: value for name, value in locals().items() if name in PARAM_NAMES})
        distributed = self.init_distributed if init_distributed is None else init_distributed
        nproc = self.nproc if nproc is None else nproc
        check_nproc(nproc, config.device)

        check_storage_output(storage)
        frame = storage.read("dataframe")
        if not isinstance(frame, pd.DataFrame):
            raise ConfigError(f"storage.read('dataframe') returned {type(frame).__name__}, not a pandas DataFrame")
        records = scoring_records(frame, config)
        log.info("scoring %d rows from %s", len(frame), type(storage).__name__)

        from video_aesthetics.runner import score_records

        scored: list[dict[str, Any]] = []
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(
                embeddings_writer(embeddings or self.embeddings, embeddings_dtype or self.embeddings_dtype, config)
            )
            stats = score_records(
                records,
                config,
                scored.extend,
                nproc=nproc,
                distributed=distributed,
                load_scorer=lambda device: self._load_scorer(config, device),
                embeddings=writer,
            )
            if stats is None:
                return []
            storage.write(scored_frame(frame, records, scored, config))
            if writer is not None:
                # After the storage's write: the embeddings' lines are its rows, and a failed write publishes neither.
                writer.commit(len(scored))
        self.last_stats = stats
        log.info("aesthetic scoring done: %s", stats.to_json())
        if config.whole_video:
            return [SCORE, FILTERED] if config.filtering else [SCORE]
        return [config.output_key]

    def _load_scorer(self, config: ScoringConfig, device: Any) -> Any:
        from video_aesthetics.scoring import Scorer, resolve_device

        device = device if device is not None else resolve_device(config.device)
        key = (config.clip_model, config.mlp_checkpoint, str(device), config.precision)
        if self._scorer is None or self._scorer_key != key:
            self._scorer = None  # release the old model before loading the next
            self._scorer = Scorer.load(config, device)
            self._scorer_key = key
        return self._scorer


if VideoAestheticEvaluator.__doc__:  # None under python -OO
    VideoAestheticEvaluator.__doc__ += "\n    Scoring parameters:\n\n" + rst_docs("evaluator") + "\n"


def embeddings_writer(path: str | None, dtype: str, config: ScoringConfig) -> Any:
    """An EmbeddingWriter for ``path`` (checked like every output), or a null context when none is asked for."""
    if not path:
        return contextlib.nullcontext(None)
    from video_aesthetics.embeddings import EmbeddingsOutput, EmbeddingWriter

    output = EmbeddingsOutput(Path(path), dtype)
    check_outputs([("embeddings", output.path)])
    return EmbeddingWriter(output, config, None)


def check_storage_output(storage: Any) -> None:
    """Hold the file a JSONL storage will write to outputs.check_outputs, before the model loads.

    Storages that name their files (this project's JsonlStorage: ``file_path(step)`` and
    ``operator_step``) are checked: the next step's file must not be this step's input (a
    first_entry_file_name that is the cache's own step file, or a link or hard link to it), must not
    be a link out of its folder, and must be writable. Other storages keep their own rules.
    """
    file_path, step = getattr(storage, "file_path", None), getattr(storage, "operator_step", None)
    if not callable(file_path) or not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return
    check_outputs([("storage's next step file", file_path(step + 1))], [("storage's input", file_path(step))])


def resolve_figure_root(figure_root: str, storage: Any) -> str:
    """The constructor's figure_root as DataFlow-MM resolves it: joined to ``storage.cache_path``.

    ``os.path.join`` keeps an absolute figure_root as it is; a storage without a cache_path leaves a
    relative one relative to the working directory.
    """
    cache_path = getattr(storage, "cache_path", None)
    return os.path.join(cache_path, figure_root) if cache_path else figure_root


def scoring_records(frame: pd.DataFrame, config: ScoringConfig) -> list[dict[str, Any]]:
    """One record per row with just the fields scoring reads, as JSON values; absent cells left out.

    Only these columns go through the records: the others never leave the DataFrame, so pandas'
    NaN for missing keys and its float-typed integer columns cannot leak into the output.
    """
    keys = [config.input_video_key] if config.whole_video else [config.input_video_key, config.video_clips_key or ""]
    if config.whole_video and config.filtering and FILTERED in frame.columns:
        keys.append(FILTERED)  # the filter keeps a row an earlier filter marked false
    if len(frame):
        missing = [key for key in keys if key not in frame.columns]
        if missing:
            raise ConfigError(
                f"the DataFrame has no column {missing[0]!r} (columns: {list(map(str, frame.columns))}); "
                f"set {'input_video_key' if missing[0] == config.input_video_key else 'video_clips_key'} "
                "to the column that holds it"
            )
    columns = [frame[key].tolist() if key in frame.columns else [_ABSENT] * len(frame) for key in keys]
    return [
        {key: json_value(value) for key, value in zip(keys, row, strict=False) if not is_absent(value)}
        for row in zip(*columns, strict=False)
    ]


def scored_frame(
    frame: pd.DataFrame, records: list[dict[str, Any]], scored: list[dict[str, Any]], config: ScoringConfig
) -> pd.DataFrame:
    """A copy of ``frame`` with the scored column(s) from ``scored`` (the records after scoring)."""
    has_samples = [bool(samples_of(record, number, config, 0)) for number, record in enumerate(records)]
    out = frame.copy()
    written = [SCORE, ERROR, FRAME_SCORES, *([FILTERED] if config.filtering else [])]
    for key in written if config.whole_video else [config.output_key]:
        before = frame[key].tolist() if key in frame.columns else [_ABSENT] * len(frame)
        values = [
            after.get(key, _ABSENT) if scored_row else old
            for scored_row, after, old in zip(has_samples, scored, before, strict=True)
        ]
        if key in frame.columns or not all(is_absent(v) for v in values):
            out[key] = pd.Series(values, index=frame.index, dtype=object)
    return out
