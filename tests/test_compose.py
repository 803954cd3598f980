"""The Docker deployment, checked by reading it: docker-compose.yaml, Dockerfile and .dockerignore.

Docker cannot run where the tests run. docker-compose.yaml is validated against the Compose
Specification's own JSON schema (compose-spec.json, as vendored by the check-jsonschema package, a test
dependency), then checked for what this deployment needs; where `docker compose` exists it validates
the file too. The Dockerfile's wheel is built here from the files its build stage copies.
"""

from __future__ import annotations

import configparser
import copy
import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PACKAGE = ROOT / "plugins" / "video_aesthetics"
README = ROOT / "README.md"

AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
    "airflow-init",
}
LONG_RUNNING = AIRFLOW_SERVICES - {"airflow-init"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def unset_value(text: str) -> str:
    """``text`` as compose reads it when no variable is set: ${VAR:-default} becomes default."""
    return re.sub(r"\$\{\w+(?::?[-?]([^}]*))?\}", lambda m: m.group(1) or "", text)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (host path or volume name) of a service's short-syntax volumes."""
    out = {}
    for entry in service.get("volumes", []):
        source, target = unset_value(entry).split(":")[:2]
        out[target] = source
    return out


def test_every_service_is_there(services: dict[str, Any]) -> None:
    assert {"postgres", "redis"} | AIRFLOW_SERVICES <= set(services)


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text("utf-8")
    schema = json.loads(text)
    assert schema["title"] == "Compose Specification"
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> list[str]:
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


def test_the_file_follows_the_compose_specification(
    compose_validator: jsonschema.protocols.Validator, compose: dict[str, Any]
) -> None:
    assert schema_errors(compose_validator, compose) == []


def _typo_in_a_service_key(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker-gpu"]["shm_sise"] = doc["services"]["airflow-worker-gpu"].pop("shm_size")


def _unknown_depends_on_condition(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-scheduler"]["depends_on"]["postgres"]["condition"] = "service_ready"


def _healthcheck_interval_without_a_unit(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["healthcheck"]["interval"] = 10


def _unknown_top_level_key(doc: dict[str, Any]) -> None:
    doc["service"] = doc["services"]


def _device_reservation_as_a_mapping(doc: dict[str, Any]) -> None:
    reservations = doc["services"]["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]
    reservations["devices"] = reservations["devices"][0]


@pytest.mark.parametrize(
    "mistake",
    [
        _typo_in_a_service_key,
        _unknown_depends_on_condition,
        _healthcheck_interval_without_a_unit,
        _unknown_top_level_key,
        _device_reservation_as_a_mapping,
    ],
)
def test_the_schema_refuses_mistakes_compose_refuses(
    compose_validator: jsonschema.protocols.Validator,
    compose: dict[str, Any],
    mistake: Callable[[dict[str, Any]], None],
) -> None:
    # Proof that the validation above can fail: the same file with one mistake is refused.
    document = copy.deepcopy(compose)
    mistake(document)
    assert schema_errors(compose_validator, document)


def test_airflow_runs_celery_on_postgres_and_redis(services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert (
            env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
            and "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
        )
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        # Workers check the tokens the API server signs: one secret for all.
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"]
    secrets = {services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert len(secrets) == 1


def test_airflow_services_use_the_image_built_here(services: dict[str, Any]) -> None:
    images = set()
    for name in AIRFLOW_SERVICES:
        service = services[name]
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE, name
        images.add(service["image"])
    assert len(images) == 1


def test_commands(services: dict[str, Any]) -> None:
    assert command_words(services["airflow-apiserver"]) == ["api-server"]
    assert command_words(services["airflow-scheduler"]) == ["scheduler"]
    assert command_words(services["airflow-dag-processor"]) == ["dag-processor"]
    assert command_words(services["airflow-triggerer"]) == ["triggerer"]
    assert command_words(services["airflow-worker"])[:2] == ["celery", "worker"]


def queues_of(words: list[str]) -> set[str]:
    for flag in ("-q", "--queues"):
        if flag in words:
            return set(words[words.index(flag) + 1].split(","))
    return {"default"}


def concurrency_of(words: list[str]) -> int | None:
    for flag in ("-c", "--concurrency"):
        if flag in words:
            return int(unset_value(words[words.index(flag) + 1]))
    return None


def load_celery_stack() -> Any:
    """scripts/celery_stack.py, the scripted deployment the compose file must agree with."""
    spec = importlib.util.spec_from_file_location("celery_stack_for_compose", ROOT / "scripts" / "celery_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_worker_takes_only_the_gpu_queue_one_task_at_a_time(services: dict[str, Any]) -> None:
    gpu = services["airflow-worker-gpu"]
    words = command_words(gpu)
    assert words[:2] == ["celery", "worker"]
    assert queues_of(words) == {"gpu"}
    assert concurrency_of(words) == 1
    # The CPU worker must not pick up scoring shards.
    assert "gpu" not in queues_of(command_words(services["airflow-worker"]))
    assert gpu["environment"]["VIDEO_AESTHETICS_QUEUE"] == "gpu"


def test_the_cpu_worker_serves_the_default_queue_with_bounded_slots(services: dict[str, Any]) -> None:
    from airflow.sdk import conf as airflow_conf

    words = command_words(services["airflow-worker"])
    # Named, not left to Celery's default: tasks without a queue go to [operators] default_queue.
    assert "-q" in words or "--queues" in words
    assert queues_of(words) == {airflow_conf.get("operators", "default_queue")}
    # Celery's default (16 slots) would let frame extraction and merges crowd the host.
    assert concurrency_of(words) == load_celery_stack().CeleryStack().default_concurrency


def test_the_workers_agree_with_the_scripted_deployment(services: dict[str, Any], tmp_path: Path) -> None:
    stack = load_celery_stack().CeleryStack(home=tmp_path, redis_db=1, database="compose_check")
    scripted = stack.env
    for name in ("airflow-worker", "airflow-worker-gpu", "airflow-init"):
        env = services[name]["environment"]
        for key in ("VIDEO_AESTHETICS_QUEUE", "VIDEO_AESTHETICS_POOL"):
            assert env[key] == scripted[key], (name, key)
    gpu_words = command_words(services["airflow-worker-gpu"])
    assert queues_of(gpu_words) == {scripted["VIDEO_AESTHETICS_QUEUE"]}
    # One GPU worker holds one pool slot at a time: the pool's default size is the worker's concurrency.
    assert concurrency_of(gpu_words) == stack.gpu_slots
    pool = re.search(r"airflow pools set (\S+) (\S+)", "\n".join(command_words(services["airflow-init"])))
    assert pool is not None
    assert pool.group(1) == scripted["VIDEO_AESTHETICS_POOL"]
    assert int(unset_value(pool.group(2)).strip('"')) == stack.gpu_slots


def test_every_worker_sizes_torch_threads_from_a_setting(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from video_aesthetics import settings

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for name in ("airflow-worker", "airflow-worker-gpu"):
        value = services[name]["environment"]["VIDEO_AESTHETICS_THREADS"]
        # The host's .env can set it (CPUs / task slots, as the scripted deployment computes).
        assert value == "${VIDEO_AESTHETICS_THREADS:-auto}", name
        monkeypatch.setenv("VIDEO_AESTHETICS_THREADS", unset_value(value))
        assert settings.cpu_threads() == len(os.sched_getaffinity(0)), name
        monkeypatch.setenv("VIDEO_AESTHETICS_THREADS", "3")
        assert settings.cpu_threads() == 3, name


def test_gpu_worker_reserves_an_nvidia_gpu(services: dict[str, Any]) -> None:
    devices = services["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    [device] = devices
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device.get("count") in (1, "all") or device.get("device_ids")
    for name in AIRFLOW_SERVICES - {"airflow-worker-gpu"}:
        assert "deploy" not in services[name], f"{name} must not hold a GPU"


def test_gpu_worker_has_room_for_dataloader_shared_memory(services: dict[str, Any]) -> None:
    size = str(services["airflow-worker-gpu"]["shm_size"]).lower()
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", size).groups()  # type: ignore[union-attr]
    assert int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit] >= 1 << 30


def test_scoring_env_reaches_every_airflow_container(compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        service = services[name]
        env = service["environment"]
        assert env["VIDEO_AESTHETICS_QUEUE"] == "gpu"
        assert env["VIDEO_AESTHETICS_POOL"] == "gpu"
        cache = env["VIDEO_AESTHETICS_CACHE"]
        # The cache must live on a named volume, so weights survive container restarts and are shared.
        volume = next(
            source for target, source in mounts(service).items() if cache.startswith(target.rstrip("/") + "/")
        )
        assert volume in compose["volumes"], (name, volume)
        assert env["HF_HOME"].startswith(cache.rsplit("/", 1)[0])


def test_runs_may_use_only_the_data_mount(services: dict[str, Any]) -> None:
    """Whoever may trigger a run sets its paths: the compose file confines them to the data mount (SECURITY.md)."""
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        roots = [root.strip() for root in env["VIDEO_AESTHETICS_ALLOWED_ROOTS"].split(",")]
        assert roots == ["/opt/airflow/data"], name
        data_mount = next(target for target in mounts(services[name]) if target == "/opt/airflow/data")
        for key in ("VIDEO_AESTHETICS_INPUT_ROOT", "VIDEO_AESTHETICS_OUTPUT_ROOT", "VIDEO_AESTHETICS_FIGURE_ROOT"):
            assert env[key].startswith(data_mount + "/"), (name, key)


def test_no_code_but_the_dag_is_mounted(services: dict[str, Any]) -> None:
    # The package exists once, installed in the image: a mounted plugins/ copy would come after
    # site-packages on sys.path and never be imported, so edits to it would silently do nothing.
    for name in AIRFLOW_SERVICES:
        targets = mounts(services[name])
        assert set(targets) == {
            "/opt/airflow/dags",
            "/opt/airflow/logs",
            "/opt/airflow/config",
            "/opt/airflow/data",
            "/opt/airflow/cache",
        }, name
        assert targets["/opt/airflow/dags"].endswith("/dags"), name
        assert not any("plugins" in source for source in targets.values()), name
        env = services[name]["environment"]
        assert "PYTHONPATH" not in env and "AIRFLOW__CORE__PLUGINS_FOLDER" not in env, name


def test_dag_folders_live_on_the_shared_data_mount(services: dict[str, Any]) -> None:
    # Every worker must see the same inputs, frames, shard files and outputs.
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        for key in ("VIDEO_AESTHETICS_INPUT_ROOT", "VIDEO_AESTHETICS_OUTPUT_ROOT", "VIDEO_AESTHETICS_FIGURE_ROOT"):
            assert env[key].startswith("/opt/airflow/data/"), (name, key)


def test_init_migrates_creates_the_admin_and_the_gpu_pool(services: dict[str, Any]) -> None:
    init = services["airflow-init"]
    env = init["environment"]
    assert env["_AIRFLOW_DB_MIGRATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    script = "\n".join(command_words(init))
    pool = re.search(r"airflow pools set (\S+) (\S+)", script)
    assert pool is not None, "airflow-init must create the pool the scoring tasks run in"
    assert pool.group(1) == init["environment"]["VIDEO_AESTHETICS_POOL"] == "gpu"
    assert int(unset_value(pool.group(2)).strip('"')) >= 1
    # /entrypoint migrates the database first (_AIRFLOW_DB_MIGRATE): the pool table exists by then.
    assert re.search(r"/entrypoint airflow pools set", script)
    assert "restart" not in init


def test_healthchecks(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING | {"postgres", "redis"}:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 1 and check["interval"], name
        assert services[name]["restart"] == "always", name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        test = " ".join(services[name]["healthcheck"]["test"])
        # Each worker pings itself ($$ is compose's escape for a shell variable).
        assert "inspect ping" in test and "celery@$${HOSTNAME}" in test, name
    # The api-server is healthy once its Execution API has answered: its first call is slow and blocking.
    api_check = " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "/api/v2/monitor/health" in api_check and "/execution/health" in api_check


def test_depends_on_shape(services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy", name
        assert needs["redis"]["condition"] == "service_healthy", name
        for dependency in needs:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    for name in LONG_RUNNING:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy", name
    assert "airflow-init" not in services["airflow-init"]["depends_on"]
    # Dependencies must form no cycle, or compose refuses to start.
    state: dict[str, int] = {}

    def visit(node: str) -> None:
        assert state.get(node) != 1, f"dependency cycle through {node}"
        if state.get(node) == 2:
            return
        state[node] = 1
        for dependency in services[node].get("depends_on", {}):
            visit(dependency)
        state[node] = 2

    for name in services:
        visit(name)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings_in(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def test_dollar_signs_are_valid_compose_interpolation(compose: dict[str, Any]) -> None:
    # Compose reads "$x" / "${x}" in values as its own variables: shell variables must be written "$$".
    for value in strings_in(compose):
        text = value.replace("$$", "")
        for match in re.finditer(r"\$", text):
            rest = text[match.start() :]
            assert re.match(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", rest), (
                f"bad interpolation near {rest[:40]!r}"
            )


def dockerfile_lines() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's lines, one list per build stage, each starting with its FROM."""
    stages: list[list[str]] = []
    for line in dockerfile_lines():
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def stage_name(stage: list[str]) -> str | None:
    words = stage[0].split()
    return words[3] if len(words) == 4 and words[2].upper() == "AS" else None


def run_words(line: str) -> tuple[dict[str, str], list[str]]:
    """The --mount options and the remaining words of a RUN line."""
    words = shlex.split(line)[1:]
    mount: dict[str, str] = {}
    while words and words[0].startswith("--mount="):
        mount.update(option.split("=", 1) for option in words.pop(0).removeprefix("--mount=").split(","))
    return mount, words


def only_line(stage: list[str], pattern: str) -> str:
    [line] = [line for line in stage if re.search(pattern, line)]
    return line


def test_dockerfile_extends_the_official_airflow_3_image_on_python_311() -> None:
    lines = dockerfile_lines()
    args = dict(
        re.fullmatch(r"ARG (\w+)=(\S+)", line).groups()
        for line in lines  # type: ignore[union-attr]
        if line.startswith("ARG ") and "=" in line
    )
    bases = {line.split()[1] for line in lines if line.startswith("FROM ")}
    [base] = bases
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    match = re.fullmatch(r"apache/airflow:(3\.\d+\.\d+)-python3\.11", image)
    assert match, image
    # The image runs the Airflow this project is tested with.
    assert match.group(1) == importlib.metadata.version("apache-airflow")


def test_dockerfile_installs_the_package_once_as_a_wheel_as_the_airflow_user() -> None:
    *builders, final = dockerfile_stages()
    [builder] = [stage for stage in builders if any(re.search(r"\bpip wheel\b", line) for line in stage)]
    _, wheel_words = run_words(only_line(builder, r"\bpip wheel\b"))
    assert "--no-deps" in wheel_words
    wheel_dir = wheel_words[wheel_words.index("--wheel-dir") + 1]

    # The image the services run copies nothing from the build context: its only copy of the package
    # is what pip installs from the wheel, mounted from the build stage for that one step.
    assert not [line for line in final if line.startswith(("COPY ", "ADD "))]
    assert not [line for stage in dockerfile_stages() for line in stage if re.search(r"\bpip install\b.*-e\b", line)]
    install = only_line(final, r"\bpip install\b")
    mount, words = run_words(install)
    assert mount["type"] == "bind" and mount["from"] == stage_name(builder)
    assert mount["source"] == wheel_dir
    assert any(
        re.fullmatch(rf"(\$\(echo )?{re.escape(mount['target'])}/video_aesthetics-\S*\.whl\)?\[airflow\]", word)
        for word in words
    ), install
    assert "apache-airflow==${AIRFLOW_VERSION}" in words
    for stage, line in ((builder, only_line(builder, r"\bpip wheel\b")), (final, install)):
        users = [other.split()[1] for other in stage[: stage.index(line)] if other.startswith("USER ")]
        assert users and users[-1] == "airflow", line
    # torch comes from PyPI's default index: its Linux wheel is the CUDA build.
    assert "--index-url" not in install and "cpu" not in install
    assert "import video_aesthetics" in install


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)

    for needed in ("pyproject.toml", "README.md", "plugins/video_aesthetics/__init__.py", "Dockerfile"):
        assert not ignored(needed), needed
    for heavy in (".venv/bin/python", ".git/config", "demo_output/x.mp4", "cache/w.pth"):
        assert ignored(heavy), heavy


def copy_build_stage_sources(stage: list[str], into: Path) -> None:
    """Lay out under ``into`` what the stage's COPY lines put into the image, from this repo."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for line in stage:
        if not line.startswith("COPY "):
            continue
        words = [word for word in shlex.split(line)[1:] if not word.startswith("--")]
        *sources, dest = words
        for source in sources:
            target = into / (dest + Path(source).name if dest.endswith("/") else dest).lstrip("/")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=skip)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)


def test_the_wheel_the_dockerfile_builds_holds_every_module_and_entry_point(tmp_path: Path) -> None:
    # Built from exactly the files the Dockerfile's build stage copies: a file the build needs but
    # the Dockerfile forgets, or a subpackage pyproject.toml leaves out, fails here, not in production.
    *builders, _ = dockerfile_stages()
    [builder] = [stage for stage in builders if any(re.search(r"\bpip wheel\b", line) for line in stage)]
    _, wheel_words = run_words(only_line(builder, r"\bpip wheel\b"))
    context = tmp_path / "image"
    copy_build_stage_sources(builder, context)
    out = tmp_path / "wheels"
    # No build isolation: it would fetch setuptools from the network; the test extra installs it.
    source = context / wheel_words[-1].lstrip("/")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation"]
    build = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [wheel] = out.glob("video_aesthetics-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points_txt] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(entry_points_txt).decode())
        metadata = archive.read(entry_points_txt.replace("entry_points.txt", "METADATA")).decode()

    modules = {
        path.relative_to(PACKAGE.parent).as_posix() for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts
    }
    assert {"video_aesthetics/airflow/operators.py", "video_aesthetics/dataflow/__init__.py"} <= modules
    assert sorted(modules - names) == []
    # The package and its metadata, nothing else (no tests/, no plugins/ prefix).
    assert {name.split("/")[0] for name in names} == {"video_aesthetics", entry_points_txt.split("/")[0]}
    assert (
        entry_points["apache_airflow_provider"]["provider_info"]
        == "video_aesthetics.airflow.provider_info:get_provider_info"
    )
    assert entry_points["console_scripts"]["video-aesthetics"] == "video_aesthetics.cli:main"
    # setuptools only warns when the readme is missing: the description must be README.md's.
    title = README.read_text(encoding="utf-8").splitlines()[0]
    assert metadata.partition("\n\n")[2].startswith(title), "the wheel's description is not README.md"


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose is not installed here",
)
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
