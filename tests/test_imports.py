"""Import hygiene, each module in a fresh interpreter: what Airflow imports while parsing the DAG and
loading the provider pulls in no torch, open_clip, PyAV, Pillow or torchvision (those processes fork
task runners and parse DAGs every few seconds), and the library never imports Airflow.

A fresh process per module: in this one, other tests have long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.airflow_env import DAGS, PLUGINS, airflow_env

PACKAGE = PLUGINS / "video_aesthetics"
DAG_FILE = DAGS / "video_aesthetic_scoring.py"
DAG_ID = "video_aesthetic_scoring"
HEAVY = ("torch", "open_clip", "av", "PIL", "torchvision")
# The subpackages that may import Airflow (airflow/) or stand in for the seed's framework (dataflow/).
WINGS = {"airflow", "dataflow"}

# What the scheduler, the dag-processor, the API server and the provider entry point import.
LIGHT = [
    "video_aesthetics",
    "video_aesthetics.config",
    "video_aesthetics.settings",
    "video_aesthetics.errors",
    "video_aesthetics.files",
    "video_aesthetics.airflow.operators",
    "video_aesthetics.airflow.links",
    "video_aesthetics.airflow.frame_check",
    "video_aesthetics.airflow.shard_plan",
    "video_aesthetics.airflow.merge",
    "video_aesthetics.airflow.object_store",
    "video_aesthetics.airflow.publishing",
    "video_aesthetics.airflow.staging",
    "video_aesthetics.airflow.provider_info",
    "video_aesthetics.airflow.plugin",
    "video_aesthetics.airflow.views",
]

_PROBE = """
import importlib, json, sys
target, watched = sys.argv[1], sys.argv[2:]
if target.endswith(".py"):
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=target)
    errors = {path: str(error) for path, error in bag.import_errors.items()}
    loaded = sorted(bag.dag_ids)
else:
    # video_aesthetics.__main__ runs the CLI when imported: let it print its help and exit.
    sys.argv = [target, "--help"]
    try:
        importlib.import_module(target)
    except SystemExit:
        pass
    errors, loaded = {}, [target]
print(json.dumps({"errors": errors, "loaded": loaded, "modules": sorted(m for m in watched if m in sys.modules)}))
"""


def imported_by(target: str, watched: tuple[str, ...], tmp_path: Path) -> dict:
    """Import ``target`` (a module, or a DAG file parsed by DagBag) in a fresh interpreter with a
    private Airflow home; which of ``watched`` it left in sys.modules, its import errors, its DAG ids."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, target, *watched],
        env=airflow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("target", [*LIGHT, str(DAG_FILE)], ids=[*LIGHT, DAG_FILE.name])
def test_parsing_and_provider_modules_import_nothing_heavy(target: str, tmp_path: Path) -> None:
    result = imported_by(target, HEAVY, tmp_path)
    assert result["errors"] == {}
    if target == str(DAG_FILE):
        assert DAG_ID in result["loaded"]
    assert result["modules"] == [], f"importing {target} imports {result['modules']}"


def library_modules() -> list[str]:
    """Every module of the package outside the wings, found on disk: a new module is covered as it lands."""
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PLUGINS).with_suffix("").parts
        if "__pycache__" in parts or (parts[1:2] and parts[1] in WINGS):
            continue
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_the_library_list_is_found() -> None:
    modules = library_modules()
    assert {"video_aesthetics", "video_aesthetics.config", "video_aesthetics.scoring"} <= set(modules)


@pytest.mark.parametrize("module", library_modules())
def test_the_library_never_imports_airflow(module: str, tmp_path: Path) -> None:
    result = imported_by(module, ("airflow",), tmp_path)
    assert result["modules"] == [], f"{module} imports Airflow: only video_aesthetics.airflow may"
