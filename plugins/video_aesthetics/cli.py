"""``video-aesthetics score``: JSONL in, JSONL out, one JSON line of counts on stdout, progress on stderr.

``video-aesthetics report``: a scored JSONL file in, one self-contained HTML report out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from video_aesthetics import parameters
from video_aesthetics.config import PARAM_NAMES, REDUCTIONS, ScoringConfig
from video_aesthetics.errors import ConfigError, InputError, VideoAestheticsError
from video_aesthetics.stopping import Terminated, clear_stop, request_stop

log = logging.getLogger("video_aesthetics")

_DEFAULTS = ScoringConfig()


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it has none (None, False) or its help already says what it is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False) or "default:" in text:
            return text
        return super()._get_help_string(action)


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
        formatter_class=_DefaultsHelpFormatter,
    )
    score.add_argument("--input", required=True, metavar="IN.jsonl", help="input records, one JSON object per line")
    score.add_argument("--output", required=True, metavar="OUT.jsonl", help="output file, written atomically")
    # Every scoring parameter of the command, from its one declaration (video_aesthetics.parameters).
    for param in parameters.on_face("cli", command="score"):
        add_parameter(score, param)
    score.add_argument(
        "--rejects",
        metavar="PATH",
        default=None,
        help="rejects file for --skip-bad-records (default: OUT.rejects.jsonl)",
    )
    score.add_argument(
        "--report",
        metavar="REPORT.html",
        default=None,
        help="also write an HTML score report (distribution, best and worst clips, per-video table) there",
    )
    score.add_argument(
        "--embeddings",
        metavar="PATH.parquet",
        default=None,
        help="also write every scored frame's CLIP embedding (the vector the head sees) to this Parquet file, "
        "for search, deduplication or `video-aesthetics rescore`",
    )
    score.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="verbosity of the progress and diagnostics on stderr",
    )
    _add_report_parser(commands)
    _add_rescore_parser(commands)
    return parser


def _add_rescore_parser(commands: argparse._SubParsersAction) -> None:
    rescore = commands.add_parser(
        "rescore",
        help="score again from stored embeddings with another head, reduction or threshold (no frames, no CLIP)",
        description="Read a scored JSONL file and the embeddings `score --embeddings` wrote for it, and write what "
        "a full scoring run with this head, reduction and thresholds would write, without reading a frame or "
        "loading CLIP. Clips without embeddings keep their null and their reason. One JSON line of counts goes "
        "to stdout.",
        formatter_class=_DefaultsHelpFormatter,
    )
    rescore.add_argument("--input", required=True, metavar="SCORED.jsonl", help="the records the embeddings belong to")
    rescore.add_argument(
        "--embeddings", required=True, metavar="PATH", help="the Parquet file (or folder of them) `score` wrote"
    )
    rescore.add_argument("--output", required=True, metavar="OUT.jsonl", help="output file, written atomically")
    rescore.add_argument(
        "--mlp-checkpoint",
        default=None,
        help="aesthetic head weights (.pth or .safetensors) in LAION's layout; "
        "default: the official sac+logos+ava1-l14-linearMSE.pth from the cache",
    )
    rescore.add_argument(
        "--clip-model",
        default=None,
        help="refuse embeddings that another CLIP made: a weights file, a checkpoint folder, a SHA-256, or the "
        "name the scoring run was given",
    )
    rescore.add_argument(
        "--reduction", choices=REDUCTIONS, default=_DEFAULTS.reduction, help="how frame scores make a clip score"
    )
    _add_record_fields(rescore, whole_video='"" for whole-video embeddings')
    rescore.add_argument(
        "--frame-scores", action="store_true", help="also write each clip's per-frame scores as aesthetic_frame_scores"
    )
    rescore.add_argument(
        "--skip-bad-records", action="store_true", help="send malformed lines to a rejects file instead of stopping"
    )
    rescore.add_argument(
        "--rejects",
        metavar="PATH",
        default=None,
        help="rejects file for --skip-bad-records (default: OUT.rejects.jsonl)",
    )
    _add_filter_options(rescore)
    rescore.add_argument("--report", metavar="REPORT.html", default=None, help="also write an HTML score report there")
    rescore.add_argument(
        "--figure-root", metavar="DIR", default=None, help="root of the extracted frames, for the report's thumbnails"
    )
    rescore.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="verbosity on stderr"
    )


def _add_filter_options(parser: argparse.ArgumentParser, *, report: bool = False) -> None:
    if not report:  # rescore filters as score does
        for name in ("aes_min", "aes_max"):
            add_parameter(parser, parameters.BY_NAME[name])
        return
    low = "the report's lower threshold: clips scoring at least SCORE count as kept (the file is not changed)"
    high = "the report's upper threshold: clips scoring above SCORE count as filtered out"
    parser.add_argument("--aes-min", type=float, default=None, metavar="SCORE", help=low)
    parser.add_argument("--aes-max", type=float, default=None, metavar="SCORE", help=high)


def _add_report_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="write an HTML report of a scored JSONL file",
        description="Read the output of `score` once and write one self-contained HTML page: counts, the score "
        "histogram with percentiles and thresholds, thumbnails of the best and worst clips, clips without a "
        "score by reason, and a sortable per-video table. One JSON line of headline numbers goes to stdout.",
        formatter_class=_DefaultsHelpFormatter,
    )
    report.add_argument("scored", metavar="SCORED.jsonl", help="scored records, the output of `score`")
    report.add_argument("--output", required=True, metavar="REPORT.html", help="the report, written atomically")
    report.add_argument(
        "--figure-root",
        metavar="DIR",
        default=None,
        help="root of the extracted frames the clips were scored from, for the thumbnails "
        "(required unless --video-clips-key is empty)",
    )
    add_parameter(report, parameters.BY_NAME["report_top"])
    add_parameter(report, parameters.BY_NAME["video_root"])
    report.add_argument(
        "--skip-bad-records", action="store_true", help="leave malformed lines out of the report instead of stopping"
    )
    _add_filter_options(report, report=True)
    report.add_argument(
        "--load-num",
        type=int,
        default=_DEFAULTS.load_num,
        help="frames per clip used for scoring (thumbnails show the middle one)",
    )
    _add_record_fields(report, whole_video='"" for a whole-video scored file')
    report.add_argument(
        "--run-info",
        metavar="JSON",
        default=None,
        help="a JSON file with the model and counts to show: the line `score` printed, or a DAG run's _manifest.json",
    )
    report.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="verbosity on stderr"
    )


def add_parameter(parser: argparse.ArgumentParser, param: parameters.Parameter) -> None:
    """The option of one declared scoring parameter: its flag, type, default, closed choices and help."""
    options: dict[str, Any] = {"default": param.default_for("cli"), "help": as_flags(param.help)}
    if param.kind is bool:
        options["action"] = "store_true"
    else:
        if param.kind is not str:
            options["type"] = param.kind
        if param.choices is not None and not param.open_choices:
            options["choices"] = param.choices
        if param.metavar:
            options["metavar"] = param.metavar
    parser.add_argument(param.cli_flag, dest=param.name, **options)


def _add_record_fields(parser: argparse.ArgumentParser, *, whole_video: str) -> None:
    """The options that say where a record keeps its video and its clips: the same for scoring and reports."""
    parser.add_argument("--input-video-key", default=_DEFAULTS.input_video_key, help="field holding the video path")
    parser.add_argument(
        "--video-clips-key", default=_DEFAULTS.video_clips_key, help=f"field holding the clips; {whole_video}"
    )
    parser.add_argument(
        "--output-key", default=None, help="field holding the scored clips (default: the same as --video-clips-key)"
    )


def config_from_args(args: argparse.Namespace) -> ScoringConfig:
    params = {name: getattr(args, name) for name in PARAM_NAMES}
    if args.figure_root is None and args.video_clips_key:
        raise ConfigError(
            "--figure-root is required to score clips: pass the folder holding "
            "<video stem>/<clip id>/img/ frame folders"
        )
    config = ScoringConfig.from_params(params)
    return config


def _raise_on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, _frame: Any) -> None:
        request_stop(signum)

    return signal.signal(signal.SIGTERM, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    clear_stop()
    previous = _raise_on_sigterm()
    try:
        if args.command == "report":
            print(json.dumps(report_command(args)), flush=True)
            return 0
        if args.command == "rescore":
            from video_aesthetics.rescore import rescore_command

            print(json.dumps(rescore_command(args)), flush=True)
            return 0
        config = config_from_args(args)
        from video_aesthetics.report import ReportOutput
        from video_aesthetics.runner import score_file

        # The report is one more output of the run: checked with the others before the model loads,
        # published with them.
        stats = score_file(
            args.input,
            args.output,
            config,
            rejects_path=args.rejects,
            nproc=args.nproc,
            embeddings=_embeddings_output(args),
            report=ReportOutput(Path(args.report), {"input": args.input, "output": args.output})
            if args.report
            else None,
        )
    except VideoAestheticsError as err:
        print(f"video-aesthetics: error: {as_flags(str(err))}", file=sys.stderr)
        return 2
    except Terminated as stop:
        name = signal.Signals(stop.signum).name
        print(f"video-aesthetics: stopped by {name}; outputs not yet published were left as they were", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("video-aesthetics: interrupted; outputs not yet published were left as they were", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as err:
        # A disk that fills up or a folder that vanishes mid-run: the reason, not a traceback.
        print(f"video-aesthetics: error: {err}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        clear_stop()
    if stats is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print(json.dumps({**stats.as_dict(), "report": args.report}) if args.report else stats.to_json(), flush=True)
    return 0


def _embeddings_output(args: argparse.Namespace) -> Any:
    if not args.embeddings:
        if args.embeddings_dtype is not None:
            raise ConfigError(
                "--embeddings-dtype is the storage type of --embeddings, and no --embeddings was given: "
                "add --embeddings PATH.parquet, or drop --embeddings-dtype"
            )
        return None
    from video_aesthetics.embeddings import DEFAULT_DTYPE, EmbeddingsOutput

    return EmbeddingsOutput(Path(args.embeddings), args.embeddings_dtype or DEFAULT_DTYPE)


def as_flags(message: str) -> str:
    """An error message with the library's parameter names (load_num) as the command's flags (--load-num).

    Only names with an underscore: "device" or "decode" are also words of the messages' prose.
    """
    flags = {p.name: p.cli_flag for p in parameters.on_face("cli") if "_" in p.name or p.name == "nproc"}
    names = "|".join(sorted(flags, key=len, reverse=True))
    # Not before "=": "skip_bad_records=True" is the library's spelling, quoted beside the flag.
    return re.sub(rf"(?<![\w./<-])({names})(?![\w/>=-])", lambda m: flags[m.group(1)], message)


def report_command(args: argparse.Namespace) -> dict[str, Any]:
    """``video-aesthetics report``: write the report; returns its headline numbers."""
    from video_aesthetics.report import headline, write_report

    if args.figure_root is None and args.video_clips_key:
        raise ConfigError(
            "--figure-root is required for a report on clips: pass the folder the clips were scored from "
            "(<video stem>/<clip id>/img/ frame folders), which the thumbnails are made of"
        )
    check_report_path(args.output, args.scored, args.run_info)
    params = {
        "figure_root": args.figure_root,
        "video_root": args.video_root,
        "input_video_key": args.input_video_key,
        "video_clips_key": args.video_clips_key,
        "output_key": args.output_key,
        "load_num": args.load_num,
        "aes_min": args.aes_min,
        "aes_max": args.aes_max,
        "skip_bad_records": args.skip_bad_records,
    }
    config = ScoringConfig.from_params(params)
    if args.figure_root and not Path(args.figure_root).is_dir():
        log.warning("--figure-root %s is not a folder: the report will have no thumbnails", args.figure_root)
    summary = write_report(args.scored, args.output, config, top=args.report_top, **run_info(args.run_info))
    return {"report": args.output, **headline(summary)}


def check_report_path(report: str, scored: str, info: str | None = None) -> None:
    """The report must be a writable file that is neither the scored file nor the run info (outputs.check_outputs)."""
    from video_aesthetics.outputs import check_outputs

    check_outputs([("--output", report)], [("SCORED.jsonl", scored), ("--run-info", info)])


# A score line or a _manifest.json is kilobytes; anything near this is not one, and is not read into memory.
MAX_RUN_INFO_BYTES = 16 << 20


def run_info(path: str | None) -> dict[str, Any]:
    """model, run and rejected from ``--run-info``: the JSON line `score` printed, or a DAG run's _manifest.json."""
    if path is None:
        return {}
    try:
        data = json.loads(read_run_info(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InputError(
            f"--run-info {path} is not readable JSON ({err}); pass the line `score` printed or a _manifest.json"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"--run-info {path} holds {type(data).__name__}, not a JSON object")
    records = data.get("records")
    rejected = records.get("rejected") if isinstance(records, dict) else data.get("rejected")
    run = data.get("run")
    if not isinstance(run, dict):
        run = {key: data[key] for key in ("output", "rejects", "seconds", "clips_per_s") if key in data}
    model = data.get("model")
    return {
        "model": model if isinstance(model, dict) else None,
        "run": run,
        "rejected": rejected if isinstance(rejected, int) and not isinstance(rejected, bool) else None,
    }


def read_run_info(path: str) -> bytes:
    """The bytes of ``--run-info``: a regular file of at most MAX_RUN_INFO_BYTES, else InputError.

    Opened without blocking (O_NONBLOCK: a FIFO with no writer would wait forever) and checked with
    fstat on the open descriptor, so a FIFO, a device (/dev/zero) or a folder is refused before a
    byte is read, and a file swapped after a check is still the file checked.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"--run-info file {path} does not exist") from None
    except OSError as err:
        raise InputError(f"cannot read --run-info {path}: {err.strerror}; pass a JSON file") from None
    try:
        _check_run_info(path, os.fstat(fd))
        chunks, size = [], 0
        while size <= MAX_RUN_INFO_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise InputError(f"cannot read --run-info {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_RUN_INFO_BYTES:  # a file that grew after the check
        raise InputError(f"--run-info {path} is larger than {MAX_RUN_INFO_BYTES >> 20} MiB; pass the right file")
    return b"".join(chunks)


def _check_run_info(path: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"--run-info {path} is a folder; pass the JSON file `score` printed or a _manifest.json")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"--run-info {path} is not a regular file (a FIFO, socket or device); save the JSON to a file and pass that"
        )
    if info.st_size > MAX_RUN_INFO_BYTES:
        raise InputError(
            f"--run-info {path} holds {info.st_size:,} bytes, more than the {MAX_RUN_INFO_BYTES >> 20} MiB a score "
            "line or _manifest.json can be; pass the right file"
        )


if __name__ == "__main__":
    sys.exit(main())
