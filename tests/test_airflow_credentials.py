"""Frames read through an Airflow connection's provider, on a moto server that checks every signature and policy.

A denied user, a session token the store does not accept and an unreachable store fail the run
(StoreAccessError, which Airflow retries) naming the store and the connection; no clip is marked
corrupt_frames. An assumed role's credentials are refreshed by the provider's session in each
decoding process, and the connection's endpoint and config_kwargs reach the S3 client.
"""

from __future__ import annotations

import json
import os
import pickle
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import free_port, use_private_airflow_home
from helpers.media import frame_dataset, read_jsonl
from helpers.s3 import AUTH_BUCKET, ROLE_ARN, AuthS3Server, auth_s3_server  # noqa: F401 - the fixture

use_private_airflow_home()

from video_aesthetics.airflow import credentials
from video_aesthetics.airflow.credentials import ProviderStorageOptions
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import StoreAccessError
from video_aesthetics.frame_store import RemoteFrames
from video_aesthetics.runner import score_file

FRAMES = f"s3://{AUTH_BUCKET}/frames"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, auth_s3_server: AuthS3Server) -> tuple[Path, Path]:  # noqa: F811
    """Records and local frames; the same frames in the bucket, uploaded by the reader."""
    source, figure_root = frame_dataset(tmp_path_factory.mktemp("cred_data"), videos=2, clips_per_video=2)
    s3 = auth_s3_server.client("s3", auth_s3_server.reader)
    for path in sorted(figure_root.rglob("*.jpg")):
        s3.put_object(
            Bucket=AUTH_BUCKET, Key=f"frames/{path.relative_to(figure_root).as_posix()}", Body=path.read_bytes()
        )
    return source, figure_root


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch, auth_s3_server: AuthS3Server):  # noqa: F811
    """Define an Airflow connection (an AIRFLOW_CONN_ variable, as a deployment's secrets would) for one test."""

    def define(conn_id: str, login: str | None, password: str | None, **extra: Any) -> str:
        for name, value in auth_s3_server.connection(conn_id, login, password, **extra).items():
            monkeypatch.setenv(name, value)
        return conn_id

    return define


def _config(model_args: dict[str, str], options: Any, **changes: Any) -> ScoringConfig:
    base = {"figure_root": FRAMES, "device": "cpu", "batch_size": 2, "num_workers": 0, **model_args}
    return ScoringConfig(**{**base, **changes}, frames_storage_options=options)


def _assumed_roles(server: AuthS3Server) -> int:
    """How many AssumeRole calls the server has answered (moto's own record of its STS state)."""
    with urllib.request.urlopen(f"{server.endpoint}/moto-api/data.json", timeout=10) as response:
        data = json.load(response)
    return len(data.get("sts", {}).get("AssumedRole", []))


# --- options made by the provider -----------------------------------------------------------------------


def test_endpoint_region_proxies_and_config_kwargs_come_from_the_connection(connection) -> None:
    conn = connection(
        "va_cfg",
        "AKIAEXAMPLE",
        "secret",
        config_kwargs={"connect_timeout": 7, "retries": {"max_attempts": 2}},
        service_config={"s3": {"proxy-uri": "http://proxy.invalid:3128"}},
        verify=False,
    )
    options = credentials.storage_options("s3", conn)
    assert isinstance(options, ProviderStorageOptions)
    resolved = dict(options)
    assert resolved["endpoint_url"].startswith("http://127.0.0.1:")
    assert resolved["config_kwargs"] == {
        "connect_timeout": 7,
        "retries": {"max_attempts": 2},
        "proxies": {"http": "http://proxy.invalid:3128", "https": "http://proxy.invalid:3128"},
    }
    assert resolved["client_kwargs"] == {"region_name": "us-east-1", "verify": False}
    assert "key" not in resolved and "secret" not in resolved  # the session carries the credentials
    # The S3 client s3fs makes from them has the connection's settings.
    fs = RemoteFrames(FRAMES, options).fs
    fs.connect()
    config = fs.s3.meta.config
    assert (config.connect_timeout, config.proxies) == (7, resolved["config_kwargs"]["proxies"])
    assert fs.s3.meta.endpoint_url == resolved["endpoint_url"]


def test_options_pickle_as_the_connection_and_rebuild_a_session_per_process(connection, dataset) -> None:
    conn = connection("va_pickle", "AKIAEXAMPLE", "s3cr3t-value")
    options = credentials.storage_options("s3", conn)
    session = options["session"]
    data = pickle.dumps(options)
    assert b"s3cr3t-value" in data  # the connection travels (as its key and secret did before) ...
    assert b"AioSession" not in data and b"aiobotocore" not in data  # ... never a session
    copy = pickle.loads(data)
    assert copy == options and copy["session"] is not session
    assert "s3cr3t-value" not in repr(options) and "'va_pickle'" in repr(options)
    # A forked child resolves its own.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write, b"1" if options["session"] is not session else b"0")
        finally:
            os._exit(0)
    os.close(write)  # a child that wrote nothing gives b"", not a hang
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)


def test_a_connection_without_keys_reads_through_the_default_chain_or_anonymously(
    connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    conn = connection("va_anon", None, None)
    assert credentials.storage_options("s3", conn)["anon"] is True
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    assert "anon" not in dict(credentials.storage_options("s3", conn))


def test_the_google_branch_names_the_provider_to_install(connection) -> None:
    pytest.importorskip("airflow.providers.amazon")
    try:
        import airflow.providers.google  # noqa: F401
    except ImportError:
        conn = connection("va_gcs", None, None)
        with pytest.raises(Exception, match="apache-airflow-providers-google"):
            credentials.storage_options("gs", conn)
    else:  # pragma: no cover - the Google provider is not installed here
        pytest.skip("the Google provider is installed: its branch needs a GCS connection to test")


def test_other_stores_get_no_provider_options() -> None:
    assert credentials.storage_options("memory", "anything") is None


# --- refused reads fail the run, never a clip ---------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1], ids=["in_process", "decoding_worker"])
def test_denied_credentials_fail_the_run_and_mark_no_clip(
    connection,
    dataset,
    auth_s3_server: AuthS3Server,  # noqa: F811
    model_args: dict,
    tmp_path: Path,
    workers: int,
) -> None:
    source, _ = dataset
    conn = connection("va_denied", *auth_s3_server.denied)
    options = credentials.storage_options("s3", conn)
    out = tmp_path / "out.jsonl"
    with pytest.raises(
        StoreAccessError, match=rf"figure_root {FRAMES}: the store failed to list .*AccessDenied"
    ) as err:
        score_file(source, out, _config(model_args, options, num_workers=workers))
    # The worker's own message, not the traceback DataLoader wraps a worker's error in.
    assert str(err.value).startswith(f"figure_root {FRAMES}: ") and "not a damaged frame" in str(err.value)
    assert not out.exists()  # nothing published: no clip marked corrupt_frames or no_frames


def test_a_session_token_the_store_refuses_fails_like_an_expired_one(
    connection,
    dataset,
    auth_s3_server: AuthS3Server,  # noqa: F811
    model_args: dict,
    tmp_path: Path,
) -> None:
    """moto does not expire tokens: a token it never issued is refused the same way (403), as an expired one is."""
    sts = auth_s3_server.client("sts", auth_s3_server.reader)
    issued = sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="expired")["Credentials"]
    conn = connection(
        "va_expired", issued["AccessKeyId"], issued["SecretAccessKey"], aws_session_token="FwoGZXIvYXdzEXPIRED"
    )
    options = credentials.storage_options("s3", conn)
    store = RemoteFrames(FRAMES, options)
    with pytest.raises(StoreAccessError, match="the store failed to list"):
        store.list(Path(FRAMES) / "video0" / "video0_0" / "img")
    # Reading a listed frame is refused the same way: an access error, not a frame that fails to decode.
    with pytest.raises(StoreAccessError, match="the store failed to read s3://va-auth/frames/video0"):
        store.fetch([f"{AUTH_BUCKET}/frames/video0/video0_0/img/frame_000001.jpg"])


def test_the_frame_check_fails_instead_of_counting_clips_missing(
    connection,
    dataset,
    auth_s3_server: AuthS3Server,  # noqa: F811
    model_args: dict,
) -> None:
    from video_aesthetics.extraction import check_remote_frames

    source, _ = dataset
    conn = connection("va_denied_check", *auth_s3_server.denied)
    config = _config(model_args, credentials.storage_options("s3", conn))
    for policy in ("skip", "fail", "extract"):
        with pytest.raises(StoreAccessError, match="AccessDenied"):
            check_remote_frames([source], config, policy)


def test_an_unreachable_store_is_an_access_error_not_missing_frames(model_args: dict) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    options = {
        "key": "k",
        "secret": "s",
        "endpoint_url": closed,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        "skip_instance_cache": True,
    }
    store = RemoteFrames(FRAMES, options)
    with pytest.raises(StoreAccessError, match=f"figure_root {FRAMES}: the store failed to list"):
        store.list(Path(FRAMES) / "video0" / "video0_0" / "img")


@pytest.mark.parametrize("ranks", [None, 2], ids=["one_process", "spawned_ranks"])
def test_the_operator_fails_the_shard_for_a_retry_naming_store_and_connection(
    connection,
    dataset,
    auth_s3_server: AuthS3Server,  # noqa: F811
    model_args: dict,
    tmp_path: Path,
    ranks: int | None,
) -> None:
    """Spawned ranks get the options pickled (the connection's fields) and rebuild the session themselves."""
    from airflow.sdk.exceptions import AirflowFailException

    from video_aesthetics.airflow.operators import VideoAestheticScoringOperator

    source, _ = dataset
    conn = connection("va_denied_op", *auth_s3_server.denied)
    out = tmp_path / "scored.jsonl"
    op = VideoAestheticScoringOperator(
        task_id="score_denied",
        input_path=str(source),
        output_path=str(out),
        figure_root=FRAMES,
        frames_conn_id=conn,
        num_workers=1,
        device="cpu",
        batch_size=2,
        **({"init_distributed": True, "nproc": ranks} if ranks else {}),
        **model_args,
    )
    with pytest.raises(StoreAccessError) as err:
        op.execute(context={})
    assert not isinstance(err.value, AirflowFailException)  # retried, unlike a bad parameter
    message = str(err.value)
    assert f"figure_root {FRAMES}" in message and "AccessDenied" in message
    assert "Airflow connection 'va_denied_op'" in message
    assert "frames_conn_id" in message
    assert not out.exists()


def test_a_dag_run_retries_the_refused_task_and_marks_no_clip(
    dataset,
    auth_s3_server: AuthS3Server,  # noqa: F811
    model_args: dict,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """dag.test() with a denied frames connection: check_frames fails after its retry (not at once, as a bad
    parameter does), naming the store and the connection; nothing is published."""
    from helpers.airflow_env import airflow_env, dag_test, new_home

    source, _ = dataset
    root = tmp_path_factory.mktemp("cred_dag")
    env = airflow_env(
        new_home(tmp_path_factory, "cred_dag_home"),
        **auth_s3_server.connection("va_denied_dag", *auth_s3_server.denied),
        VIDEO_AESTHETICS_RETRIES="1",
    )
    conf = {
        "input_path": str(source),
        "output_root": str(root / "out"),
        "work_root": str(root / "work"),
        "figure_root": FRAMES,
        "frames_conn_id": "va_denied_dag",
        "partition": "denied",
        "on_missing_frames": "skip",
        "num_workers": 1,
        "device": "cpu",
        **model_args,
    }
    [result] = dag_test(env, "video_aesthetic_scoring", [{"conf": conf}], timeout=600, cwd=root)
    assert result.get("state") == "failed", result.get("log", "")[-4000:]
    check = next(t for t in result["tasks"] if t["task_id"] == "check_frames")
    assert check["state"] == "failed" and check["try_number"] == 2  # retried: the store may come back
    assert f"figure_root {FRAMES}: the store failed to list" in result["log"]
    assert "Airflow connection 'va_denied_dag'" in result["log"] and "AccessDenied" in result["log"]
    assert not (root / "out").exists() or not any((root / "out").rglob("*.jsonl"))


# --- refreshable credentials ---------------------------------------------------------------------------


@pytest.fixture
def role_connection(connection, auth_s3_server: AuthS3Server) -> str:  # noqa: F811
    """A connection that assumes ROLE_ARN for 15 minutes: inside botocore's refresh window, so every
    request finds its credentials expiring and refreshes them (no test waits for a clock)."""
    return connection(
        "va_role",
        *auth_s3_server.reader,
        role_arn=ROLE_ARN,
        assume_role_method="assume_role",
        assume_role_kwargs={"DurationSeconds": 900},
    )


def test_an_assumed_role_is_refreshed_while_frames_are_read(
    role_connection: str,
    dataset,
    auth_s3_server: AuthS3Server,  # noqa: F811
) -> None:
    _, figure_root = dataset
    options = credentials.storage_options("s3", role_connection)
    store = RemoteFrames(FRAMES, options)
    before = _assumed_roles(auth_s3_server)
    folders = [Path(FRAMES) / "video0" / f"video0_{c}" / "img" for c in range(2)]
    for folder in folders:
        listed = store.list(folder)
        fetched = store.fetch(listed)
        local = sorted((figure_root / store.relative(folder)).iterdir())
        assert [f.content() for f in fetched] == [p.read_bytes() for p in local]
    # Each request found the role's credentials about to expire and assumed the role again, and the
    # fresh credentials were accepted: a frozen key would have assumed it once, at the start.
    assert _assumed_roles(auth_s3_server) - before >= len(folders) * 2


def test_scoring_through_a_refreshed_role_in_a_worker_equals_local_scoring(
    role_connection: str,
    dataset,
    auth_s3_server: AuthS3Server,  # noqa: F811
    model_args: dict,
    tmp_path: Path,
) -> None:
    source, figure_root = dataset
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    score_file(source, local, _config(model_args, None, figure_root=str(figure_root)))
    before = _assumed_roles(auth_s3_server)
    stats = score_file(
        source, remote, _config(model_args, credentials.storage_options("s3", role_connection), num_workers=1)
    )
    assert remote.read_bytes() == local.read_bytes()
    assert stats.errors == {} and all(
        clip["aesthetic_score"] is not None for record in read_jsonl(remote) for clip in record["video_clips"]["clips"]
    )
    assert _assumed_roles(auth_s3_server) > before + 1


@pytest.fixture(autouse=True)
def _no_leaked_stores() -> Iterator[None]:
    """Each test opens its own stores: frame_store's per-process cache must not hand one test's session to another."""
    from video_aesthetics import frame_store

    frame_store._stores.clear()
    yield
    frame_store._stores.clear()
