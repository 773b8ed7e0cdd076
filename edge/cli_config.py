"""`python -m edge check-config` — print the effective configuration as TOML, or the error (exit 2)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config PATH` and repeatable `--set SECTION.KEY=VALUE`, shared by every command that reads config."""
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: /etc/glasses/config.toml when present)"
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key, e.g. --set speech.verbosity=verbose (repeatable; wins over file and env)",
    )


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None):
    """Load the config named by the flags; `extra` overrides (from a command's own flags) win last."""
    from edge.config import load_config, parse_assignment

    overrides: dict[str, Any] = dict(parse_assignment(s) for s in args.settings)
    overrides.update(extra or {})
    return load_config(args.config, overrides=overrides)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--no-comments", action="store_true", help="print keys and values only")


def main(args: argparse.Namespace) -> int:
    from edge.config import to_toml

    config = config_from_args(args)  # ConfigError → "error: …", exit 2 (edge.__main__)
    sys.stdout.write(to_toml(config, comments=not args.no_comments))
    return 0
