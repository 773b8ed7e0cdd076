"""`python -m edge serve`: the offload AI server (HTTPS, per-device tokens, the one pipeline)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from edge.errors import ConfigError
from edge.runtime import DEFAULT_BACKEND

_LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge.offload.limits import Limits
    from edge.offload.tokens import default_token_file

    limits = Limits()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default %(default)s)")
    parser.add_argument("--port", type=int, default=8443, help="TCP port; 0 picks a free one and logs it (default %(default)s)")
    parser.add_argument("--cert", type=Path, help="PEM certificate (chain) for HTTPS; required unless --insecure-http")
    parser.add_argument("--key", type=Path, help="PEM private key of --cert")
    parser.add_argument("--insecure-http", action="store_true", help="serve plaintext HTTP (lab only: tokens and faces travel unencrypted)")
    parser.add_argument("--tokens", type=Path, default=None, help=f"token file written by `python -m edge token add` (default {default_token_file()})")
    parser.add_argument("--model", type=Path, default=None, help="expression model sidecar JSON (default: models/expression.json)")
    parser.add_argument("--backend", choices=("tflite", "onnx"), default=DEFAULT_BACKEND, help="expression-model runtime (default %(default)s)")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="fp32", help="expression model variant; the server can afford fp32 (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: one fewer than the cores, at most 2)")
    parser.add_argument("--max-faces", type=int, default=4, help="most faces read per image (default %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes, help="larger bodies get 413 (default %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=limits.max_pixels, help="width×height from the image header above this gets 400, before decoding (default %(default)s)")
    parser.add_argument("--rate", type=float, default=limits.rate_per_s, help="sustained requests/s per token; more get 429 (default %(default)s)")
    parser.add_argument("--burst", type=int, default=limits.burst, help="requests per token allowed at once before --rate applies (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=limits.timeout_s, help="seconds a request may take, upload and queueing included; then 503 (default %(default)s)")
    parser.add_argument("--max-queue", type=int, default=limits.max_queue, help="requests waiting for the single inference worker beyond this get 503 (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    from edge.offload.limits import Limits
    from edge.offload.server import Analyzer, make_app, serve
    from edge.offload.tls import server_context
    from edge.offload.tokens import TokenStore, default_token_file
    from edge.pipeline import Pipeline
    from edge.vision.expression import DEFAULT_SIDECAR

    if args.insecure_http:
        if args.cert or args.key:
            raise ConfigError("--insecure-http with --cert/--key: choose one")
        ssl_context = None
        _LOGGER.warning("serving PLAINTEXT HTTP (--insecure-http): bearer tokens and faces can be read on the network")
    elif not (args.cert and args.key):
        raise ConfigError(
            "HTTPS needs --cert and --key (make a self-signed pair: openssl req -x509 -newkey ec "
            "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 -keyout key.pem -out cert.pem "
            "-subj /CN=glasses-server -addext subjectAltName=IP:192.168.1.20); --insecure-http serves plaintext"
        )
    else:
        ssl_context = server_context(args.cert, args.key)
    tokens = TokenStore(args.tokens or default_token_file())
    if not tokens.hashes:
        raise ConfigError(f"{tokens.path}: no device tokens; add one with `python -m edge token add NAME`")
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_pixels=args.max_pixels,
        rate_per_s=args.rate,
        burst=args.burst,
        timeout_s=args.timeout,
        max_queue=args.max_queue,
    )
    with Pipeline(
        model=args.model or DEFAULT_SIDECAR, backend=args.backend, threads=args.threads, max_faces=args.max_faces, precision=args.precision
    ) as pipeline:
        analyzer = Analyzer(pipeline)
        try:
            _LOGGER.info("%d device token(s) from %s; model %s; inference serialised on one worker", len(tokens.hashes), tokens.path, pipeline.expression.variant)
            asyncio.run(serve(make_app(analyzer, tokens, limits), args.host, args.port, ssl_context))
        finally:
            analyzer.close()
    return 0
