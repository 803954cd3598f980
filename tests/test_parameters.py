"""Every declared scoring parameter (video_aesthetics.parameters) through every face, and nothing undeclared.

Each face must take each parameter with the declared default, type, bounds, choices and help, unless
the declaration says why it leaves it out; and each face's own arguments that are not declared must be
in the short lists below of things that are not scoring parameters (inputs, outputs, connections).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import REPO, airflow_env, parse_dag_folder, use_private_airflow_home

use_private_airflow_home()

from video_aesthetics import parameters, settings
from video_aesthetics.airflow import run_params, shard_plan
from video_aesthetics.airflow.operators import VideoAestheticScoringOperator
from video_aesthetics.cli import as_flags, build_parser
from video_aesthetics.config import PARAM_NAMES, ScoringConfig
from video_aesthetics.dataflow.evaluator import VideoAestheticEvaluator
from video_aesthetics.errors import ConfigError
from video_aesthetics.parameters import PARAMETERS, Parameter

# What each face takes besides scoring parameters: where to read and write, and how to reach it.
NOT_PARAMETERS = {
    "cli": {"help", "input", "output", "rejects", "report", "embeddings", "log_level"},
    "dag": {
        "input_path",
        "input_root",
        "on_missing_frames",
        "output_root",
        "partition",
        "embeddings",
        "rescore_from",
        "work_root",
        "input_conn_id",
        "output_conn_id",
        "frames_conn_id",
    },
    "operator": {
        "self",
        "input_path",
        "output_path",
        "rejects_path",
        "input_conn_id",
        "output_conn_id",
        "frames_conn_id",
        "embeddings",
        "retries",
        "retry_delay",
        "retry_exponential_backoff",
        "max_retry_delay",
        "execution_timeout",
        "kwargs",
    },
    "evaluator": {"self", "storage", "embeddings"},
}
# The DAG's params that are no ScoringConfig field: the DAG's task bodies read each of them themselves.
DAG_RUN_PARAMS = {"report_top", "chunk_size", "init_distributed", "nproc"}

IDS = [p.name for p in PARAMETERS]


def _score_parsers() -> dict[str, argparse.ArgumentParser]:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def test_the_declaration_is_whole() -> None:
    assert len(IDS) == len(set(IDS)), "a parameter is declared twice"
    for param in PARAMETERS:
        assert param.kind in (str, int, float, bool), param.name
        assert param.help.strip() and param.help.endswith((".", ")")), param.name
        assert param.section in parameters.SECTIONS, param.name
        assert set(param.left_out) <= set(parameters.FACES), param.name
        assert all(reason.strip() for reason in param.left_out.values()), f"{param.name}: a face left out without why"
        assert set(param.face_defaults) <= set(parameters.FACES), param.name
        if param.default is not None:
            assert isinstance(param.default, param.kind), param.name
            param.check(param.default)
        else:
            assert param.optional, f"{param.name} defaults to None but does not admit it"
        assert param.flag is None or param.flag.startswith("--")


def test_every_config_field_is_declared_with_its_default() -> None:
    declared = parameters.BY_NAME
    for field in dataclasses.fields(ScoringConfig):
        if field.name == "frames_storage_options":
            continue  # not a parameter: storage options a face builds from a connection
        assert field.name in declared, f"ScoringConfig.{field.name} is not declared in parameters.PARAMETERS"
        assert field.default == declared[field.name].default, field.name
    assert set(PARAM_NAMES) <= set(declared)


@pytest.mark.parametrize("param", [p for p in PARAMETERS if p.minimum is not None or p.maximum is not None], ids=str)
def test_the_library_refuses_a_value_out_of_bounds_naming_the_parameter_and_bound(param: Parameter) -> None:
    for value, bound in ((param.maximum, param.maximum), (param.minimum, param.minimum)):
        if value is None:
            continue
        outside = value + 1 if value == param.maximum else value - 1
        with pytest.raises(ConfigError, match=rf"{param.name} must be an integer .*{bound}.*got {outside}"):
            _library_check(param, outside)
        _library_check(param, value)  # the bound itself passes
    with pytest.raises(ConfigError, match=param.name):
        _library_check(param, 10**9 if param.maximum is not None else -(10**9))
    with pytest.raises(ConfigError, match=param.name):
        _library_check(param, True)  # a bool is no count


def _library_check(param: Parameter, value: Any) -> None:
    """The library's own refusal: ScoringConfig's for its fields, the declaration's check for the others."""
    if param.name in PARAM_NAMES:
        ScoringConfig(**{param.name: value})
    else:
        parameters.check(param.name, value)


def test_choices_and_switches_are_refused_by_the_library() -> None:
    with pytest.raises(ConfigError, match="reduction must be one of mean, min, max"):
        ScoringConfig(reduction="median")
    with pytest.raises(ConfigError, match="frame_scores must be true or false"):
        ScoringConfig(frame_scores="yes")  # type: ignore[arg-type]  # hostile input on purpose
    with pytest.raises(ConfigError, match="init_distributed must be true or false"):
        parameters.check("init_distributed", 1)


@pytest.mark.parametrize("param", PARAMETERS, ids=IDS)
def test_the_cli_takes_each_parameter_as_declared(param: Parameter) -> None:
    parsers = _score_parsers()
    if not param.on("cli"):
        assert param.cli_flag not in _options(parsers["score"]), f"{param.name} is on the CLI though left out"
        return
    action = _options(parsers[param.cli_command]).get(param.cli_flag)
    assert action is not None, f"`{param.cli_command}` has no {param.cli_flag}"
    assert action.dest == param.name
    assert action.default == param.default_for("cli")
    assert action.help == as_flags(param.help)
    if param.kind is bool:
        assert isinstance(action, argparse._StoreTrueAction)
    else:
        assert action.type is (None if param.kind is str else param.kind)
        closed = param.choices is not None and not param.open_choices
        assert action.choices == (param.choices if closed else None)


def test_the_cli_score_command_takes_nothing_undeclared() -> None:
    dests = {action.dest for action in _score_parsers()["score"]._actions}
    declared = {p.name for p in parameters.on_face("cli", command="score")}
    assert dests - declared == NOT_PARAMETERS["cli"]


def test_the_cli_refuses_an_out_of_bounds_value_by_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from video_aesthetics.cli import main

    args = ["score", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl")]
    args += ["--figure-root", str(tmp_path), "--batch-size", "5000"]
    assert main(args) == 2
    assert "--batch-size must be an integer >= 1 and <= 4096, got 5000" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dag_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The DAG's params as a DagBag parses them (schema, description, value), with a deployment's own settings."""
    code = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["video_aesthetic_scoring"]
params = {k: dag.params.get_param(k) for k in dag.params}
print(json.dumps({k: {"schema": p.schema, "description": p.description, "value": p.value} for k, p in params.items()}))
"""
    # A deployment's settings give the form its defaults, over the declared ones.
    env = airflow_env(
        tmp_path_factory.mktemp("params_home"),
        VIDEO_AESTHETICS_NUM_WORKERS="7",
        VIDEO_AESTHETICS_CLIP_MODEL="ViT-B/32",
    )
    return dict(parse_dag_folder(code, env))


@pytest.mark.parametrize("param", PARAMETERS, ids=IDS)
def test_the_dag_form_takes_each_parameter_as_declared(param: Parameter, dag_params: dict[str, Any]) -> None:
    if not param.on("dag"):
        assert param.name not in dag_params, f"{param.name} is a DAG param though left out"
        return
    assert param.name in dag_params, f"the DAG has no param {param.name}"
    got = dag_params[param.name]
    schema = got["schema"]
    assert got["description"] == param.help
    assert schema.get("section") == param.section
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    kind = {str: "string", int: "integer", float: "number", bool: "boolean"}[param.kind]
    assert kind in kinds
    # Optional values and switches admit null: Airflow's form stars a type without null as required.
    assert ("null" in kinds) == (param.optional or param.kind is bool)
    assert (schema.get("minimum"), schema.get("maximum")) == (param.minimum, param.maximum)
    assert schema.get("enum") == (list(param.choices) if param.choices is not None else None)
    expected = {"num_workers": 7, "clip_model": "ViT-B/32"}.get(param.name, param.default_for("dag"))
    if param.setting == "figure_root":
        expected = got["value"]  # the deployment's folder under AIRFLOW_HOME: checked below
    assert got["value"] == expected


def test_a_setting_that_gives_a_default_defaults_to_the_declaration() -> None:
    for param in PARAMETERS:
        if param.setting is None:
            continue
        setting = settings.SETTINGS[param.setting]
        if callable(setting.default):
            # figure_root: a deployment keeps its frames under AIRFLOW_HOME, not in the working folder.
            assert param.name == "figure_root"
            continue
        assert setting.default == (None if param.default is None else str(param.default)), param.name


def test_the_dag_form_takes_nothing_undeclared(dag_params: dict[str, Any]) -> None:
    declared = {p.name for p in parameters.on_face("dag")}
    assert set(dag_params) - declared == NOT_PARAMETERS["dag"]
    sections = list(dict.fromkeys(p["schema"].get("section") for p in dag_params.values()))
    assert sections == list(parameters.SECTIONS)  # each section whole, in the declared order


def test_the_task_bodies_hand_every_dag_parameter_on() -> None:
    on_dag = {p.name for p in parameters.on_face("dag")}
    assert set(run_params.SCORING_PARAMS) == on_dag & set(PARAM_NAMES)
    assert on_dag - set(run_params.SCORING_PARAMS) == DAG_RUN_PARAMS
    params = {"init_distributed": True, "nproc": 3, "report_top": 7}
    assert shard_plan.process_kwargs(params) == {"init_distributed": True, "nproc": 3}
    assert run_params.report_top(params) == 7
    assert run_params.report_top({}) == parameters.DEFAULTS.report_top
    for name, value in (("nproc", 65), ("init_distributed", "yes")):
        with pytest.raises(ConfigError, match=name):
            shard_plan.process_kwargs({name: value})
    with pytest.raises(ConfigError, match="report_top must be an integer >= 1 and <= 500, got 501"):
        run_params.report_top({"report_top": 501})
    config = run_params.scoring_config({name: vars(parameters.DEFAULTS)[name] for name in run_params.SCORING_PARAMS})
    assert config == ScoringConfig()


def _signature_faces() -> list[tuple[str, Any]]:
    return [
        ("operator", VideoAestheticScoringOperator.__init__),
        ("evaluator", VideoAestheticEvaluator.__init__),
    ]


@pytest.mark.parametrize("face,function", _signature_faces(), ids=["operator", "evaluator"])
def test_the_python_faces_take_each_parameter_with_its_default_and_doc(face: str, function: Any) -> None:
    signature = inspect.signature(function)
    doc = (VideoAestheticScoringOperator if face == "operator" else VideoAestheticEvaluator).__doc__ or ""
    for param in PARAMETERS:
        if not param.on(face):
            assert param.name not in signature.parameters, f"{face} takes {param.name} though left out"
            continue
        assert param.name in signature.parameters, f"{face} does not take {param.name}"
        assert signature.parameters[param.name].default == param.default_for(face), param.name
        assert f":param {param.name}: {param.help}" in doc, f"{face}'s docstring lacks {param.name}"
    declared = {p.name for p in parameters.on_face(face)}
    assert set(signature.parameters) - declared <= NOT_PARAMETERS[face]


def test_the_evaluator_run_overrides_every_parameter_it_takes() -> None:
    run = inspect.signature(VideoAestheticEvaluator.run).parameters
    for param in parameters.on_face("evaluator"):
        assert run[param.name].default is None, f"run({param.name}=None) must keep the constructor's value"
    assert set(run) - {p.name for p in parameters.on_face("evaluator")} == NOT_PARAMETERS["evaluator"]


def test_the_seed_signature_keeps_its_order() -> None:
    seed = ["figure_root", "input_video_key", "video_clips_key", "clip_model", "mlp_checkpoint", "load_num"]
    seed += ["batch_size", "num_workers", "init_distributed", "output_key"]
    positional = [
        name
        for name, p in inspect.signature(VideoAestheticEvaluator.__init__).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and name != "self"
    ]
    assert positional == seed


def test_a_literal_default_is_written_once() -> None:
    """The declaration's distinctive text defaults appear, quoted, in no other module of the project."""
    sources = [*(REPO / "plugins").rglob("*.py"), *(REPO / "dags").rglob("*.py")]
    own = REPO / "plugins" / "video_aesthetics" / "parameters.py"
    literals = {p.default for p in PARAMETERS if isinstance(p.default, str) and re.search(r"[_/.-]", p.default)}
    assert {"ViT-L/14", "extract_frames", "video_clips"} <= literals
    for path in sources:
        if path == own:
            continue
        text = path.read_text(encoding="utf-8")
        for literal in literals:
            for quoted in (f'"{literal}"', f"'{literal}'"):
                # A record's own field in sample data or a demo is data, not a default: assignments only.
                for match in re.finditer(rf"(=|default=|:)\s*{re.escape(quoted)}\s*[,)\n]", text):
                    pytest.fail(f"{path.relative_to(REPO)} states the default {quoted} again: {match.group(0)!r}")
