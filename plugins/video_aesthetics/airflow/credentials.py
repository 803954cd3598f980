"""fsspec options for a remote figure_root, made from an Airflow connection by the connection's own provider.

The decoding workers read frames with fsspec alone, in processes of their own: forked DataLoader
workers and, with init_distributed, spawned ranks that receive the config pickled. Keys copied out of
a connection at task start would be frozen there, and an assumed role's token expires within the
hour while a shard may score for twelve. So what travels is the connection itself (its fields, no
Airflow objects), and each process that reads the options asks the provider for a session of its own:
the Amazon provider's session factory gives refreshable credentials for an assumed role, the default
chain for a connection without keys, and the connection's endpoint URL, proxies and ``config_kwargs``
as its own S3 file system (``airflow.providers.amazon.aws.fs.s3.get_fs``) applies them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from video_aesthetics.errors import ConfigError, StoreAccessError

log = logging.getLogger(__name__)

S3_PROTOCOLS = ("s3", "s3a", "s3n")
GCS_PROTOCOLS = ("gs", "gcs")


@dataclasses.dataclass(frozen=True)
class ConnectionFields:
    """An Airflow connection's fields as plain values: they pickle, and rebuild the connection without Airflow's API.

    A spawned rank or forked worker must not ask the task's supervisor for the connection (its channel
    belongs to the task process), so the fields are read once, in the task, and carried.
    """

    conn_id: str
    conn_type: str | None
    login: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    host: str | None = None
    schema: str | None = None
    port: int | None = None
    extra: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def read(cls, conn_id: str) -> ConnectionFields:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        extra = conn.extra if isinstance(conn.extra, str) or conn.extra is None else json.dumps(conn.extra)
        return cls(conn_id, conn.conn_type, conn.login, conn.password, conn.host, conn.schema, conn.port, extra)

    def connection(self) -> Any:
        """The fields as an airflow.sdk Connection, made here: no lookup, no supervisor."""
        from airflow.sdk import Connection

        return Connection(
            conn_id=self.conn_id,
            conn_type=self.conn_type or "",
            login=self.login,
            password=self.password,
            host=self.host,
            schema=self.schema,
            port=self.port,
            extra=self.extra,
        )


class ProviderStorageOptions(Mapping[str, Any]):
    """fsspec storage options for ``protocol``, built from connection ``fields`` by its provider in each process.

    Read as a mapping, it resolves once per process (a forked worker builds its own session: sessions
    and their connection pools do not survive a fork); pickled, it carries only the connection's fields.
    Its repr names the connection, never a secret.
    """

    def __init__(self, protocol: str, fields: ConnectionFields) -> None:
        self.protocol = protocol
        self.fields = fields
        self._resolved: tuple[int, dict[str, Any]] | None = None

    @property
    def conn_id(self) -> str:
        return self.fields.conn_id

    def resolve(self) -> dict[str, Any]:
        if self._resolved is None or self._resolved[0] != os.getpid():
            self._resolved = (os.getpid(), _build(self.protocol, self.fields))
        return self._resolved[1]

    def __getitem__(self, key: str) -> Any:
        return self.resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.resolve())

    def __len__(self) -> int:
        return len(self.resolve())

    def __getstate__(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "fields": self.fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Rebuilt from the fields, never the parent's session.
        self.protocol = state["protocol"]
        self.fields = state["fields"]
        self._resolved = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProviderStorageOptions):
            return NotImplemented
        return (self.protocol, self.fields) == (other.protocol, other.fields)

    def __hash__(self) -> int:
        return hash((self.protocol, self.fields))

    def __repr__(self) -> str:
        return f"ProviderStorageOptions({self.protocol}://, connection {self.conn_id!r})"


def _build(protocol: str, fields: ConnectionFields) -> dict[str, Any]:
    if protocol in S3_PROTOCOLS:
        return s3_options(fields)
    if protocol in GCS_PROTOCOLS:
        return gcs_options(fields)
    raise ConfigError(f"no provider builds storage options for {protocol}:// (connection {fields.conn_id!r})")


def s3_options(fields: ConnectionFields) -> dict[str, Any]:
    """s3fs options as the Amazon provider's get_fs makes them: its session, endpoint, proxies, config_kwargs.

    The session comes from the provider's session factory (``[aws] session_factory`` is honoured), so an
    assumed role's credentials are refreshable and refreshed by botocore before they expire.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import SessionFactory
    from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper

    wrapper = AwsConnectionWrapper(conn=fields.connection())
    s3_config = wrapper.get_service_config("s3")
    if s3_config.get("signer"):
        # get_fs registers the signer on its own S3 file system's client, which fsspec options cannot carry.
        raise ConfigError(
            f"connection {fields.conn_id!r} signs S3 requests with {s3_config['signer']!r}, which frames read "
            "by the decoding workers cannot use: give figure_root a connection with plain credentials or a role"
        )
    session = SessionFactory(conn=wrapper, region_name=None, config=wrapper.botocore_config).create_session(
        deferrable=True
    )
    config_kwargs = dict(wrapper.extra_config.get("config_kwargs") or {})
    if proxy := s3_config.get("proxy-uri"):
        config_kwargs["proxies"] = {"http": proxy, "https": proxy}
    options: dict[str, Any] = {"session": session, "config_kwargs": config_kwargs}
    if endpoint := wrapper.get_service_endpoint_url("s3"):
        options["endpoint_url"] = endpoint
    client_kwargs: dict[str, Any] = {}
    if wrapper.region_name:
        client_kwargs["region_name"] = wrapper.region_name
    if wrapper.verify is not None:
        client_kwargs["verify"] = wrapper.verify
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    if _no_credentials(session):
        log.info("connection %r gives no AWS credentials: reading %s:// anonymously", fields.conn_id, "s3")
        options["anon"] = True
    # A new file system per process and session: fsspec's instance cache would hand back the parent's.
    options["skip_instance_cache"] = True
    return options


def _no_credentials(session: Any) -> bool:
    """Whether the provider's session finds no credentials at all (get_fs then reads anonymously)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(session.get_credentials()) is None
    # Inside a running event loop asyncio.run is refused: ask from a thread of its own.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, session.get_credentials()).result() is None


def gcs_options(fields: ConnectionFields) -> dict[str, Any]:
    """gcsfs options from the Google provider's hook: its credentials, which refresh themselves, and project."""
    try:
        from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
    except ImportError:
        raise ConfigError(
            f"figure_root is a Google Cloud Storage URL read through connection {fields.conn_id!r}, but the "
            "Google provider is not installed: pip install apache-airflow-providers-google (and gcsfs)"
        ) from None

    class _Hook(GoogleBaseHook):
        # The connection is the one read in the task: no lookup from a worker process. A classmethod,
        # as BaseHook's own.
        @classmethod
        def get_connection(cls, conn_id: str) -> Any:
            return fields.connection()

    hook = _Hook(gcp_conn_id=fields.conn_id)
    credentials, project = hook.get_credentials_and_project_id()
    return {"token": credentials, "project": project, "skip_instance_cache": True}


def storage_options(protocol: str, conn_id: str) -> Mapping[str, Any] | None:
    """Options for ``protocol`` made by connection ``conn_id``'s provider, or None when no provider here makes them."""
    if protocol not in S3_PROTOCOLS + GCS_PROTOCOLS:
        return None
    options = ProviderStorageOptions(protocol, ConnectionFields.read(conn_id))
    try:
        options.resolve()  # a connection the provider cannot use fails in the task, not in every worker
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"connection {conn_id!r} cannot be used for {protocol}:// stores: {err}") from err
    except Exception as err:  # an STS or network refusal may pass: the task is retried
        raise StoreAccessError(
            f"connection {conn_id!r} got no credentials for {protocol}:// ({type(err).__name__}: {err}); "
            "check its keys, role and endpoint"
        ) from err
    return options


@contextlib.contextmanager
def naming_connection(conn_id: str | None, param: str) -> Iterator[None]:
    """Re-raise a StoreAccessError with the connection it went through and what to check; still retryable."""
    try:
        yield
    except StoreAccessError as err:
        if not conn_id:
            raise StoreAccessError(
                f"{err} (no Airflow connection: {param} is unset, so the store was reached with the worker's "
                f"default credentials; set {param} to a connection allowed to read it)"
            ) from err
        raise StoreAccessError(
            f"{err} (through Airflow connection {conn_id!r}, set by {param}: check its credentials, role and "
            "endpoint; the task fails so that Airflow retries it)"
        ) from err
