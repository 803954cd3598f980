"""The score report: statistics against numpy, thumbnails of real frames, a page that needs no network, flat memory."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers.bait import fake_ghostscript, path_with, write_eps, write_png_bomb
from helpers.media import clip_record, link_frames, read_jsonl, write_frames, write_jsonl, write_video
from video_aesthetics import cli
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.provenance import OFFICIAL_HEAD_SHA256
from video_aesthetics.records import samples_of
from video_aesthetics.report import (
    PERCENTILES,
    ReportBuilder,
    headline,
    render_html,
    sample_count,
    summarise,
    summarise_file,
    write_report,
)
from video_aesthetics.thumbnails import thumbnail

POINTS = [p for _, p in PERCENTILES]


class Page(HTMLParser):
    """Every start tag with its attributes, and which section (id) it is in."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, str | None, dict[str, str | None]]] = []
        self.section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section":
            self.section = found.get("id")
        self.tags.append((tag, self.section, found))

    def images(self, section: str) -> list[dict[str, str | None]]:
        return [attrs for tag, where, attrs in self.tags if tag == "img" and where == section]


def _synthetic(rng: np.random.Generator, records: int = 400) -> tuple[list[Any], dict[str, Any]]:
    """Scored records of every kind, and what they hold, worked out apart from the library."""
    out: list[Any] = []
    scores: list[float] = []
    clips: list[dict[str, Any]] = []  # every scored clip, in file order: id, score, filtered-before
    errors: dict[str, int] = {}
    per_record: dict[int, list[float]] = {}
    total_clips = passthrough = 0
    for r in range(records):
        kind = r % 25
        if kind == 7:
            out.append({"caption": "no video: passes through", "n": r})
            passthrough += 1
            continue
        if kind == 11:
            out.append({"video": [f"v/v{r}.mp4"], "video_clips": {"clips": "not a list"}})
            passthrough += 1
            continue
        record_clips: list[Any] = []
        for c in range(int(rng.integers(1, 7))):
            clip: Any = {"id": f"v{r}_{c}", "frame_start": c}
            roll = rng.random()
            if roll < 0.05:
                clip.update(aesthetic_score=None, aesthetic_error="no_frames")
                errors["no_frames"] = errors.get("no_frames", 0) + 1
            elif roll < 0.07:
                clip.update(aesthetic_score=None, aesthetic_error="corrupt_frames")
                errors["corrupt_frames"] = errors.get("corrupt_frames", 0) + 1
            elif roll < 0.08:
                clip = "not a clip"
                errors["invalid_clip"] = errors.get("invalid_clip", 0) + 1
            else:
                score = float(np.clip(rng.normal(5.2, 1.1), 0.5, 9.5))
                clip["aesthetic_score"] = score
                if roll > 0.97:
                    clip["filtered"] = False  # an earlier filter's mark
                scores.append(score)
                clips.append({"id": clip["id"], "score": score, "false_before": "filtered" in clip})
                per_record.setdefault(r, []).append(score)
            record_clips.append(clip)
            total_clips += 1
        out.append(clip_record(f"v/v{r}.mp4", [], caption=f"r{r}") | {"video_clips": {"clips": record_clips}})
    facts = {
        "scores": np.array(scores),
        "clips": clips,
        "errors": errors,
        "per_record": per_record,
        "total_clips": total_clips,
        "passthrough": passthrough,
        "records": records,
    }
    return out, facts


def test_statistics_match_numpy(tmp_path: Path) -> None:
    records, facts = _synthetic(np.random.default_rng(7))
    scores = facts["scores"]
    # A threshold equal to a score present: that clip passes (DataFlow-MM keeps score >= aes_min).
    aes_min, aes_max = float(np.sort(scores)[len(scores) // 3]), 8.0
    config = ScoringConfig(figure_root=str(tmp_path), aes_min=aes_min, aes_max=aes_max)
    summary = summarise(records, config, top=7, video_rows=5, rejected=3)
    json.dumps(summary, allow_nan=False)  # goes into the manifest as it is

    counts = summary["counts"]
    assert counts == {
        "records": facts["records"],
        "clips": facts["total_clips"],
        "scored": len(scores),
        "failed": facts["total_clips"] - len(scores),
        "passthrough": facts["passthrough"],
        "rejected": 3,
        "errors": dict(sorted(facts["errors"].items())),
    }
    stats = summary["scores"]
    assert stats["count"] == len(scores)
    assert stats["mean"] == pytest.approx(np.mean(scores), rel=1e-12)
    assert stats["std"] == pytest.approx(np.std(scores), rel=1e-9)
    assert (stats["min"], stats["max"]) == (scores.min(), scores.max())
    bound = stats["percentile_error"]
    assert bound <= 0.0005  # 2**-11 for scores over 0.5..9.5
    for (name, _), exact in zip(PERCENTILES, np.percentile(scores, POINTS), strict=True):
        assert abs(stats[name] - exact) <= bound, name
    # The plotted bars are numpy's histogram on the same edges, but for scores within a fine bin of an edge.
    edges = np.array(stats["histogram"]["edges"])
    expected_bars = np.histogram(scores, bins=edges)[0]
    near_an_edge = sum(int(np.any(np.abs(edges - s) <= 2 * bound)) for s in scores)
    assert sum(stats["histogram"]["counts"]) == len(scores)
    assert np.abs(np.array(stats["histogram"]["counts"]) - expected_bars).sum() <= 2 * near_an_edge

    passing = [c for c in facts["clips"] if aes_min <= c["score"] <= aes_max and not c["false_before"]]
    assert summary["filter"] == {
        "aes_min": aes_min,
        "aes_max": aes_max,
        "kept": len(passing),
        "filtered_out": facts["total_clips"] - len(passing),
    }
    assert any(c["score"] == aes_min for c in passing)

    order = sorted(range(len(facts["clips"])), key=lambda i: (-facts["clips"][i]["score"], i))
    assert [e["clip_id"] for e in summary["best"]] == [facts["clips"][i]["id"] for i in order[:7]]
    worst = sorted(range(len(facts["clips"])), key=lambda i: (facts["clips"][i]["score"], i))
    assert [e["clip_id"] for e in summary["worst"]] == [facts["clips"][i]["id"] for i in worst[:7]]
    assert summary["best"][0]["score"] == scores.max() and summary["worst"][0]["score"] == scores.min()

    means = {r: float(np.mean(v)) for r, v in facts["per_record"].items()}
    ranked = sorted(means, key=lambda r: (-means[r], r))
    shown = sorted(set(ranked[:5]) | set(ranked[-5:]), key=lambda r: (-means[r], r))
    table = summary["videos"]
    assert (table["count"], table["complete"]) == (facts["records"] - facts["passthrough"], False)
    assert [row["record"] for row in table["rows"]] == shown
    for row in table["rows"]:
        values = facts["per_record"][row["record"]]
        assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert (row["min"], row["max"], row["scored"]) == (min(values), max(values), len(values))
        assert row["video"] == f"v/v{row['record']}.mp4"

    failures = summary["failures"]
    assert {reason: info["count"] for reason, info in failures.items()} == facts["errors"]
    assert all(len(info["examples"]) == min(10, info["count"]) for info in failures.values())


def test_sample_count_agrees_with_samples_of(tmp_path: Path) -> None:
    records: list[Any] = [
        clip_record("a.mp4", ["a_0", "a_1"]),
        {"video": "a.mp4", "video_clips": [{"id": "x"}, "junk"]},
        {"video": ["a.mp4", "b.mp4"], "video_clips": {"clips": [{}]}},
        {"video": "", "video_clips": {"clips": [{}]}},
        {"video": "../../etc", "video_clips": {"clips": [{"id": "../x"}]}},
        {"video": "c.mp4", "video_clips": {"clips": []}},
        {"video": "c.mp4", "video_clips": None},
        {"video": 3, "video_clips": {"clips": [{}]}},
        {"video": {"path": "a.mp4"}, "video_clips": {"clips": [{}, 1]}},
        {"video": [], "video_clips": {"clips": [{}]}},
        {"video": None, "video_clips": {"clips": [{}]}},
        {"video": "http://example.com/a.mp4", "video_clips": {"clips": [{}]}},
        {"video": "pipe:0"},
        {"video": "a\x00b.mp4"},
        {"video": "C:\\videos\\a.mp4", "video_clips": {"clips": [{"id": ""}, {"id": None}]}},
        {"caption": "nothing"},
    ]
    for config in (ScoringConfig(figure_root=str(tmp_path)), ScoringConfig(video_clips_key="")):
        for number, record in enumerate(records):
            assert sample_count(record, config) == len(samples_of(record, number, config, 0)), record


def _frame_dataset(root: Path, scores: list[float]) -> tuple[Path, Path]:
    """A scored file whose clips have real JPEG frames (5 each, every one a different picture)."""
    figure_root = root / "frames"
    records = []
    for number, score in enumerate(scores):
        stem = f"video{number}"
        write_frames(figure_root, stem, f"{stem}_0", 5, seed=number, width=320, height=180)
        record = clip_record(f"/data/{stem}.mp4", [f"{stem}_0"])
        record["video_clips"]["clips"][0]["aesthetic_score"] = score
        records.append(record)
    return write_jsonl(root / "scored.jsonl", records), figure_root


def _decoded(uri: str | None) -> Image.Image:
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "JPEG"
    return image.convert("RGB")


def _difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b.resize(a.size), dtype=float)).mean())


def test_best_and_worst_clips_have_thumbnails_of_their_middle_scored_frame(tmp_path: Path) -> None:
    scores = [4.0, 6.5, 5.1, 3.2, 7.7, 5.5, 2.9, 6.0]
    scored, figure_root = _frame_dataset(tmp_path, scores)
    config = ScoringConfig(figure_root=str(figure_root), load_num=3)
    summary = summarise_file(scored, config, top=3)
    assert [e["clip_id"] for e in summary["best"]] == ["video4_0", "video1_0", "video7_0"]
    assert [e["clip_id"] for e in summary["worst"]] == ["video6_0", "video3_0", "video0_0"]
    # load_num 3 of 5 frames reads frames 0, 2 and 4: the middle one read is the third file.
    for entry in summary["best"] + summary["worst"]:
        assert Path(entry["frame"]).name == "frame_000050.jpg"
    page = Page(render_html(summary))
    for section, entries in (("best", summary["best"]), ("worst", summary["worst"])):
        images = page.images(section)
        assert [img["alt"] for img in images] == [e["clip_id"] for e in entries]
        for img, entry in zip(images, entries, strict=True):
            thumb = _decoded(img["src"])
            assert max(thumb.size) == 160 and thumb.size[0] / thumb.size[1] == pytest.approx(320 / 180, rel=0.02)
            frames = sorted(Path(entry["frame"]).parent.iterdir())
            with Image.open(frames[2]) as middle, Image.open(frames[0]) as first:
                assert _difference(thumb, middle.convert("RGB")) < 6 < _difference(thumb, first.convert("RGB"))


def test_the_page_needs_no_network_and_escapes_what_the_records_say(tmp_path: Path) -> None:
    scored, figure_root = _frame_dataset(tmp_path, [5.0, 6.0, 4.0])
    hostile = {
        "video": ["/data/<img src=x onerror=alert(1)>.mp4"],
        "video_clips": {
            "clips": [
                {"id": "</script><script>alert('id')</script>", "aesthetic_score": 9.0},
                {"id": "c2", "aesthetic_score": None, "aesthetic_error": "<b onmouseover=alert(2)>"},
            ]
        },
    }
    write_jsonl(scored, [*read_jsonl(scored), hostile])
    config = ScoringConfig(figure_root=str(figure_root), aes_min=4.5)
    model = {"clip": {"spec": "ViT-L-14", "files": {"w.pt": "ab" * 32}}, "head": {"sha256": "cd" * 32}}
    run = {"dag_id": "video_aesthetic_scoring", "partition": "2024-01-31", "run_id": "manual__1"}
    page_text = render_html(summarise_file(scored, config, model=model, run=run))
    page = Page(page_text)
    for tag, _, attrs in page.tags:
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, name, value)
        assert tag not in ("link", "iframe", "object", "embed", "base")
        if tag == "script":
            assert "src" not in attrs
    assert "http://" not in page_text and "https://" not in page_text
    assert "url(" not in page_text and "@import" not in page_text
    assert page_text.count("<script>") == 1  # the table sorter; nothing a record said
    assert "<script>alert" not in page_text and "<b onmouseover" not in page_text and "<img src=x" not in page_text
    # The histogram, its markers and the threshold are in the page itself.
    markers = [attrs["data-name"] for tag, _, attrs in page.tags if tag == "line" and "data-name" in attrs]
    assert sorted(markers) == sorted(["p5", "p25", "median", "p75", "p95", "mean", "aes_min"])
    assert any(tag == "svg" and attrs.get("id") == "histogram" for tag, _, attrs in page.tags)
    assert sum(1 for tag, section, _ in page.tags if tag == "rect" and section == "distribution") >= 3
    assert "2024-01-31" in page_text and "cd" * 32 in page_text and "ab" * 32 in page_text


def test_a_page_without_thumbnails_or_scores_still_renders(tmp_path: Path) -> None:
    scored = write_jsonl(
        tmp_path / "s.jsonl",
        [{"video": "gone.mp4", "video_clips": {"clips": [{"id": "g", "aesthetic_score": 5.0}, {"id": "h"}]}}],
    )
    summary = summarise_file(scored, ScoringConfig(figure_root=str(tmp_path / "no-frames")))
    assert summary["best"][0]["frame"] is None and summary["counts"]["errors"] == {"unscored": 1}
    assert "no frame" in render_html(summary)
    empty = summarise([], ScoringConfig())
    assert empty["scores"] is None and empty["best"] == [] and "No clip was scored" in render_html(empty)


def test_an_unscored_file_reports_every_clip_as_unscored(tmp_path: Path) -> None:
    records = [clip_record("a.mp4", ["a_0", "a_1"]), clip_record("b.mp4", ["b_0"])]
    summary = summarise(records, ScoringConfig(figure_root=str(tmp_path), output_key="scores"))
    assert summary["counts"]["errors"] == {"unscored": 3}
    assert [e["clip_id"] for e in summary["failures"]["unscored"]["examples"]] == ["a_0", "a_1", "b_0"]


def test_whole_video_report_has_thumbnails_from_the_videos(tmp_path: Path) -> None:
    records = []
    for number, score in enumerate([4.0, 6.0, None]):
        path = write_video(tmp_path / f"w{number}.mp4", frames=9, seed=number)
        record = {"video": str(path), "aesthetic_score": score}
        if score is None:
            record["aesthetic_error"] = "unreadable_video"
        records.append(record)
    records.append({"caption": "no video"})
    config = ScoringConfig(video_clips_key="", aes_min=5.0)
    summary = summarise(records, config, top=2)
    assert summary["unit"] == "video"
    assert summary["counts"] | {"errors": None} == {
        "records": 4,
        "clips": 3,
        "scored": 2,
        "failed": 1,
        "passthrough": 1,
        "rejected": None,
        "errors": None,
    }
    assert summary["filter"]["kept"] == 1
    assert [e["clip_id"] for e in summary["best"]] == ["w1", "w0"]
    page = Page(render_html(summary))
    assert len(page.images("best")) == 2 and all(_decoded(img["src"]) for img in page.images("best"))


def test_summary_is_deterministic_and_bounded(tmp_path: Path) -> None:
    records, _ = _synthetic(np.random.default_rng(3), records=200)
    config = ScoringConfig(figure_root=str(tmp_path))
    assert json.dumps(summarise(records, config)) == json.dumps(summarise(records, config))
    many_reasons = [
        {"video": "v.mp4", "video_clips": [{"id": f"c{i}", "aesthetic_error": f"reason {i} " + "x" * 1000}]}
        for i in range(200)
    ]
    summary = summarise(many_reasons, config)
    assert len(summary["counts"]["errors"]) == 33 and summary["counts"]["errors"]["other"] == 200 - 32
    assert all(len(reason) <= 300 for reason in summary["counts"]["errors"])
    with pytest.raises(ConfigError, match="top must be an integer from 1 to 500"):
        ReportBuilder(config, top=0)
    with pytest.raises(ConfigError, match="top must be"):
        ReportBuilder(config, top=10**9)


def test_write_report_is_atomic_and_refuses_a_folder(tmp_path: Path) -> None:
    scored, figure_root = _frame_dataset(tmp_path, [5.0])
    config = ScoringConfig(figure_root=str(figure_root))
    with pytest.raises(ConfigError, match="is a directory"):
        write_report(scored, tmp_path, config)
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "missing.jsonl", tmp_path / "r.html", config)
    assert not (tmp_path / "r.html").exists()
    summary = write_report(scored, tmp_path / "out" / "r.html", config)
    assert (tmp_path / "out" / "r.html").read_text().startswith("<!doctype html>")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["r.html"]
    assert headline(summary) == {"records": 1, "clips": 1, "scored": 1, "failed": 0, "median": 5.0, "kept": None}


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scored, figure_root = _frame_dataset(tmp_path, [3.0, 5.0, 7.0])
    info = tmp_path / "stats.json"
    info.write_text(json.dumps({"records": 3, "rejected": 2, "model": {"head": {"sha256": "ef" * 32}}}))
    out = tmp_path / "report.html"
    args = ["report", str(scored), "--figure-root", str(figure_root), "--output", str(out)]
    assert cli.main([*args, "--top", "2", "--aes-min", "5", "--run-info", str(info)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == {"report": str(out), "records": 3, "clips": 3, "scored": 3, "failed": 0, "median": 5.0, "kept": 2}
    text = out.read_text()
    assert "ef" * 32 in text and len(Page(text).images("best")) == 2
    before = scored.read_bytes()
    for bad, message in (
        (["--output", str(scored)], "would overwrite"),
        (["--top", "0"], "top must be an integer"),
        (["--aes-min", "nan"], "--aes-min must be a finite number"),
        (["--aes-min", "6", "--aes-max", "5"], "--aes-min (6.0) is above --aes-max (5.0)"),
        (["--run-info", str(tmp_path / "none.json")], "does not exist"),
        (["--run-info", str(scored)], "not readable JSON"),
    ):
        assert cli.main([*args, *bad]) == 2
        assert message in capsys.readouterr().err
    assert scored.read_bytes() == before
    assert cli.main(["report", str(scored), "--output", str(out)]) == 2
    assert "--figure-root is required" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "nope.jsonl"), "--figure-root", "x", "--output", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_command_skips_bad_lines_when_asked_and_warns_of_a_wrong_figure_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    scored, figure_root = _frame_dataset(tmp_path, [3.0, 5.0, 7.0])
    scored.write_bytes(scored.read_bytes() + b"{not json\n")
    out = tmp_path / "report.html"
    args = ["report", str(scored), "--figure-root", str(figure_root), "--output", str(out)]
    assert cli.main(args) == 2
    error = capsys.readouterr().err
    assert f"{scored}:4" in error and "--skip-bad-records" in error and not out.exists()
    assert cli.main([*args, "--skip-bad-records"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["records"] == 3
    wrong = ["report", str(scored), "--figure-root", str(tmp_path / "framez"), "--output", str(out)]
    with caplog.at_level(logging.WARNING):
        assert cli.main([*wrong, "--skip-bad-records"]) == 0
    assert any("framez is not a folder" in message and "no thumbnails" in message for message in caplog.messages)


def test_score_writes_the_report(tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "frames", "v", "v_0", 3, seed=1)
    write_frames(tmp_path / "frames", "v", "v_1", 3, seed=2)
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["v_0", "v_1", "v_missing"])])
    out, report = tmp_path / "out.jsonl", tmp_path / "report.html"
    args = ["score", "--input", str(source), "--output", str(out), "--figure-root", str(tmp_path / "frames")]
    args += ["--clip-model", model_args["clip_model"], "--mlp-checkpoint", model_args["mlp_checkpoint"]]
    args += ["--num-workers", "0", "--device", "cpu"]
    assert cli.main([*args, "--report", str(out)]) == 2
    assert "would overwrite" in capsys.readouterr().err and not out.exists()
    assert cli.main([*args, "--report", str(report)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["report"] == str(report) and stats["scored"] == 2
    text = report.read_text()
    page = Page(text)
    assert len(page.images("best")) == 2 and "no_frames" in text and model_args["mlp_checkpoint"] in text


@pytest.mark.slow
def test_memory_stays_flat_over_a_million_clips(tmp_path: Path) -> None:
    """Peak RSS growth of a fresh process summarising 1,000,000 clips, against what keeping every score would cost."""
    scored = tmp_path / "big.jsonl"
    rng = np.random.default_rng(0)
    with scored.open("w") as handle:
        for r in range(100_000):
            values = rng.normal(5, 1, 10)
            clips = [{"id": f"v{r}_{c}", "aesthetic_score": float(values[c])} for c in range(10)]
            if r % 100 == 0:  # every reason different: the reason list must stay bounded too
                clips[0] = {"id": f"v{r}_0", "aesthetic_score": None, "aesthetic_error": f"odd failure {r}"}
            handle.write(json.dumps({"video": [f"videos/v{r}.mp4"], "video_clips": {"clips": clips}}) + "\n")
    script = textwrap.dedent(
        f"""
        import json, resource
        import video_aesthetics.frames  # imported before measuring: the thumbnail step needs it
        from video_aesthetics.config import ScoringConfig
        from video_aesthetics.report import summarise_file

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        summary = summarise_file({str(scored)!r}, ScoringConfig(figure_root="/nonexistent"))
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"growth_kib": growth, "counts": summary["counts"], "rows": len(summary["videos"]["rows"])}}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["counts"]["clips"] == 1_000_000 and result["counts"]["failed"] == 1000
    assert len(result["counts"]["errors"]) == 33 and result["rows"] == 100
    # Keeping the million scores as Python floats alone would take 32 MB (measured: about 50 MB of RSS).
    assert result["growth_kib"] < 24 * 1024, result


# --- the report opens frames by the scorer's rules ----------------------------------------------------------


def _hostile_frames(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A figure root whose clips hide Ghostscript bait, a decompression bomb and a link out; (scored, root, secret)."""
    root, secret = tmp_path / "frames", tmp_path / "secret"
    eps_mid = write_frames(root, "v", "eps_mid", 5, seed=1)
    write_eps(eps_mid[2])  # the middle of the frames scoring reads (0, 2, 4): an EPS named frame_000050.jpg
    bomb_mid = write_frames(root, "v", "bomb_mid", 5, seed=2)
    bomb_mid[2].unlink()
    write_png_bomb(bomb_mid[2].with_suffix(".png"))
    for path in write_frames(root, "v", "all_bad", 3, seed=3):
        write_eps(path)
    write_frames(secret, "s", "linked", 3, seed=4)  # real frames, but outside figure_root
    (root / "s").symlink_to(secret / "s", target_is_directory=True)
    scores = {"eps_mid": 7.0, "bomb_mid": 6.0, "all_bad": 5.0, "linked": 4.0}
    records = [clip_record("v.mp4", ["eps_mid", "bomb_mid", "all_bad"]), clip_record("s.mp4", ["linked"])]
    for record in records:
        for clip in record["video_clips"]["clips"]:
            clip["aesthetic_score"] = scores[clip["id"]]
    return write_jsonl(tmp_path / "scored.jsonl", records), root, secret


def test_the_report_shows_only_frames_the_scorer_would_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scored, root, secret = _hostile_frames(tmp_path)
    summary = summarise_file(scored, ScoringConfig(figure_root=str(root), load_num=3), top=4)
    frames = {entry["clip_id"]: entry["frame"] for entry in summary["best"]}
    # The bait and the bomb are skipped for the nearest frame scoring read; nothing is shown for the rest.
    assert Path(frames["eps_mid"]).name == "frame_000000.jpg"
    assert Path(frames["bomb_mid"]).name == "frame_000000.jpg"
    assert frames["all_bad"] is None and frames["linked"] is None
    page = Page(render_html(summary))
    assert [img["alt"] for img in page.images("best")] == ["eps_mid", "bomb_mid"]
    # A summary naming a frame outside figure_root, or a bomb inside it, gets no thumbnail either.
    bomb = next((root / "v" / "bomb_mid" / "img").glob("*.png"))
    for forged in (str(secret / "s" / "linked" / "img" / "frame_000000.jpg"), str(bomb), str(root / "v" / "all_bad")):
        with caplog.at_level(logging.WARNING):
            assert thumbnail({**summary["best"][0], "frame": forged}, summary) is None
    assert any("outside figure_root" in message for message in caplog.messages)
    assert any("bounds of a video frame" in message for message in caplog.messages)


def test_a_frame_linked_inside_figure_root_is_shown_as_the_scorer_reads_it(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    originals = write_frames(root, "v", "original", 3, seed=5)
    copy = root / "v" / "dedup" / "img"
    link_frames(originals, copy)
    record = clip_record("v.mp4", ["dedup"])
    record["video_clips"]["clips"][0]["aesthetic_score"] = 5.0
    summary = summarise_file(write_jsonl(tmp_path / "s.jsonl", [record]), ScoringConfig(figure_root=str(root)), top=1)
    [entry] = summary["best"]
    assert entry["frame"] == str(copy / originals[1].name)
    assert thumbnail(entry, summary) is not None


def test_ghostscript_never_runs_for_a_frame_named_jpg(tmp_path: Path, model_args: dict) -> None:
    """Real processes with a fake `gs` first on PATH: Pillow on its own runs it; scoring and both reports do not."""
    scored, root, _ = _hostile_frames(tmp_path)
    folder, called = fake_ghostscript(tmp_path / "bin")
    env = path_with(folder)
    bait = str(root / "v" / "all_bad" / "img" / "frame_000000.jpg")
    control = subprocess.run(
        [sys.executable, "-c", f"from PIL import Image\ntry: Image.open({bait!r}).load()\nexcept Exception: pass"],
        env=env,
        timeout=120,
    )
    assert control.returncode == 0 and called.exists(), "the bait must make plain Pillow run gs"
    called.unlink()
    command = [sys.executable, "-m", "video_aesthetics"]
    report = subprocess.run(
        [*command, "report", str(scored), "--figure-root", str(root), "--output", str(tmp_path / "r.html")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    out = tmp_path / "out.jsonl"
    score = subprocess.run(
        [
            *command,
            *("score", "--input", str(scored), "--output", str(out), "--figure-root", str(root)),
            *("--clip-model", model_args["clip_model"], "--mlp-checkpoint", model_args["mlp_checkpoint"]),
            *("--device", "cpu", "--num-workers", "1", "--report", str(tmp_path / "s.html")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert score.returncode == 0, score.stderr
    assert not called.exists(), called.read_text()
    clips = {c["id"]: c for r in read_jsonl(out) for c in r["video_clips"]["clips"]}
    assert clips["all_bad"]["aesthetic_error"] == "corrupt_frames"
    assert clips["linked"]["aesthetic_error"] == "unsafe_path"
    assert clips["eps_mid"]["aesthetic_score"] is not None and clips["bomb_mid"]["aesthetic_score"] is not None
    page = Page((tmp_path / "s.html").read_text())
    assert sorted(img["alt"] for img in page.images("best")) == ["bomb_mid", "eps_mid"]


# --- any finite score makes a report ----------------------------------------------------------------------

MAX = sys.float_info.max
EXTREMES = {
    "1e17": [1e17, 5.0, 3.0],
    "1e17-alone": [1e17],
    "1e17-close": [1e17, 1e17 + 16, 1e17 + 32],  # 16 apart: adding a tick step to 1e17 changes nothing
    "plus-minus-1e308": [1e308, -1e308, 5.0],
    "float-max": [MAX, -MAX, MAX, -MAX],
    "all-max": [MAX, MAX],
    "denormals": [5e-324, 1e-320, 0.0, -5e-324],
    "huge-and-tiny": [1e-300, 1e300, -1e-310],
    "negative-huge": [-1e308, -1e308, -1e307],
}


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_reports_survive_any_finite_score(tmp_path: Path, name: str) -> None:
    from fractions import Fraction

    scores = EXTREMES[name]
    records = [{"video": "v.mp4", "video_clips": [{"id": f"c{i}", "aesthetic_score": s}]} for i, s in enumerate(scores)]
    summary = summarise(records, ScoringConfig(figure_root=str(tmp_path), aes_min=scores[0]))
    stats = summary["scores"]
    exact_mean = sum(map(Fraction, scores)) / len(scores)
    assert all(math.isfinite(stats[k]) for k in ("mean", "std", "min", "max", "median", "p5", "p95"))
    assert stats["mean"] == pytest.approx(float(exact_mean), rel=1e-12, abs=1e-300)
    assert stats["min"] == min(scores) and stats["max"] == max(scores)
    assert min(scores) <= stats["p5"] <= stats["median"] <= stats["p95"] <= max(scores)
    assert sum(stats["histogram"]["counts"]) == len(scores)
    assert all(math.isfinite(edge) for edge in stats["histogram"]["edges"])
    assert all(math.isfinite(row["mean"]) for row in summary["videos"]["rows"])
    page = render_html(summary)
    assert re.search(r"(?<![a-z])(nan|inf)(?![a-z])", page, re.IGNORECASE) is None
    assert len(page) < 500_000


# --- the report tells the truth about itself ----------------------------------------------------------------

OFFICIAL = {
    "clip": {
        "spec": "ViT-L/14",
        "architecture": "ViT-L-14",
        "source": "openai",
        "files": {"/cache/ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"},
    },
    "head": {"path": "/cache/sac+logos+ava1-l14-linearMSE.pth", "sha256": OFFICIAL_HEAD_SHA256},
}


def _banner(summary: dict[str, Any]) -> str | None:
    page = render_html(summary)
    start = page.find("id='provenance'")
    return None if start < 0 else page[start : page.index("</div>", start)]


def test_a_report_says_when_the_model_is_not_the_official_pair(tmp_path: Path, model_args: dict) -> None:
    records = [clip_record("v.mp4", ["c"])]
    records[0]["video_clips"]["clips"][0]["aesthetic_score"] = 5.0
    config = ScoringConfig(figure_root=str(tmp_path))
    assert _banner(summarise(records, config, model=OFFICIAL)) is None
    impostor_head = {**OFFICIAL, "head": {"path": "/x/sac+logos+ava1-l14-linearMSE.pth", "sha256": "00" * 32}}
    banner = _banner(summarise(records, config, model=impostor_head))
    assert banner is not None and "Not the official model" in banner and "00" * 32 in banner
    assert "aesthetic head is not LAION" in banner and "CLIP model" not in banner
    hub_copy = {**OFFICIAL, "clip": {**OFFICIAL["clip"], "files": {"/hub/open_clip_model.safetensors": "11" * 32}}}
    banner = _banner(summarise(records, config, model=hub_copy))
    assert banner is not None and "could not be verified" in banner and "11" * 32 in banner
    unknown = _banner(summarise(records, config))
    assert unknown is not None and "Model not recorded" in unknown
    # A real run of the tiny test model: the banner names the CLIP and the head file that scored it.
    write_frames(tmp_path / "frames", "v", "c", 2, seed=1)
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["c"])])
    args = ["score", "--input", str(source), "--output", str(tmp_path / "o.jsonl")]
    args += ["--figure-root", str(tmp_path / "frames"), "--clip-model", model_args["clip_model"]]
    args += ["--mlp-checkpoint", model_args["mlp_checkpoint"], "--device", "cpu", "--num-workers", "0"]
    assert cli.main([*args, "--report", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Not the official model" in page
    assert "not OpenAI&#x27;s ViT-L/14" in page and model_args["mlp_checkpoint"] in page


def test_the_precision_note_is_plain_words(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    records = [
        {"video": "v.mp4", "video_clips": [{"id": f"c{i}", "aesthetic_score": float(s)}]}
        for i, s in enumerate(rng.normal(5, 1, 300))
    ]
    page = render_html(summarise(records, ScoringConfig(figure_root=str(tmp_path))))
    note = page[page.index("<p class='note'>") : page.index("</p>", page.index("<p class='note'>"))]
    assert "e-1" not in note and "±" not in note and "exact to within" not in note
    assert "Each bar spans" in note and "exact at the precision shown" in note


def test_integers_no_float_holds_are_non_finite_scores_not_crashes(tmp_path: Path) -> None:
    """JSON integers have no size limit: 10**400 parses as a Python int that math.isfinite cannot take."""
    scored = tmp_path / "scored.jsonl"
    big = "1" + "0" * 400
    scored.write_text(
        '{"video": "v.mp4", "video_clips": [{"id": "a", "aesthetic_score": ' + big + '}, {"id": "b", '
        '"aesthetic_score": ' + str(2**1024) + '}, {"id": "c", "aesthetic_score": ' + str(2**1023) + "}]}\n"
    )
    summary = summarise_file(scored, ScoringConfig(figure_root=str(tmp_path), aes_min=1.0))
    assert summary["counts"]["errors"] == {"non_finite_score": 2} and summary["scores"]["max"] == float(2**1023)
    assert summary["filter"]["kept"] == 1
    assert "non_finite_score" in render_html(summary)
