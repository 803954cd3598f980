"""The "Scored output" button on a scoring task: where the task wrote its scored records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
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


class ScoredOutputLink(BaseOperatorLink):
    """Links a scoring task to its output file (the rendered ``output_path`` of the task)."""

    name = "Scored output"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Airflow 3 calls this in the task process once the task has finished and stores the result
        # in XCom, so the operator here is the rendered one: output_path is the real location.
        location: Any = getattr(operator, "output_path", None)
        return browser_url(str(location) if location else None)
