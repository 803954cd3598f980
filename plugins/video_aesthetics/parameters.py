"""Every scoring parameter, declared once: its default, type, bounds or choices, help and faces.

The project has four faces that take scoring parameters: the CLI (``cli``), the DAG's trigger form
(``dag``), the Airflow operator (``operator``) and the seed's evaluator (``evaluator``). Each of them
builds its options, Params, defaults or documentation from ``PARAMETERS``, and ``ScoringConfig``
takes its defaults and bounds from it; tests/test_parameters.py walks every entry through every
face. A face that does not take a parameter says why in ``left_out``; a face whose default differs
on purpose says so in ``face_defaults``.

Adding a scoring parameter: add one ``Parameter`` here and implement it (a ``ScoringConfig`` field
when the scorer reads it). See docs/architecture.md.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from video_aesthetics.errors import ConfigError

FACES = ("cli", "dag", "operator", "evaluator")

# The DAG's trigger form sections, in the order the form shows them. None is Airflow's own "Run
# Parameters" section, the only one the form opens: the input, which a manual run cannot do without.
INPUT: str | None = None
OUTPUT, MODEL, FILTER, PERFORMANCE, CONNECTIONS = ("Output", "Model", "Filter and report", "Performance", "Connections")
SECTIONS: tuple[str | None, ...] = (INPUT, OUTPUT, MODEL, FILTER, PERFORMANCE, CONNECTIONS)

REDUCTIONS = ("mean", "min", "max")
DEVICES = ("auto", "cpu", "cuda")
# A closed set for the trigger form, so that it offers a list; the library also takes any cuda:N.
DEVICE_CHOICES = (*DEVICES, *(f"cuda:{index}" for index in range(8)))
# How frames become pixels (video_aesthetics.decoding): auto is hardware or gpu on CUDA, else the measured CPU default.
DECODES = ("auto", "exact", "fast", "gpu", "hardware")

# The image tower's arithmetic (video_aesthetics.precision): auto is bf16 on GPUs, fp32 on the CPU; fp8 is opt-in.
PRECISIONS = ("auto", "fp32", "bf16", "fp8")

# Storage types of the CLIP embeddings a run may write beside its scores (video_aesthetics.embeddings).
EMBEDDING_DTYPES = ("float16", "float32")
CLIPS_KEY = "video_clips"
CLIP_MODEL = "ViT-L/14"

_NOT_SHARDED = "scores one input as it comes; cutting an input into shards is the DAG's job"
_NO_REPORT = "writes no HTML report (score --report and the DAG's merge do)"


@dataclass(frozen=True)
class Parameter:
    """One scoring parameter as every face shows it.

    ``kind`` is its Python type (str, int, float or bool); ``optional`` lets it be None (empty in
    the form, absent on the command line). ``minimum``/``maximum`` bound a number: the library, the
    form and the CLI refuse a value outside them. ``choices`` close a text's values, unless
    ``open_choices`` (the form offers them, the library accepts more: cuda:N). ``setting`` names the
    deployment setting (settings.py) that gives the DAG form its default.
    """

    name: str
    kind: type
    default: Any
    help: str
    section: str | None
    optional: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    open_choices: bool = False
    setting: str | None = None
    flag: str | None = None
    cli_command: str = "score"
    metavar: str | None = None
    left_out: Mapping[str, str] = field(default_factory=dict)
    face_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def on(self, face: str) -> bool:
        """Whether ``face`` takes this parameter."""
        return face not in self.left_out

    def default_for(self, face: str) -> Any:
        """The face's default when it differs on purpose (see face_defaults), else the parameter's."""
        return self.face_defaults.get(face, self.default)

    def check(self, value: Any) -> None:
        """Refuse (ConfigError naming the parameter and the rule) a value of the wrong type or out of bounds."""
        if value is None and self.optional:
            return
        if self.kind is int:
            _check_integer(self, value)
        elif self.kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{self.name} must be true or false, got {value!r}")
        elif self.choices is not None and not self.open_choices and value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")


def _check_integer(param: Parameter, value: Any) -> None:
    low = param.minimum if param.minimum is not None else -math.inf
    high = param.maximum if param.maximum is not None else math.inf
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return
    rule = f"an integer >= {param.minimum}" if param.minimum is not None else "an integer"
    if param.maximum is not None:
        # Bounded where an absurd value costs a worker's memory or the scheduler's map length.
        rule += f" and <= {param.maximum}"
    raise ConfigError(f"{param.name} must be {rule}, got {value!r}")


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "figure_root",
        str,
        "extract_frames",
        "Extracted frames: <figure_root>/<video stem>/<clip id>/img/*.jpg; a folder or a URL (s3://...). "
        "Unused when video_clips_key is empty (whole videos).",
        INPUT,
        setting="figure_root",
        metavar="DIR",
        # No default on the command line: a run on clips must say where their frames are.
        face_defaults={"cli": None},
    ),
    Parameter("input_video_key", str, "video", "The record field holding the video path.", INPUT),
    Parameter(
        "video_clips_key",
        str,
        CLIPS_KEY,
        "The record field holding the clips. Empty: score each record's whole video instead, load_num frames "
        "decoded from the video (relative video paths: see video_root).",
        INPUT,
        optional=True,
    ),
    Parameter(
        "video_root",
        str,
        None,
        "Folder relative video paths in the records are taken against, when whole videos are scored or frames "
        "extracted. Empty: the input file's folder in the DAG, the current folder elsewhere.",
        INPUT,
        optional=True,
        setting="video_root",
        metavar="DIR",
    ),
    Parameter(
        "skip_bad_records",
        bool,
        False,
        "Send malformed input lines to a rejects file instead of failing.",
        INPUT,
        left_out={"evaluator": "a DataFrame has no malformed lines: its storage reads it whole or fails"},
    ),
    Parameter(
        "output_key",
        str,
        CLIPS_KEY,
        "The record field the scored clips go to (default: the same as video_clips_key).",
        OUTPUT,
        optional=True,
        # The seed's evaluator states "video_clips"; the other faces follow video_clips_key.
        face_defaults={"cli": None, "dag": None, "operator": None},
    ),
    Parameter("frame_scores", bool, False, "Also write each clip's per-frame scores (aesthetic_frame_scores).", OUTPUT),
    Parameter(
        "embeddings_dtype",
        str,
        EMBEDDING_DTYPES[0],
        "Storage type of the embeddings: float16 (half the size; rescored scores within 1e-3) or float32.",
        OUTPUT,
        choices=EMBEDDING_DTYPES,
        # On the command line it only qualifies --embeddings: None tells a flag given alone from the default.
        face_defaults={"cli": None},
        left_out={"dag": "the DAG's embeddings param chooses off, float16 or float32 in one field"},
    ),
    Parameter(
        "clip_model",
        str,
        CLIP_MODEL,
        f"CLIP model: a name ({CLIP_MODEL}, OpenAI's names), an open_clip NAME[:tag], hf-hub:org/repo, a "
        "checkpoint file, NAME:/path/to/checkpoint or a folder with open_clip_config.json.",
        MODEL,
        setting="clip_model",
    ),
    Parameter(
        "mlp_checkpoint",
        str,
        None,
        "Aesthetic head weights (.pth or .safetensors) in LAION's layout. "
        "Empty: LAION's official sac+logos+ava1-l14-linearMSE.pth from the cache.",
        MODEL,
        optional=True,
        setting="mlp_checkpoint",
    ),
    Parameter("load_num", int, 3, "Frames read per clip, evenly spaced over its frames.", MODEL, minimum=1, maximum=64),
    Parameter("reduction", str, "mean", "How a clip's frame scores make its score.", MODEL, choices=REDUCTIONS),
    Parameter(
        "aes_min",
        float,
        None,
        "Aesthetic filter (DataFlow-MM's VideoAestheticFilter): each clip gets filtered: true when its score "
        "is at least this, false when below or unscored; a clip already false stays false; none is removed "
        "(the DAG also publishes kept.jsonl). Empty: no lower bound.",
        FILTER,
        optional=True,
        metavar="SCORE",
    ),
    Parameter(
        "aes_max",
        float,
        None,
        "The aesthetic filter's upper bound: a score above it gets filtered: false. Empty: no upper bound.",
        FILTER,
        optional=True,
        metavar="SCORE",
    ),
    Parameter(
        "report_top",
        int,
        12,
        "Best and worst clips shown in the report.",
        FILTER,
        minimum=1,
        maximum=500,
        flag="--top",
        cli_command="report",
        metavar="N",
        left_out={"operator": _NO_REPORT, "evaluator": _NO_REPORT},
    ),
    Parameter(
        "chunk_size",
        int,
        # One H100 starts ViT-L/14 in about 5.3 s and then scores about 1,600 frames/s (bench/gpu.py):
        # loading stays under 5% of a shard from about 54,000 clips, 15,000 records of 4 clips.
        15000,
        "Records per shard (grown when needed to stay within core.max_map_length).",
        PERFORMANCE,
        minimum=1,
        maximum=10**7,
        setting="chunk_size",
        left_out={"cli": _NOT_SHARDED, "operator": _NOT_SHARDED, "evaluator": _NOT_SHARDED},
    ),
    Parameter("batch_size", int, 64, "Clips per forward batch.", PERFORMANCE, minimum=1, maximum=4096),
    Parameter(
        "num_workers",
        int,
        4,
        "Decoding worker processes (0: decode in the scoring process).",
        PERFORMANCE,
        minimum=0,
        maximum=64,
        setting="num_workers",
    ),
    Parameter(
        "device",
        str,
        "auto",
        "auto (CUDA when present), cpu, cuda or cuda:N.",
        PERFORMANCE,
        choices=DEVICE_CHOICES,
        open_choices=True,
        setting="device",
    ),
    Parameter(
        "decode",
        str,
        "auto",
        "How frames become pixels: exact (PIL, the reference), fast (torchvision and torch's resize on the CPU, "
        "within 1 pixel level of exact when frames are scaled down, 2 when scaled up), gpu (JPEGs decoded on "
        "the GPU with nvJPEG), hardware (JPEGs decoded on the GPU's hardware JPEG engines with nvImageCodec, "
        "the extra video-aesthetics[gpu]), auto (hardware where the GPU has the engines, else gpu on CUDA, "
        "else the CPU default).",
        PERFORMANCE,
        choices=DECODES,
    ),
    Parameter(
        "precision",
        str,
        "auto",
        "The image tower's arithmetic: auto (bf16 on GPUs, fp32 on the CPU), fp32, bf16 (GPUs), fp8 (opt-in, "
        "GPUs of compute capability 8.9 or later: the transformer's MLP layers in FP8; its score deviation is "
        "in the performance docs). The aesthetic head always runs in full precision.",
        PERFORMANCE,
        choices=PRECISIONS,
    ),
    Parameter(
        "init_distributed",
        bool,
        False,
        "Score with several processes: one per GPU, or nproc CPU processes.",
        PERFORMANCE,
        left_out={"cli": "the CLI scores with several processes when given --nproc, or under torchrun"},
    ),
    Parameter(
        "nproc",
        int,
        None,
        "Scoring processes: one per GPU, or this many CPU processes (the DAG, operator and evaluator take it "
        "with init_distributed). Empty: one per GPU; under torchrun the launcher's world size.",
        PERFORMANCE,
        optional=True,
        minimum=1,
        maximum=64,
    ),
)

BY_NAME: Mapping[str, Parameter] = types.MappingProxyType({p.name: p for p in PARAMETERS})
# Every parameter's default, by name: DEFAULTS.batch_size.
DEFAULTS = types.SimpleNamespace(**{p.name: p.default for p in PARAMETERS})


def on_face(face: str, *, command: str | None = None) -> tuple[Parameter, ...]:
    """The parameters ``face`` takes, in declaration order (for the CLI: those of ``command``)."""
    return tuple(p for p in PARAMETERS if p.on(face) and (command is None or p.cli_command == command))


def check(name: str, value: Any) -> None:
    """Refuse (ConfigError) a value of the parameter ``name`` of the wrong type or outside its bounds."""
    BY_NAME[name].check(value)


def rst_docs(face: str) -> str:
    """The ``:param name: help`` lines of ``face``'s parameters, with their defaults, for its docstring."""
    lines = []
    for param in on_face(face):
        default = param.default_for(face)
        lines.append(f"    :param {param.name}: {param.help} Default: {default!r}.")
    return "\n".join(lines)
