"""A real S3-compatible server for tests: moto in server mode on a free localhost port, and an Airflow connection to it.

The server speaks S3's HTTP API (boto3, s3fs and Airflow's S3 file system all reach it as they
would reach AWS); only the endpoint differs, given as ``endpoint_url`` in the connection's extra.
Child processes (dag.test()) reach it too: it listens on a socket, and the connection travels in
an ``AIRFLOW_CONN_<ID>`` environment variable.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import free_port

CONN_ID = "va_s3"
KEY, SECRET, REGION = "testing", "testing", "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    conn_id: str = CONN_ID

    @property
    def connection_env(self) -> dict[str, str]:
        """The environment variable that defines the Airflow connection ``conn_id`` to this server."""
        connection = {
            "conn_type": "aws",
            "login": KEY,
            "password": SECRET,
            "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
        }
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": json.dumps(connection)}

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec options for s3fs, as the library takes them."""
        return {"key": KEY, "secret": SECRET, "endpoint_url": self.endpoint, "client_kwargs": {"region_name": REGION}}

    def fs(self) -> Any:
        import s3fs

        # A fresh instance without listing cache: tests look at what the server holds now.
        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **self.storage_options)

    def create_bucket(self, name: str) -> str:
        import boto3

        # boto3, not s3fs: s3fs sends us-east-1 as a location constraint, which S3 refuses.
        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name=REGION
        )
        client.create_bucket(Bucket=name)
        return name

    def upload_tree(self, local: Path, url: str) -> None:
        """Every file under ``local`` to the same relative keys under ``url`` (s3://bucket/prefix)."""
        fs = self.fs()
        for path in sorted(local.rglob("*")):
            if path.is_file():
                fs.pipe_file(f"{url.rstrip('/')}/{path.relative_to(local).as_posix()}", path.read_bytes())

    def keys(self, url: str) -> list[str]:
        """Every object key below ``url`` (bucket/key form), sorted; empty when there is none."""
        fs = self.fs()
        try:
            return sorted(fs.find(url))
        except FileNotFoundError:
            return []


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server, started for the session and stopped after it; the connection is set in this process too."""
    from moto.server import ThreadedMotoServer

    # The server's request log would bury a failing test's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(f"http://127.0.0.1:{port}")
    saved = {name: os.environ.get(name) for name in s3.connection_env}
    os.environ.update(s3.connection_env)
    try:
        yield s3
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


# --- a server that checks credentials -------------------------------------------------------------
#
# moto checks signatures, access keys and IAM policies only when told to (its INITIAL_NO_AUTH_ACTION_COUNT
# setting, process-wide): so this server runs in a process of its own, and s3_server above stays open.
# It is set up while open (users, a role, a bucket), then closed with moto's reset-auth call.

ACCOUNT = "123456789012"  # moto's default account
AUTH_BUCKET = "va-auth"
ROLE_NAME = "frames-reader"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"


@dataclass(frozen=True)
class AuthS3Server:
    """moto's S3, STS and IAM on ``endpoint``, enforcing IAM; keys of a reader, a denied user, and a role."""

    endpoint: str
    reader: tuple[str, str]  # may read AUTH_BUCKET and assume ROLE_ARN
    denied: tuple[str, str]  # a valid user with no permission at all

    def connection(self, conn_id: str, login: str | None, password: str | None, **extra: Any) -> dict[str, str]:
        """The environment variable defining an aws connection ``conn_id`` to this server (STS included)."""
        body = {
            "conn_type": "aws",
            "login": login,
            "password": password,
            "extra": {
                "endpoint_url": self.endpoint,
                "region_name": REGION,
                # The provider never sends AssumeRole to the global endpoint_url: STS's own is needed.
                "service_config": {"sts": {"endpoint_url": self.endpoint}},
                **extra,
            },
        }
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(body)}

    def client(self, service: str, key: tuple[str, str]) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
            region_name=REGION,
        )


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(action: str | list[str], resource: str = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def _user_key(iam: Any, name: str, policy: str | None) -> tuple[str, str]:
    iam.create_user(UserName=name)
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="session")
def auth_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3Server]:
    """moto in a process of its own, enforcing IAM once set up; stopped after the session."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log_file = tmp_path_factory.mktemp("moto_auth") / "server.log"
    with log_file.open("wb") as log_handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"moto server exited: {log_file.read_text()[-2000:]}") from None
                time.sleep(0.1)
        anyone = ("setup", "setup")  # not checked until reset-auth below
        iam = AuthS3Server(endpoint, anyone, anyone).client("iam", anyone)
        reader = _user_key(iam, "reader", _policy(_allow(["s3:*", "sts:AssumeRole"])))
        denied = _user_key(iam, "denied", None)
        trust = _policy(
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/reader"}, "Action": "sts:AssumeRole"}
        )
        iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=trust)
        iam.put_role_policy(
            RoleName=ROLE_NAME,
            PolicyName="read-frames",
            # AWS authorises a listing as s3:ListBucket; moto 5.2.6 asks for s3:ListObjectsV2 instead.
            PolicyDocument=_policy(_allow(["s3:GetObject", "s3:ListBucket", "s3:ListObjectsV2"])),
        )
        server_ = AuthS3Server(endpoint, reader, denied)
        server_.client("s3", anyone).create_bucket(Bucket=AUTH_BUCKET)
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10).close()
        yield server_
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
