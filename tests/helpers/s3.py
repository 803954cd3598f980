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
