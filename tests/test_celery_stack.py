"""scripts/celery_stack.py without services: where its results go, and that leaving never deletes them.

The whole stack on PostgreSQL and Redis is exercised by tests/test_celery.py; here the parts that
decide where results live and what ``stop()`` removes, which need neither server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import REPO, free_port


def _load_stack_module() -> Any:
    sys.path.insert(0, str(REPO / "scripts"))
    import celery_stack

    return celery_stack


celery_stack = _load_stack_module()
OUTPUT, FRAMES = "VIDEO_AESTHETICS_OUTPUT_ROOT", "VIDEO_AESTHETICS_FIGURE_ROOT"


def test_results_default_to_demo_output_outside_any_home(tmp_path: Path) -> None:
    stack = celery_stack.CeleryStack(home=tmp_path, base_env={}, redis_db=1, database="x")
    stores = stack.stores
    assert stores == {
        OUTPUT: str(REPO / "demo_output" / "celery" / "scored"),
        FRAMES: str(REPO / "demo_output" / "celery" / "frames"),
    }
    # Every service gets them: without these, output_root defaults to <AIRFLOW_HOME>/video_aesthetics/output.
    assert {key: stack.env[key] for key in stores} == stores
    assert "/demo_output/" in (REPO / ".gitignore").read_text().splitlines()  # never committed by accident


def test_the_environment_and_the_flag_choose_the_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = celery_stack.CeleryStack(base_env={OUTPUT: "s3://bucket/scores", FRAMES: str(tmp_path / "f")})
    assert from_env.stores == {OUTPUT: "s3://bucket/scores", FRAMES: str(tmp_path / "f")}
    # Explicit values win over the environment; a relative folder is made absolute (services run elsewhere).
    monkeypatch.chdir(tmp_path)
    given = celery_stack.CeleryStack(base_env={OUTPUT: "/elsewhere"}, output_root="out/scored", figure_root="frames")
    assert given.stores == {OUTPUT: str(tmp_path / "out" / "scored"), FRAMES: str(tmp_path / "frames")}


def test_stop_removes_a_temporary_home_but_keeps_the_results(tmp_path: Path) -> None:
    home = tmp_path / "airflow-celery-tmp"
    stack = celery_stack.CeleryStack(home=home, output_root=tmp_path / "results" / "scored", base_env={})
    stack._own_home = True  # as start() marks the home it made with mkdtemp
    (home / "logs").mkdir(parents=True)
    scored = tmp_path / "results" / "scored" / "2024-05-01" / "scored.jsonl"
    scored.parent.mkdir(parents=True)
    scored.write_text('{"video": ["a.mp4"]}\n')
    stack.stop()
    assert not home.exists()
    assert scored.read_text() == '{"video": ["a.mp4"]}\n'


@pytest.mark.parametrize("store", [OUTPUT, FRAMES])
def test_a_store_inside_a_temporary_home_is_refused(tmp_path: Path, store: str) -> None:
    home = tmp_path / "airflow-celery-tmp"
    home.mkdir()
    stack = celery_stack.CeleryStack(home=home, base_env={store: str(home / "video_aesthetics" / "output")})
    stack._own_home = True
    with pytest.raises(celery_stack.StackError, match=rf"{store}=.* inside the temporary AIRFLOW_HOME.*--output"):
        stack.check_stores()
    # Through a link into the home too.
    (tmp_path / "link").symlink_to(home)
    linked = celery_stack.CeleryStack(home=home, base_env={store: str(tmp_path / "link" / "out")})
    linked._own_home = True
    with pytest.raises(celery_stack.StackError):
        linked.check_stores()
    # A home the user chose is kept, so results inside it are safe.
    kept = celery_stack.CeleryStack(home=home, base_env={store: str(home / "out")})
    kept.check_stores()


def test_the_banner_says_where_the_results_are(tmp_path: Path) -> None:
    stack = celery_stack.CeleryStack(
        home=tmp_path / "home", output_root=tmp_path / "o" / "scored", figure_root=tmp_path / "o" / "frames"
    )
    stack._own_home = True
    stack.port, stack.database, stack.redis_db = 8080, "va_celery_1", 3
    text = celery_stack.banner(stack)
    assert f"results:  {tmp_path / 'o' / 'scored'}  (kept on exit)" in text
    assert f"frames:   {tmp_path / 'o' / 'frames'}  (kept on exit)" in text
    assert "temporary: removed on exit" in text and stack.password in text


def test_the_script_takes_output_and_fails_clearly_without_postgres(tmp_path: Path) -> None:
    """The real script, pointed at a closed port: a one-line error naming the server, nothing written."""
    port = free_port()  # nothing listens there
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "celery_stack.py"),
            "--output",
            str(tmp_path / "out"),
            "--postgres",
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:{port}/postgres" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
    usage = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "celery_stack.py"), "--help"], capture_output=True, text=True
    )
    assert "--output" in usage.stdout
