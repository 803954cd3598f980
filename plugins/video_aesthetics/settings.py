"""Every knob of the project that is read from the environment, in one table.

Each setting has one name; it is read, first found wins, from

1. the environment variable ``VIDEO_AESTHETICS_<NAME>`` (the names deployments already use),
2. a ``lookup`` the caller passes: the Airflow wing passes Airflow's configuration, so that the
   provider's ``[video_aesthetics]`` section (airflow.cfg, or ``AIRFLOW__VIDEO_AESTHETICS__<NAME>``)
   works like any other Airflow setting,
3. the default below.

The provider's config section (``get_provider_info()["config"]``) is generated from this table, so
the documentation Airflow shows and the values the code reads cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from video_aesthetics.errors import ConfigError
from video_aesthetics.parameters import DEFAULTS

SECTION = "video_aesthetics"
ENV_PREFIX = "VIDEO_AESTHETICS_"
# Honoured too so that a machine already set up offline for Hugging Face is offline for us as well.
OFFLINE_ALIASES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = frozenset({"1", "true", "yes", "on"})

Lookup = Callable[[str], "str | None"]


def _airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    default: str | Callable[[], str] | None = None
    type: str = "string"

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def default_value(self) -> str | None:
        return self.default() if callable(self.default) else self.default


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "cache",
            "Folder that downloaded weights are kept in.",
            lambda: str(Path("~/.cache/video-aesthetics").expanduser()),
        ),
        Setting(
            "offline",
            "1/true: never download weights (HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE count too).",
            "false",
            "boolean",
        ),
        Setting(
            "input_root", "Folder of daily input partitions <YYYY-MM-DD>/*.jsonl, read by scheduled runs and backfills."
        ),
        Setting("input_path", "Default input of manual runs: a JSONL file, a folder of them or a glob."),
        Setting(
            "output_root",
            "Output store of the DAG: a local folder or a URL (s3://, gs://, ...).",
            lambda: str(_airflow_home() / "video_aesthetics" / "output"),
        ),
        Setting(
            "allowed_roots",
            "Locations runs may read and write: local folders and store prefixes (s3://bucket/prefix), separated "
            "by commas or newlines. Empty: any location (set it in production; see SECURITY.md).",
        ),
        Setting(
            "work_root", "Staging folder for shard files, reachable by every worker. Empty: <output_root>/_staging."
        ),
        Setting(
            "staging_retention",
            "How long a failed run's staging folder is kept for clearing its tasks: an age such as 7d, 36h or "
            "3600 (seconds), or never. Each later run's plan removes older ones (never an active run's).",
            "7d",
        ),
        Setting(
            "figure_root",
            "Extracted frames: <figure_root>/<video stem>/<clip id>/img/*.jpg.",
            lambda: str(_airflow_home() / "video_aesthetics" / "frames"),
        ),
        Setting("video_root", "Folder that relative video paths are resolved against when frames are extracted."),
        Setting("input_conn_id", "Airflow connection for a remote input_path/input_root (s3://...)."),
        Setting("output_conn_id", "Airflow connection for a remote output_root and work_root."),
        Setting("frames_conn_id", "Airflow connection for a remote figure_root."),
        # The scoring parameters' settings default to their one declaration (video_aesthetics.parameters).
        Setting(
            "clip_model",
            "CLIP model: a name, NAME:tag, hf-hub:org/repo, a file or a folder.",
            str(DEFAULTS.clip_model),
        ),
        Setting("mlp_checkpoint", "Aesthetic head weights. Empty: LAION's sac+logos+ava1-l14-linearMSE.pth."),
        Setting("chunk_size", "Records per shard of the DAG.", str(DEFAULTS.chunk_size), "integer"),
        Setting("num_workers", "Decoding worker processes per scoring task.", str(DEFAULTS.num_workers), "integer"),
        Setting("device", "auto, cpu, cuda or cuda:N.", str(DEFAULTS.device)),
        Setting(
            "threads",
            "torch's CPU threads per scoring task: a number, or auto (OMP_NUM_THREADS when set, else every CPU "
            "the task may run on). With several tasks on one host, give each its share: CPUs / tasks.",
            "auto",
        ),
        Setting("schedule", "The DAG's schedule: a cron preset or expression; none for manual runs only.", "@daily"),
        Setting(
            "retries",
            "Retries of the DAG's tasks after a transient failure (errors no retry can fix fail at once).",
            "2",
            "integer",
        ),
        Setting("pool", "Airflow pool of the scoring tasks (a 'gpu' pool bounds GPU use)."),
        Setting("queue", "Celery queue of the scoring tasks (e.g. 'gpu', served by GPU workers only)."),
    )
}


def get(name: str, lookup: Lookup | None = None) -> str | None:
    """The setting's value as text, or None when it is unset and has no default."""
    setting = SETTINGS[name]
    value = os.environ.get(setting.env, "").strip()
    if not value and lookup is not None:
        value = (lookup(name) or "").strip()
    return value or setting.default_value()


def get_int(name: str, lookup: Lookup | None = None) -> int:
    value = get(name, lookup)
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"setting {name} ({SETTINGS[name].env}) must be an integer, got {value!r}") from None


def cpu_threads(lookup: Lookup | None = None) -> int:
    """The CPU threads a scoring task gives torch: the ``threads`` setting, with "auto" resolved.

    "auto" is OMP_NUM_THREADS when set (torchrun and many schedulers size it), else the CPUs this
    process may run on (its affinity mask: taskset and container cpusets count, the host's other
    CPUs do not), where torch alone would take every core of the host.
    """
    value = str(get("threads", lookup)).strip()
    if value.lower() != "auto":
        return _thread_count(value, f"setting threads ({SETTINGS['threads'].env}) must be auto or")
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        return _thread_count(omp, "OMP_NUM_THREADS must be unset or")
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _thread_count(value: str, rule: str) -> int:
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{rule} a whole number of threads >= 1, got {value!r}")
    return threads


def cache_dir() -> Path:
    """The folder downloads go to: $VIDEO_AESTHETICS_CACHE, default ~/.cache/video-aesthetics."""
    return Path(str(get("cache"))).expanduser()


def offline_variables() -> list[str]:
    """The variables that turn downloading off, as NAME=value; empty when downloading is allowed."""
    names = [SETTINGS["offline"].env, *OFFLINE_ALIASES]
    return [f"{n}={os.environ[n]}" for n in names if os.environ.get(n, "").strip().lower() in _TRUE]


def provider_config() -> dict[str, object]:
    """The provider's config section, in the shape ``get_provider_info()["config"]`` takes."""
    return {
        SECTION: {
            "description": "Defaults of the video_aesthetic_scoring DAG and the scorer. The environment "
            "variables VIDEO_AESTHETICS_<NAME> take precedence over this section.",
            "options": {
                s.name: {
                    "description": f"{s.description} Environment: {s.env}.",
                    "version_added": "0.1.0",
                    "type": s.type,
                    "example": None,
                    "default": None if callable(s.default) else s.default,
                }
                for s in SETTINGS.values()
            },
        }
    }
