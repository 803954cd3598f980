"""JSONL lines: reading, hostile lines, rejects and writing (jsonl.py)."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest

from helpers.media import write_jsonl
from video_aesthetics.errors import InputError
from video_aesthetics.jsonl import (
    BadLine,
    JsonlSource,
    decode_object,
    default_rejects_path,
    dumps,
    parse_line,
    raw_line,
)


def test_malformed_line_stops_with_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, "", '{"b": ', "[1, 2]"])
    with pytest.raises(InputError, match=r"in\.jsonl:3: malformed JSON.*--skip-bad-records"):
        list(JsonlSource(path))


def test_skip_bad_records_reports_bad_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, '{"b": ', "[1, 2]", {"c": 3}])
    source = JsonlSource(path, skip_bad_records=True)
    assert list(source) == [{"a": 1}, {"c": 3}]
    bad = list(source.bad_lines())
    assert [(b.line, b.text) for b in bad] == [(2, '{"b": '), (3, "[1, 2]")]
    assert "JSON object" in bad[1].reason


def test_missing_input_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.jsonl does not exist"):
        list(JsonlSource(tmp_path / "nope.jsonl"))


def test_default_rejects_path() -> None:
    assert default_rejects_path("/o/out.jsonl") == Path("/o/out.rejects.jsonl")
    assert default_rejects_path("/o/out") == Path("/o/out.rejects.jsonl")


DEEP = 100_000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": Infinity}', "Infinity is not a JSON number"),
        (b'{"a": [-Infinity]}', "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "too large for a 64-bit float"),
        (b'{"a": -2.5E+999}', "too large for a 64-bit float"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"k\\udc00": 1}', "lone UTF-16 surrogate"),
        (b'{"a": ["x", {"b": "\\udfff\\ud800"}]}', "lone UTF-16 surrogate"),
        (b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}", "nested deeper than"),
        (b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}", "nested deeper than 100 levels"),
        (b'{"a": ' + b'{"b": ' * 120 + b"1" + b"}" * 120 + b"}", "nested deeper than 100 levels"),
        (b'{"a": ' + b"7" * 5000 + b"}", "an integer of more than"),
        (b'{"a": "caf\xe9"}', "not valid UTF-8 (byte 0xe9"),
        (b'{"a": "\xc0\xaf"}', "not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),  # a surrogate encoded as UTF-8
        (b'\xff\xfe{"a": 1}', "not valid UTF-8"),  # a UTF-16 BOM
        (b'{"a": 1, "a": 2}', "key 'a' appears twice"),
        (b'{"a": {"b": 1, "b": 1}}', "key 'b' appears twice"),
        (b'{"\\udc00": 1, "\\udc00": 2}', "appears twice"),  # the reason itself must be writable
        (b'{"a": 1}\x00', "malformed JSON"),
        (b"\x0c", "malformed JSON"),  # form feed: blank to Python, not JSON whitespace
        (b'{"a": "line\nbreak"}'.replace(b"\n", b"\r"), "malformed JSON"),  # a raw control character
    ],
)
def test_lines_that_cannot_be_written_back_exactly_are_malformed(raw: bytes, reason: str) -> None:
    bad = parse_line(raw, "in.jsonl", 2)
    assert isinstance(bad, BadLine), bad
    assert reason in bad.reason
    assert raw_line(json.loads(dumps(bad.as_reject()).encode("utf-8"))) == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a BOM on the first line
        (b'{"e": "\\ud83d\\ude00"}', {"e": "\U0001f600"}),  # a surrogate pair is one character
        (b'{"a": ' + b"[" * 99 + b"]" * 99 + b"}", None),  # 100 levels: the limit itself
        (b'{"n": ' + b"9" * 4000 + b"}", None),
        (b'{"f": 1.7976931348623157e308, "z": -0.0, "t": "\\u0000"}', None),
        (b'{"a": 1}\r', {"a": 1}),  # CRLF files
    ],
)
def test_lines_that_can_be_written_back_are_records(raw: bytes, expected: dict | None) -> None:
    record = parse_line(raw, "in.jsonl", 1)
    assert isinstance(record, dict), record
    if expected is not None:
        assert record == expected
    assert json.loads(dumps(record)) == record


def test_a_bom_is_accepted_only_on_the_first_line() -> None:
    assert isinstance(parse_line(b'\xef\xbb\xbf{"a": 1}', "f", 1), dict)
    assert isinstance(parse_line(b'\xef\xbb\xbf{"a": 1}', "f", 2), BadLine)


def test_rejects_keep_the_exact_bytes_of_every_bad_line(tmp_path: Path) -> None:
    lines = [
        b'\xef\xbb\xbf{"ok": 0}',
        b'{"a": NaN}',
        b'{"b": "\xff\xfe"}',
        b"   ",
        b'{"ok": 1}\r',
        b'{"c": "\\ud800"}',
        b"\xe2\x80\xa8",  # U+2028 alone: text, not JSON
        b"[1]",
        b'{"ok": 2}',
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines))  # the last line has no newline
    source = JsonlSource(path, skip_bad_records=True)
    assert list(source) == [{"ok": 0}, {"ok": 1}, {"ok": 2}]
    bad = list(source.bad_lines())
    assert [b.line for b in bad] == [2, 3, 6, 7, 8]
    rejects = [json.loads(dumps(b.as_reject())) for b in bad]
    assert [raw_line(r) for r in rejects] == [lines[i - 1] for i in (2, 3, 6, 7, 8)]
    # Text where the bytes are UTF-8, base64 where they are not.
    assert "raw_base64" in rejects[1] and "raw" not in rejects[1]
    assert rejects[0]["raw"] == '{"a": NaN}'
    assert all(r["source"] == str(path) for r in rejects)
    with pytest.raises(InputError, match=r"in\.jsonl:2: NaN"):
        list(JsonlSource(path))


def test_a_non_utf8_line_stops_the_run_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\x80"}\n')
    with pytest.raises(InputError, match=r"in\.jsonl:2: not valid UTF-8 \(byte 0x80 at byte 8\)"):
        list(JsonlSource(path))


def test_only_newline_ends_a_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"a": "x\u2028y", "b": "\u0085"}\n'.encode())
    assert list(JsonlSource(path)) == [{"a": "x\u2028y", "b": "\u0085"}]


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_an_input_that_is_not_a_file_is_refused_with_what_to_change(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "in.jsonl"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/null")
    with pytest.raises(InputError, match="folder|pipe|device"):
        list(JsonlSource(path))


def test_an_input_that_fails_mid_read_is_an_input_error() -> None:
    # /proc/self/mem is a regular file whose first page cannot be read (EIO).
    with pytest.raises(InputError, match=r"cannot read input /proc/self/mem"):
        list(JsonlSource(Path("/proc/self/mem")))


# --- a file that changes between or during passes is refused, never read as two versions ----------------

CHANGED = r"input .*in\.jsonl changed while the run was reading it \(.*\).*write inputs to a new file and rename"


def _versioned(tmp_path: Path, lines: int = 4) -> tuple[Path, bytes, bytes]:
    """A JSONL file, its bytes and other bytes of the same size; its times set an hour back, so that
    any write, however soon, moves them (whatever the filesystem's clock granularity)."""
    path = tmp_path / "in.jsonl"
    first = b"".join(b'{"video": "a.mp4", "n": %d}\n' % i for i in range(lines))
    second = first.replace(b"a.mp4", b"b.mp4")
    path.write_bytes(first)
    an_hour_ago = os.stat(path).st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    return path, first, second


def test_an_unchanged_file_reads_the_same_on_every_pass(tmp_path: Path) -> None:
    path, _, _ = _versioned(tmp_path, lines=5000)  # more than one mid-pass check
    source = JsonlSource(path)
    first = list(source)
    assert len(first) == 5000
    assert list(source) == first
    assert sum(1 for _ in source.bad_lines()) == 0
    path.chmod(0o600)
    os.utime(path, ns=(os.stat(path).st_mtime_ns,) * 2)  # reading (atime) alone changes nothing
    assert list(JsonlSource(path)) == first


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ("rewrite same size", "modification time moved"),  # cat other > in: same inode, same size
        ("truncate", "size went from"),
        ("append", "size went from"),
        ("truncate and rewrite", "modification time moved"),
        ("rename into place", "another file was renamed into its place"),  # a new inode
    ],
)
def test_a_file_changed_between_passes_is_refused(tmp_path: Path, change: str, what: str) -> None:
    path, first, second = _versioned(tmp_path)
    source = JsonlSource(path)
    assert [r["video"] for r in source] == ["a.mp4"] * 4
    if change == "rewrite same size":
        with open(path, "r+b") as handle:
            handle.write(second)
    elif change == "truncate":
        path.write_bytes(first[: len(first) // 2])
    elif change == "append":
        with open(path, "ab") as handle:
            handle.write(b'{"video": "c.mp4"}\n')
    elif change == "truncate and rewrite":
        path.write_bytes(second)
    else:
        (tmp_path / "new.jsonl").write_bytes(second)
        os.replace(tmp_path / "new.jsonl", path)
    with pytest.raises(InputError, match=CHANGED) as refused:
        list(source)
    assert what in str(refused.value)
    with pytest.raises(InputError, match=CHANGED):
        list(source.bad_lines())
    # A source made now takes the file as it is now.
    assert len(list(JsonlSource(path))) >= 2


@pytest.mark.parametrize("change", ["rewrite same size", "truncate", "append"])
def test_a_file_changed_during_a_pass_fails_that_pass_before_its_end(tmp_path: Path, change: str) -> None:
    path, _, second = _versioned(tmp_path)
    reading = iter(JsonlSource(path))
    assert next(reading)["video"] == "a.mp4"
    if change == "rewrite same size":
        path.write_bytes(second)
    elif change == "truncate":
        path.write_bytes(b"")
    else:
        with open(path, "ab") as handle:
            handle.write(b'{"video": "c.mp4"}\n')
    # The consumer never sees the end of a pass over two versions (it would publish what it made of it).
    with pytest.raises(InputError, match=CHANGED):
        list(reading)


def test_a_line_torn_by_a_rewrite_is_blamed_on_the_rewrite_not_the_line(tmp_path: Path) -> None:
    path, first, _ = _versioned(tmp_path)
    reading = iter(JsonlSource(path))
    next(reading)
    with open(path, "r+b") as handle:  # a writer half-way through: the next line is cut short
        handle.seek(len(first.splitlines(keepends=True)[0]) + 5)
        handle.write(b"\n")
    with pytest.raises(InputError, match=CHANGED):
        list(reading)


def test_a_long_pass_notices_a_change_within_a_few_thousand_lines(tmp_path: Path) -> None:
    path, _, _ = _versioned(tmp_path, lines=20_000)
    reading = iter(JsonlSource(path))
    next(reading)
    with open(path, "ab") as handle:
        handle.write(b'{"video": "c.mp4"}\n')
    seen = 1
    with pytest.raises(InputError, match=CHANGED):
        for _ in reading:
            seen += 1
    assert seen < 4096


@pytest.mark.parametrize("change", ["rename into place", "delete"])
def test_a_file_renamed_over_or_deleted_during_a_pass_is_refused(tmp_path: Path, change: str) -> None:
    """The open pass reads the old inode, which stays whole, but its change time moves when its name goes."""
    path, _, second = _versioned(tmp_path)
    source = JsonlSource(path)
    reading = iter(source)
    assert next(reading)["video"] == "a.mp4"
    if change == "delete":
        path.unlink()
    else:
        (tmp_path / "new.jsonl").write_bytes(second)
        os.replace(tmp_path / "new.jsonl", path)
    with pytest.raises(InputError, match=CHANGED):
        list(reading)
    with pytest.raises(InputError, match="renamed into its place" if change != "delete" else "does not exist"):
        list(source)


def test_spawned_ranks_and_workers_check_the_parents_file(tmp_path: Path) -> None:
    path, _, second = _versioned(tmp_path)
    source = JsonlSource(path)
    path.write_bytes(second)
    copy = pickle.loads(pickle.dumps(source))  # what a spawned rank or a decoding worker gets
    with pytest.raises(InputError, match=CHANGED):
        list(copy)


def test_a_source_made_before_its_file_takes_the_file_its_first_pass_reads(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    source = JsonlSource(path)
    path.write_bytes(b'{"a": 1}\n')
    assert list(source) == [{"a": 1}]
    with open(path, "ab") as handle:
        handle.write(b'{"a": 2}\n')
    with pytest.raises(InputError, match=CHANGED):
        list(source)


# --- the decoder for a JSON array's elements (dataflow.storage) --------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"x": NaN}', "NaN is not a JSON number (only finite numbers can be written back), in field 'x'"),
        (
            '{"a": {"z": -Infinity}}',
            "-Infinity is not a JSON number (only finite numbers can be written back), in field 'z'",
        ),
        ('{"a": [Infinity]}', "Infinity is not a JSON number"),
        ('{"y": 1, "y": 2}', "key 'y' appears twice"),
        ('{"a": {"b": {"y": 1, "y": 2}}}', "key 'y' appears twice"),
        ('{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"a": 1e400}', "the number 1e400 is too large for a 64-bit float, in field 'a'"),
        ('{"a": ' + "7" * 5000 + "}", "an integer of more than"),
        ("[1]", "a record must be a JSON object, got list"),
    ],
)
def test_decode_object_holds_an_element_to_the_rules_of_a_line(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        decode_object("[" + text + "]", 1)
    bad = parse_line(text.encode(), "in.jsonl", 1)
    assert isinstance(bad, BadLine) and reason in bad.reason


def test_decode_object_returns_the_object_and_where_it_ends() -> None:
    text = '[{"a": {"b": [1, 2.5, null]}}, {"c": "\\ud83d\\ude00"}]'
    first, end = decode_object(text, 1)
    assert (first, text[end]) == ({"a": {"b": [1, 2.5, None]}}, ",")
    assert decode_object(text, end + 2) == ({"c": "\U0001f600"}, len(text) - 1)
