"""``video-aesthetics score``: JSONL in, JSONL out, one JSON line of counts on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from video_aesthetics.config import DEVICES, REDUCTIONS, ScoringConfig
from video_aesthetics.errors import VideoAestheticsError

log = logging.getLogger("video_aesthetics")

_DEFAULTS = ScoringConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="video-aesthetics",
        description="Score the aesthetics of video clips with a CLIP image encoder and LAION's aesthetic head.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser(
        "score",
        help="score every clip of a JSONL file",
        description="Read records from --input, write them to --output with aesthetic_score in every clip "
        "(null plus aesthetic_error when a clip cannot be scored). Progress goes to stderr; one JSON "
        "line of counts goes to stdout at the end.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    score.add_argument("--input", required=True, metavar="IN.jsonl", help="input records, one JSON object per line")
    score.add_argument("--output", required=True, metavar="OUT.jsonl", help="output file, written atomically")
    score.add_argument("--figure-root", metavar="DIR", default=None,
                       help="root of the extracted frames: <DIR>/<video stem>/<clip id>/img/*.jpg "
                       "(required unless --video-clips-key is empty)")
    score.add_argument("--clip-model", default=_DEFAULTS.clip_model,
                       help="ViT-L/14 (OpenAI names), an open_clip name[:tag], hf-hub:org/repo, a checkpoint "
                       "file, NAME:/path/to/checkpoint or a directory with open_clip_config.json")
    score.add_argument("--mlp-checkpoint", default=None,
                       help="aesthetic head weights (.pth or .safetensors) in LAION's layout; "
                       "default: the official sac+logos+ava1-l14-linearMSE.pth from the cache")
    score.add_argument("--load-num", type=int, default=_DEFAULTS.load_num,
                       help="frames per clip, evenly spaced over its extracted frames")
    score.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="clips per forward batch")
    score.add_argument("--num-workers", type=int, default=_DEFAULTS.num_workers,
                       help="decoding worker processes (0 decodes in the main process)")
    score.add_argument("--device", default=_DEFAULTS.device, help=f"one of {', '.join(DEVICES)} or cuda:N")
    score.add_argument("--reduction", choices=REDUCTIONS, default=_DEFAULTS.reduction,
                       help="how frame scores make a clip score")
    score.add_argument("--input-video-key", default=_DEFAULTS.input_video_key, help="field holding the video path")
    score.add_argument("--video-clips-key", default=_DEFAULTS.video_clips_key,
                       help='field holding the clips; "" scores each record\'s whole video instead')
    score.add_argument("--output-key", default=None,
                       help="field the scored clips go to (default: the same as --video-clips-key)")
    score.add_argument("--frame-scores", action="store_true",
                       help="also write each clip's per-frame scores as aesthetic_frame_scores")
    score.add_argument("--skip-bad-records", action="store_true",
                       help="send malformed lines to a rejects file instead of stopping")
    score.add_argument("--rejects", metavar="PATH", default=None,
                       help="rejects file for --skip-bad-records (default: OUT.rejects.jsonl)")
    score.add_argument("--nproc", type=int, default=None,
                       help="score with N processes (one per GPU; gloo processes on CPU); "
                       "under torchrun the launcher's world size is used")
    score.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="verbosity of the progress and diagnostics on stderr")
    return parser


def config_from_args(args: argparse.Namespace) -> ScoringConfig:
    whole_video = not args.video_clips_key
    if args.figure_root is None and not whole_video:
        raise VideoAestheticsError("--figure-root is required to score clips: pass the folder holding "
                                   "<video stem>/<clip id>/img/ frame folders")
    return ScoringConfig(
        figure_root=args.figure_root or _DEFAULTS.figure_root,
        input_video_key=args.input_video_key,
        video_clips_key=args.video_clips_key,
        clip_model=args.clip_model,
        mlp_checkpoint=args.mlp_checkpoint,
        load_num=args.load_num,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        output_key=args.output_key or args.video_clips_key or _DEFAULTS.output_key,
        device=args.device,
        reduction=args.reduction,
        frame_scores=args.frame_scores,
        skip_bad_records=args.skip_bad_records,
    ).validate()


def _distributed(nproc: int | None) -> bool:
    return (nproc is not None and nproc > 1) or int(os.environ.get("WORLD_SIZE", "1")) > 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
        if _distributed(args.nproc):
            from video_aesthetics import distributed

            stats = distributed.score_jsonl(args.input, args.output, config, nproc=args.nproc, rejects_path=args.rejects)
            if stats is None:  # a rank other than 0 under torchrun: rank 0 reports
                return 0
        else:
            from video_aesthetics.pipeline import score_jsonl

            stats = score_jsonl(args.input, args.output, config, rejects_path=args.rejects)
    except VideoAestheticsError as err:
        print(f"video-aesthetics: error: {err}", file=sys.stderr)
        return 2
    print(stats.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
