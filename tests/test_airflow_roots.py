"""The allowed_roots setting: which locations a run may use, compared as an attacker would try to escape them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.airflow_env import use_private_airflow_home

use_private_airflow_home()

from video_aesthetics.airflow.roots import allowed_roots, check_location, is_allowed
from video_aesthetics.errors import ConfigError


@pytest.fixture
def roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Allowed: <tmp>/data/out (local) and two store prefixes; returns <tmp>/data."""
    data = tmp_path / "data"
    (data / "out").mkdir(parents=True)
    (data / "out2").mkdir()
    monkeypatch.delenv("AIRFLOW__VIDEO_AESTHETICS__ALLOWED_ROOTS", raising=False)
    monkeypatch.setenv(
        "VIDEO_AESTHETICS_ALLOWED_ROOTS", f"{data / 'out'}/, s3://aws_default@scores/daily/\ngs://frames"
    )
    return data


def test_unset_allows_any_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("AIRFLOW__VIDEO_AESTHETICS__ALLOWED_ROOTS", raising=False)
    assert allowed_roots() is None
    assert is_allowed("/etc") and is_allowed("s3://any/where")
    check_location("/etc/passwd", "output_root")


def test_blank_entries_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", " , \n ,")
    assert allowed_roots() is None


def test_the_airflow_section_is_read_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", raising=False)
    monkeypatch.setenv("AIRFLOW__VIDEO_AESTHETICS__ALLOWED_ROOTS", str(tmp_path))
    assert allowed_roots() == [os.path.realpath(tmp_path)]
    assert not is_allowed("/etc")


def test_roots_are_normalised(roots: Path) -> None:
    assert allowed_roots() == [os.path.realpath(roots / "out"), "s3://scores/daily", "gs://frames"]


@pytest.mark.parametrize(
    "inside",
    [
        "out",
        "out/",
        "out/2024-01-01/_manifest.json",
        "out/not/yet/created",
        "out2/../out/x",  # normalised before comparing
    ],
)
def test_local_paths_inside(roots: Path, inside: str) -> None:
    location = f"{roots}/{inside}"
    assert is_allowed(location)
    check_location(location, "output_root")
    assert is_allowed(Path(location).as_uri())  # file:// is the local file system too


@pytest.mark.parametrize("outside", ["out2", "out2/x", "outside", "out/../out2", ".", "/etc/passwd", "/"])
def test_local_paths_outside(roots: Path, outside: str) -> None:
    location = outside if outside.startswith("/") else f"{roots}/{outside}"
    assert not is_allowed(location)
    with pytest.raises(ConfigError) as err:
        check_location(location, "output_root")
    message = str(err.value)
    for needed in ("output_root", repr(location), "allowed_roots", "VIDEO_AESTHETICS_ALLOWED_ROOTS"):
        assert needed in message


def test_a_link_inside_that_leads_out_is_outside(roots: Path) -> None:
    (roots / "out" / "escape").symlink_to(roots / "out2")
    assert not is_allowed(str(roots / "out" / "escape" / "x.jsonl"))
    (roots / "out" / "back").symlink_to(roots / "out" / "escape")  # a chain of links
    assert not is_allowed(str(roots / "out" / "back"))


def test_a_link_outside_that_leads_in_is_inside(roots: Path) -> None:
    (roots / "in-link").symlink_to(roots / "out")
    assert is_allowed(str(roots / "in-link" / "2024-01-01"))


def test_a_root_that_is_a_link_is_compared_by_its_target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", str(tmp_path / "alias"))
    assert is_allowed(str(tmp_path / "real" / "x"))
    assert is_allowed(str(tmp_path / "alias" / "x"))


@pytest.mark.parametrize(
    "inside",
    [
        "s3://scores/daily",
        "s3://scores/daily/",
        "s3://scores/daily/2024-01-01/_manifest.json",
        "s3://other_conn@scores/daily/x",  # the connection in the URL is not part of the address
        "s3a://scores/daily/x",
        "gs://frames/any/thing",
        "gcs://frames/x",
        "s3://scores//daily/x",
    ],
)
def test_store_urls_inside(roots: Path, inside: str) -> None:
    assert is_allowed(inside)
    check_location(inside, "output_root")


@pytest.mark.parametrize(
    "outside",
    [
        "s3://scores/daily2/x",  # a prefix of the text, not of the path
        "s3://scores/dail",
        "s3://scores",
        "s3://scores/",
        "s3://other/daily/x",
        "s3://scores/daily/../secrets",
        "s3://scores/daily/%2e%2e/secrets",
        "s3://scores/daily/./x",
        "s3://scores/daily/x?versionId=1",
        "s3://scores/daily/x#frag",
        "http://scores/daily/x",
        "gs://frames2/x",
        "s3:///daily/x",
        "",
        "/tmp/\x00",
        "simplecache::s3://scores/daily/x",
        "zip://x::s3://scores/daily/a.zip",
        "s3 ://scores/daily/x",
        "://scores/daily/x",
    ],
)
def test_store_urls_outside(roots: Path, outside: str) -> None:
    assert not is_allowed(outside)
    with pytest.raises(ConfigError, match="allowed_roots"):
        check_location(outside, "input_path")


def test_a_local_path_never_matches_a_store_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s3:").mkdir()
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", "s3://scores")
    # Without "://" this is a relative local path, whatever it looks like.
    assert not is_allowed("s3:/scores/x")
    assert not is_allowed(str(tmp_path / "scores"))


def test_a_store_url_never_matches_a_local_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", str(tmp_path))
    assert not is_allowed(f"s3:/{tmp_path}/x")  # a relative path resolved from the current folder
    assert not is_allowed(f"s3://{tmp_path.parts[1]}/{'/'.join(tmp_path.parts[2:])}/x")
    assert not is_allowed(f"memory://{tmp_path}/x")


def test_the_root_folder_allows_everything_local_but_no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", "/")
    assert is_allowed("/etc/passwd")
    assert not is_allowed("s3://bucket/x")


@pytest.mark.parametrize("entry", ["relative/folder", "s3://b/../c", "s3://", "s3://b/x?y=1"])
def test_a_bad_entry_in_the_setting_is_named(monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", f"/data, {entry}")
    with pytest.raises(ConfigError) as err:
        allowed_roots()
    assert "VIDEO_AESTHETICS_ALLOWED_ROOTS" in str(err.value) and repr(entry) in str(err.value)
    with pytest.raises(ConfigError):
        is_allowed("/data/x")  # a broken setting refuses, it never falls back to "anything goes"
