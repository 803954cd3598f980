from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.media import read_jsonl, write_jsonl
from video_aesthetics.dataflow.storage import JsonlStorage
from video_aesthetics.errors import ConfigError, InputError

RECORDS = [
    {"video": ["a.mp4"], "video_clips": {"clips": [{"id": "a_0", "frame_start": 0}]}, "n": 1, "note": None},
    {"video": "b.mp4", "n": 2.5, "text": "ünïcode ✓", "tags": ["x", 3, None]},
    {"caption": "no video", "flag": True, "nested": {"deep": {"k": [1, 2]}}},
]


def _storage(tmp_path: Path, first: Path | None = None) -> JsonlStorage:
    first = first or write_jsonl(tmp_path / "in.jsonl", RECORDS)
    return JsonlStorage(str(first), cache_path=str(tmp_path / "cache"), file_name_prefix="run")


def test_step_zero_reads_the_first_entry_and_writes_step_one(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    assert storage.step() is storage
    assert storage.read("dict") == RECORDS
    written = storage.write(storage.read("dataframe"))
    assert written == str(tmp_path / "cache" / "run_step1.jsonl")
    assert read_jsonl(Path(written)) == RECORDS


def test_step_n_reads_what_step_n_minus_one_wrote(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    storage.step().write([{"step": 0}])
    storage.step()
    assert storage.read("dict") == [{"step": 0}]
    storage.write([{"step": 1}])
    assert read_jsonl(tmp_path / "cache" / "run_step2.jsonl") == [{"step": 1}]
    assert storage.reset().step().read("dict") == RECORDS


@pytest.mark.parametrize("call", ["read", "write"])
def test_reading_or_writing_before_step_says_so(tmp_path: Path, call: str) -> None:
    storage = _storage(tmp_path)
    with pytest.raises(RuntimeError, match=r"before step\(\).*storage\.step\(\)"):
        storage.read("dataframe") if call == "read" else storage.write([{"a": 1}])
    assert not (tmp_path / "cache").exists()


def test_dataframe_round_trip_keeps_every_record_exactly(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    frame = storage.step().read("dataframe")
    assert isinstance(frame, pd.DataFrame) and len(frame) == 3
    # Integers stay integers and null stays None although the columns have gaps.
    assert frame.loc[0, "n"] == 1 and isinstance(frame.loc[0, "n"], int)
    assert frame.loc[0, "note"] is None and pd.isna(frame.loc[1, "note"])
    storage.write(frame)
    written = (tmp_path / "cache" / "run_step1.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in written] == RECORDS
    assert "ünïcode ✓" in written[1]
    assert '"note": null' in written[0] and "note" not in written[1]


def test_foreign_dataframes_are_written_as_json(tmp_path: Path) -> None:
    storage = _storage(tmp_path).step()
    frame = pd.DataFrame(
        {
            "i": [1, None],
            "f": np.array([0.5, 1.5], dtype=np.float32),
            "a": [np.arange(2), np.arange(3)],
            "t": pd.to_datetime(["2024-01-02", "2024-01-03"]),
        }
    )
    storage.write(frame)
    assert read_jsonl(tmp_path / "cache" / "run_step1.jsonl") == [
        {"i": 1.0, "f": 0.5, "a": [0, 1], "t": "2024-01-02T00:00:00"},
        {"f": 1.5, "a": [0, 1, 2], "t": "2024-01-03T00:00:00"},
    ]


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    storage = _storage(tmp_path).step()
    storage.write([{"ok": 1}])
    with pytest.raises(InputError, match="row 1 cannot be written as JSON"):
        storage.write(pd.DataFrame({"x": [1, object()]}, dtype=object))
    assert read_jsonl(tmp_path / "cache" / "run_step1.jsonl") == [{"ok": 1}]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["run_step1.jsonl"]


def test_missing_files_name_the_step_and_what_to_do(tmp_path: Path) -> None:
    storage = JsonlStorage(str(tmp_path / "absent.jsonl"), cache_path=str(tmp_path))
    with pytest.raises(InputError, match="first_entry_file_name .*absent.jsonl does not exist"):
        storage.step().read("dataframe")
    with pytest.raises(InputError, match=r"dataflow_cache_step1\.jsonl does not exist: step 1 reads what step 0"):
        storage.step().read("dataframe")


def test_malformed_first_entry_names_file_and_line(tmp_path: Path) -> None:
    storage = _storage(tmp_path, write_jsonl(tmp_path / "bad.jsonl", [{"a": 1}, "{oops"]))
    with pytest.raises(InputError, match=r"bad\.jsonl:2"):
        storage.step().read("dataframe")


def test_json_array_first_entry(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(RECORDS), encoding="utf-8")
    assert _storage(tmp_path, path).step().read("dict") == RECORDS
    path.write_text(json.dumps({"not": "an array"}), encoding="utf-8")
    with pytest.raises(InputError, match="array of objects"):
        _storage(tmp_path, path).step().read("dict")


JSON_REFUSED = [
    ('{"video": "v.mp4", "x": NaN}', 0, "NaN is not a JSON number", "in field 'x'"),
    ('{"video": "v.mp4", "z": Infinity}', 0, "Infinity is not a JSON number", "in field 'z'"),
    ('{"a": {"b": [-Infinity]}}', 0, "-Infinity is not a JSON number", ""),
    ('{"a": 1e999}', 0, "too large for a 64-bit float", "in field 'a'"),
    ('{"video": "v.mp4", "y": 1, "y": 2}', 0, "key 'y' appears twice", ""),
    ('{"a": 1},\n  {"meta": {"clips": [{"id": "c", "id": "d"}]}}', 1, "key 'id' appears twice", ""),
    ('{"a": "\\ud800"}', 0, "lone UTF-16 surrogate", ""),
    ('{"a": ' + "9" * 5000 + "}", 0, "an integer of more than", ""),
    ('{"a": ' + "[" * 150 + "]" * 150 + "}", 0, "nested deeper than 100 levels", ""),
    ('{"a": 1}, "text"', 1, "a record must be a JSON object", ""),
    ('{"a": 1}, {"b": tru}', 1, "malformed JSON", ""),
]


@pytest.mark.parametrize(("elements", "index", "reason", "field"), JSON_REFUSED)
def test_a_json_array_is_held_to_the_rules_of_a_jsonl_line(
    tmp_path: Path, elements: str, index: int, reason: str, field: str
) -> None:
    """What plain json.loads would take and then lose or change (NaN dropped, one of two keys kept)."""
    path = tmp_path / "in.json"
    path.write_text("[" + elements + "]", encoding="utf-8")
    storage = _storage(tmp_path, path)
    with pytest.raises(InputError, match=rf"in\.json: element {index} of the array \(line \d+ column \d+\): ") as err:
        storage.step().read("dict")
    message = str(err.value)
    assert reason in message and field in message
    assert message.endswith("fix or remove that element")
    assert not (tmp_path / "cache").exists()


def test_a_json_array_refuses_what_is_not_an_array_or_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    for data, message in [
        (b'{"a": 1}', "must hold an array of objects"),
        (b"", "must hold an array of objects"),
        (b'[{"a": 1}] [2]', r"extra data after the array at line 1 column 12"),
        (b'[{"a": 1} {"b": 2}]', r"expected ',' or '\]' at line 1 column 11"),
        (b'[{"a": "caf\xe9"}]', r"not valid UTF-8 \(byte 0xe9 at byte 12\); save it as UTF-8"),
    ]:
        path.write_bytes(data)
        with pytest.raises(InputError, match=r"in\.json: .*" + message):
            _storage(tmp_path, path).step().read("dict")


def test_a_json_array_reads_what_it_can_write_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(b"\xef\xbb\xbf \n[\n" + b",\n".join(json.dumps(r).encode() for r in RECORDS) + b"\n]\n")
    assert _storage(tmp_path, path).step().read("dict") == RECORDS
    path.write_text(" [ ] ", encoding="utf-8")
    assert _storage(tmp_path, path).step().read("dict") == []
    path.write_text('[{"e": "\\ud83d\\ude00", "z": -0.0, "n": 1.7976931348623157e308}]', encoding="utf-8")
    assert _storage(tmp_path, path).step().read("dict") == [{"e": "\U0001f600", "z": -0.0, "n": 1.7976931348623157e308}]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cache_type='jsonl'"):
        JsonlStorage("in.jsonl", cache_type="parquet")
    storage = _storage(tmp_path).step()
    with pytest.raises(ConfigError, match="dataframe, dict"):
        storage.read("list")
    with pytest.raises(InputError, match="DataFrame or a list of dicts"):
        storage.write("text")
