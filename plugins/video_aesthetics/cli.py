"""``video-aesthetics score``: JSONL in, JSONL out, one JSON line of counts on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from video_aesthetics.config import DEVICES, PARAM_NAMES, REDUCTIONS, ScoringConfig
from video_aesthetics.errors import ConfigError, VideoAestheticsError

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
    score.add_argument(
        "--figure-root",
        metavar="DIR",
        default=None,
        help="root of the extracted frames: <DIR>/<video stem>/<clip id>/img/*.jpg "
        "(required unless --video-clips-key is empty)",
    )
    score.add_argument(
        "--clip-model",
        default=_DEFAULTS.clip_model,
        help="ViT-L/14 (OpenAI names), an open_clip name[:tag], hf-hub:org/repo, a checkpoint "
        "file, NAME:/path/to/checkpoint or a directory with open_clip_config.json",
    )
    score.add_argument(
        "--mlp-checkpoint",
        default=None,
        help="aesthetic head weights (.pth or .safetensors) in LAION's layout; "
        "default: the official sac+logos+ava1-l14-linearMSE.pth from the cache",
    )
    score.add_argument(
        "--load-num",
        type=int,
        default=_DEFAULTS.load_num,
        help="frames per clip, evenly spaced over its extracted frames",
    )
    score.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="clips per forward batch")
    score.add_argument(
        "--num-workers",
        type=int,
        default=_DEFAULTS.num_workers,
        help="decoding worker processes (0 decodes in the main process)",
    )
    score.add_argument("--device", default=_DEFAULTS.device, help=f"one of {', '.join(DEVICES)} or cuda:N")
    score.add_argument(
        "--reduction", choices=REDUCTIONS, default=_DEFAULTS.reduction, help="how frame scores make a clip score"
    )
    score.add_argument("--input-video-key", default=_DEFAULTS.input_video_key, help="field holding the video path")
    score.add_argument(
        "--video-clips-key",
        default=_DEFAULTS.video_clips_key,
        help='field holding the clips; "" scores each record\'s whole video instead',
    )
    score.add_argument(
        "--output-key", default=None, help="field the scored clips go to (default: the same as --video-clips-key)"
    )
    score.add_argument(
        "--frame-scores", action="store_true", help="also write each clip's per-frame scores as aesthetic_frame_scores"
    )
    score.add_argument(
        "--skip-bad-records", action="store_true", help="send malformed lines to a rejects file instead of stopping"
    )
    score.add_argument(
        "--rejects",
        metavar="PATH",
        default=None,
        help="rejects file for --skip-bad-records (default: OUT.rejects.jsonl)",
    )
    score.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="score with N processes (one per GPU; gloo processes on CPU); "
        "under torchrun the launcher's world size is used",
    )
    score.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="verbosity of the progress and diagnostics on stderr",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> ScoringConfig:
    params = {name: getattr(args, name) for name in PARAM_NAMES}
    if args.figure_root is None and args.video_clips_key:
        raise ConfigError(
            "--figure-root is required to score clips: pass the folder holding "
            "<video stem>/<clip id>/img/ frame folders"
        )
    return ScoringConfig.from_params(params)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
        from video_aesthetics.runner import score_file

        stats = score_file(args.input, args.output, config, rejects_path=args.rejects, nproc=args.nproc)
    except VideoAestheticsError as err:
        print(f"video-aesthetics: error: {err}", file=sys.stderr)
        return 2
    if stats is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print(stats.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
