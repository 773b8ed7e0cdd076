"""`python -m edge COMMAND …` — one entry point; each command lives in its own module.

Every command module provides `add_arguments(parser)` and `main(args) -> int`; they are imported
only when their command is chosen, so `analyze` never pays for the audio stack and `run` never
pays for the benchmark plotting.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge.errors import EdgeError

_LOGGER = logging.getLogger(__name__)

COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("edge.cli_analyze", "read the expression of every face in images (JSON Lines with --json)"),
    "say": ("edge.cli_say", "speak text with the glasses' voice, cache and audio sink"),
    "run": ("edge.cli_run", "the wearer loop: button → camera → expression → speech"),
    "bench": ("edge.cli_bench", "per-stage and press-to-first-audio latency, p50/p95/p99 (--json, --plot)"),
    "check-config": ("edge.cli_config", "print the effective configuration as TOML, or the error (exit 2)"),
    "doctor": ("edge.cli_doctor", "check camera, button, lux, bridge, audio, voice, models, heat, disk; what to fix"),
    "serve": ("edge.cli_serve", "the offload AI server: HTTPS POST /v1/analyze with per-device tokens"),
    "token": ("edge.cli_token", "add/remove/list offload device tokens (printed once, stored hashed)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except EdgeError as exc:
        _LOGGER.debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
