"""The DAG's first task (airflow/frame_check.py): the checks that fail or skip a run before any work."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers.airflow_env import use_private_airflow_home
from helpers.dag_runs import RUN, UI, params, write_input

use_private_airflow_home()

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from video_aesthetics.airflow.frame_check import check_frames


def test_a_scheduled_run_without_input_skips_and_a_manual_one_fails(tmp_path: Path) -> None:
    # input_root set but the day's folder absent, and no input configured at all.
    for p in (params(tmp_path), params(tmp_path, input_root=None)):
        with pytest.raises(AirflowSkipException, match="input"):
            check_frames(p, RUN)
        with pytest.raises(AirflowFailException, match="input"):
            check_frames(p, UI)


def test_undeclared_conf_keys_fail_the_first_task_naming_the_known_params(tmp_path: Path) -> None:
    declared = params(tmp_path)
    context = {
        **UI,
        "dag": SimpleNamespace(dag_id="d", params=declared),
        "dag_run": SimpleNamespace(run_type="manual", conf={"figure_rot": "/x", "load_num": 2}),
    }
    with pytest.raises(AirflowFailException, match="figure_rot") as info:
        check_frames(declared, context)
    assert "figure_root" in str(info.value) and "load_num']" not in str(info.value)


@pytest.mark.parametrize("top", [0, -1, 501, True, "12", 1.5])
def test_a_bad_report_top_fails_the_first_task_before_any_scoring(tmp_path: Path, top: Any) -> None:
    write_input(tmp_path)
    with pytest.raises(AirflowFailException, match="report_top"):
        check_frames(params(tmp_path, report_top=top, on_missing_frames="skip"), RUN)
    assert not (tmp_path / "out").exists()
