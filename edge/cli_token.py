"""`python -m edge token add|remove|list`: per-device bearer tokens for `python -m edge serve`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge.offload.tokens import default_token_file

    parser.add_argument("action", choices=("add", "remove", "list"), help="add: print a new token once (only its hash is kept); remove; list names")
    parser.add_argument("name", nargs="?", help="device name, e.g. glasses-anna (add, remove)")
    parser.add_argument("--tokens", type=Path, default=None, help=f"token file (default {default_token_file()})")


def main(args: argparse.Namespace) -> int:
    from edge.errors import ConfigError
    from edge.offload.tokens import TokenStore, default_token_file

    store = TokenStore(args.tokens or default_token_file())
    if args.action == "list":
        for name in sorted(store.hashes):
            print(name)
        if not store.hashes:
            print(f"no device tokens in {store.path}; add one with `python -m edge token add NAME`", file=sys.stderr)
        return 0
    if not args.name:
        raise ConfigError(f"token {args.action} needs a NAME, e.g. `python -m edge token {args.action} glasses-anna`")
    if args.action == "remove":
        if not store.remove(args.name):
            print(f"error: no token named {args.name!r} in {store.path}", file=sys.stderr)
            return 1
        print(f"removed {args.name}; a running server refuses its token from the next request", file=sys.stderr)
        return 0
    token = store.add(args.name)
    print(token)
    print(
        f"token for {args.name} stored hashed in {store.path}; it is shown only now: put it in the glasses' "
        "offload.token_file (mode 600)",
        file=sys.stderr,
    )
    return 0
