"""Versioned publishing (airflow/publishing.py): version folders named by creation time, pruned safely."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import pytest

from video_aesthetics.airflow import object_store, publishing


def test_a_new_version_is_named_by_its_creation_time_and_never_repeats(tmp_path: Path) -> None:
    partition = object_store.store_path(tmp_path / "p")
    before = calendar.timegm(time.gmtime()) - 1
    names = [publishing.new_version(partition).name for _ in range(50)]
    after = calendar.timegm(time.gmtime()) + 1
    assert len(set(names)) == 50
    assert all(name.startswith(publishing.VERSION_PREFIX) for name in names)
    assert all(before <= (publishing.version_time(name) or 0) <= after for name in names)


@pytest.mark.parametrize(
    "name",
    ["scored.jsonl", "_manifest.json", "v-", "v-notatime-aaaa", "v-20241301T000000Z-aaaa", "V-20240101T000000Z-a", ""],
)
def test_only_a_version_name_has_a_version_time(name: str) -> None:
    assert publishing.version_time(name) is None


def test_old_versions_are_pruned_but_never_the_current_or_a_young_one(tmp_path: Path) -> None:
    partition = object_store.store_path(tmp_path / "p")
    names = [f"v-2024010{day}T000000Z-aaaa000{day}" for day in range(1, 7)]
    for name in names:
        (tmp_path / "p" / name).mkdir(parents=True)
        (tmp_path / "p" / name / "scored.jsonl").write_text("{}\n")
    (tmp_path / "p" / "notes").mkdir()
    removed = publishing.prune_versions(partition, current=names[0], keep=2, min_age_s=0)
    assert sorted(removed) == names[1:4]
    assert sorted(x.name for x in (tmp_path / "p").iterdir()) == sorted([names[0], *names[4:], "notes"])
    young = publishing.new_version(partition)
    young.mkdir()
    removed = publishing.prune_versions(partition, current=names[5], keep=0, min_age_s=3600)
    assert sorted(removed) == [names[0], names[4]]
    assert sorted(x.name for x in (tmp_path / "p").iterdir()) == sorted([names[5], young.name, "notes"])
