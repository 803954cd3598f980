"""The DAG's trigger form: one Param per declared scoring parameter (video_aesthetics.parameters).

The DAG file adds its own params (locations, partition, connections, run control); ``form`` puts
them and the generated ones in the order of the form's sections, so that each section shows whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param

from video_aesthetics.airflow.conf import int_setting, setting
from video_aesthetics.parameters import SECTIONS, Parameter, on_face


def dag_default(param: Parameter) -> Any:
    """The form's default: the deployment's setting when the parameter has one, else the declared default."""
    if param.setting is None:
        return param.default_for("dag")
    return int_setting(param.setting) if param.kind is int else setting(param.setting)


def schema(param: Parameter) -> dict[str, Any]:
    """The JSON schema of the parameter's Param: its type, bounds, closed choices and form section.

    Switches and optional values admit null: Airflow's form stars as required every param whose type
    excludes null, and an unticked switch or an empty field is a valid answer (null: the default).
    """
    kind = {str: "string", int: "integer", float: "number", bool: "boolean"}[param.kind]
    result: dict[str, Any] = {"type": [kind, "null"] if param.optional or param.kind is bool else kind}
    if param.choices is not None:
        result["enum"] = list(param.choices)  # closed in the form, even where the library takes more (cuda:N)
    elif param.kind is str and not param.optional:
        result["minLength"] = 1
    for bound in ("minimum", "maximum"):
        if getattr(param, bound) is not None:
            result[bound] = getattr(param, bound)
    if param.section is not None:
        result["section"] = param.section
    return result


def scoring_params() -> dict[str, Param]:
    """One Param per scoring parameter the DAG takes, in declaration order."""
    return {p.name: Param(dag_default(p), description=p.help, **schema(p)) for p in on_face("dag")}


def form(own: Mapping[str, Param]) -> dict[str, Param]:
    """The DAG's own params and the scoring ones, grouped by form section in SECTIONS' order."""
    generated = scoring_params()
    clash = sorted(set(own) & set(generated))
    if clash:
        raise ValueError(f"the DAG declares {clash} itself; they are declared in video_aesthetics.parameters")
    merged = {**own, **generated}
    rank = {section: index for index, section in enumerate(SECTIONS)}
    order = sorted(merged, key=lambda name: rank[merged[name].schema.get("section")])
    return {name: merged[name] for name in order}
