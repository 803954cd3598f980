"""rescore_matching.py: the folded head, the clips each record holds as scoring enumerates them, and the
strings read from the embeddings' buffers. Matching records with embeddings end to end, and refusing
what does not match, is tested through rescore_file in tests/test_rescore.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers.media import clip_record
from video_aesthetics.config import ScoringConfig
from video_aesthetics.rescore_matching import load_affine_head


def test_the_folded_head_is_the_head(head_file: Path) -> None:
    import torch

    from video_aesthetics.head import load_head

    head = load_affine_head(str(head_file), 768)
    module = load_head(head_file).module
    vectors = torch.nn.functional.normalize(torch.randn(64, 768, generator=torch.Generator().manual_seed(3)), dim=-1)
    with torch.inference_mode():
        expected = module.double()(vectors.double()).squeeze(-1).numpy()
    assert abs(vectors.double().numpy() @ head.weight + head.bias - expected).max() < 1e-12


@pytest.mark.parametrize("whole_video", [False, True])
def test_rescores_samples_are_the_scoring_runs(whole_video: bool) -> None:
    """samples_of without paths (rescore's) numbers and classifies clips exactly as with them."""
    from video_aesthetics.records import samples_of

    records: list[dict[str, Any]] = [
        clip_record("a.mp4", ["a_0", "", "../up", "x/y", "ok"]),
        {"video": ["a.mp4"], "video_clips": [{"id": "bare"}, "text", 3, None, {"id": None}]},
        {"video": ["one.mp4", "two.mp4"], "video_clips": {"clips": [{"id": "x"}, "y"]}},
        {"video": "..", "video_clips": {"clips": [{"id": "x"}]}},
        {"video": "C:\\videos\\win.mp4", "video_clips": {"clips": [{"id": "w"}]}},
        {"video": "http://host/v.mp4", "video_clips": {"clips": [{"id": "u"}]}},
        {"video": "nul\x00.mp4"},
        {"video": 7},
        {"video": None, "video_clips": {"clips": [{"id": "x"}]}},
        {"caption": "nothing"},
        {"video": ["v.mp4"], "video_clips": "not clips"},
    ]
    config = ScoringConfig(video_clips_key="" if whole_video else "video_clips")
    seq = 0
    for number, record in enumerate(records):
        expected = samples_of(record, number, config, seq)
        got = samples_of(record, number, config, seq, paths=False)
        assert [(s.seq, s.record, s.clip, s.error) for s in got] == [
            (s.seq, s.record, s.clip, s.error) for s in expected
        ], record
        seq += len(expected)


def test_strings_gathered_from_the_buffers_are_pyarrows_take() -> None:
    import numpy as np
    import pyarrow as pa

    from video_aesthetics.rescore_matching import _strings_at

    # Two chunks, one a slice (an offset into its buffers), with empty and non-ASCII strings; and one with a null.
    plain = pa.chunked_array([pa.array(["a", "", "vidéo", "b"]).slice(1), pa.array(["", "", "xyz", "ü", "q"])])
    nulls = pa.chunked_array([pa.array(["a", None, "c"]), pa.array(["d"])])
    for column in (plain, nulls):
        for every in ([], [0], [1, 2], [0, 2, 3, 4, 6], list(range(len(column)))):
            rows = [i for i in every if i < len(column)]
            expected = [column[i].as_py() for i in rows]
            assert _strings_at(column, np.array(rows, np.int64)) == expected, rows
    assert _strings_at(pa.chunked_array([pa.array(["", ""])]), np.array([0, 1])) == ["", ""]
