"""The "Aesthetic scores" link on scoring tasks (to the run's tab in the Airflow UI), and console URLs for outputs in object stores."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def browser_url(location: str | None) -> str:
    """A URL a browser can open for ``location``: a cloud console page for s3:// and gs://, else the URI itself.

    Empty when there is no location (the task has not rendered one).
    """
    if not location:
        return ""
    text = str(location)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme:
        return "file://" + quote(text if text.startswith("/") else "/" + text)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if "@" in bucket:  # an Airflow connection id in the URI (s3://conn@bucket/key) is not part of the address
        bucket = bucket.rsplit("@", 1)[1]
    if scheme in ("s3", "s3a"):
        return f"https://s3.console.aws.amazon.com/s3/object/{quote(bucket)}?prefix={quote(key)}"
    if scheme in ("gs", "gcs"):
        return f"https://console.cloud.google.com/storage/browser/_details/{quote(bucket)}/{quote(key)}"
    if scheme in ("abfs", "abfss", "az"):
        return f"https://portal.azure.com/#blade/Microsoft_Azure_Storage/ContainerMenuBlade/overview/storageAccountId/{quote(bucket)}"
    return text


# Where the plugin's results view is mounted in the API server (see views and plugin).
VIEW_PREFIX = "/video-aesthetics"
# The url_route of the run page's "Aesthetic scores" tab (plugin.external_views): Airflow 3's UI
# shows it at <base>/dags/<dag>/runs/<run>/plugin/<route>, beside the run's task instances.
TAB_ROUTE = "aesthetic-scores"
PARTITIONS_ROUTE = "aesthetic-partitions"


def run_tab_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The run's "Aesthetic scores" tab inside the Airflow UI: its navigation stays around the report."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/plugin/{TAB_ROUTE}"


def api_base_url() -> str:
    from airflow.sdk import conf

    return conf.get("api", "base_url", fallback=None) or "http://localhost:8080"


class ScoredOutputLink(BaseOperatorLink):
    """Links a scoring or publishing task to its run's "Aesthetic scores" tab in the Airflow UI.

    A scoring shard's own file is staging that the merge deletes, so the link opens the run's tab,
    which shows what the run finally published (downloads and report) inside Airflow's navigation.
    """

    name = "Aesthetic scores"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return run_tab_url(api_base_url(), ti_key.dag_id, ti_key.run_id)
