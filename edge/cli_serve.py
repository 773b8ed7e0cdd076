"""`python -m edge serve`: the offload AI server (HTTPS, per-device tokens, the one pipeline)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from edge.cli_config import add_config_arguments, config_from_args
from edge.errors import AudioError, ConfigError
from edge.config import VisionConfig
from edge.runtime import DEFAULT_BACKEND, DEVICES

_LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge.offload.limits import Limits
    from edge.offload.tokens import default_token_file

    limits = Limits()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = """\
API (every request but /healthz needs `Authorization: Bearer TOKEN`):
  POST /v1/analyze[?lowlight=auto|on|off&classes=7|5&speech=0|1&verbosity=terse|verbose]
       body: one JPEG or PNG (a face crop from the glasses, or a frame)
       -> the JSON of `python -m edge analyze --json` without "path"; with speech=1 also
          "speech": {"text", "format": "audio/wav", "sample_rate", "duration_s", "wav_base64"}
  GET  /healthz -> {"status": "ok", "queue", "workers", "speech"}
example:
  python -m edge token add glasses-anna        # prints the token once; give it to the glasses
  python -m edge serve --host 0.0.0.0 --cert cert.pem --key key.pem"""
    add_config_arguments(parser)  # [light]: the day/night and too-dark rules, as on the glasses
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default %(default)s)")
    parser.add_argument("--port", type=int, default=8443, help="TCP port; 0 picks a free one and logs it (default %(default)s)")
    parser.add_argument("--cert", type=Path, help="PEM certificate (chain) for HTTPS; required unless --insecure-http")
    parser.add_argument("--key", type=Path, help="PEM private key of --cert")
    parser.add_argument("--insecure-http", action="store_true", help="serve plaintext HTTP (lab only: tokens and faces travel unencrypted)")
    parser.add_argument("--tokens", type=Path, default=None, help=f"token file written by `python -m edge token add` (default {default_token_file()})")
    parser.add_argument("--model", type=Path, default=None, help="expression model sidecar JSON (default: models/expression.json)")
    parser.add_argument("--backend", choices=("tflite", "onnx"), default=DEFAULT_BACKEND, help="expression-model runtime (default %(default)s)")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="fp32", help="expression model variant; the server can afford fp32 (default %(default)s)")
    parser.add_argument(
        "--device", choices=DEVICES, default="auto",
        help="where the expression model runs: auto = an NVIDIA GPU when the installed onnxruntime has CUDA "
        "(onnxruntime-gpu), else the CPU; cuda = the GPU or refuse to start; cpu (default %(default)s; onnx backend only)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="inference threads per worker (default: one fewer than the cores, at most 2)")
    parser.add_argument("--workers", type=int, default=1, help="inference workers, each with its own loaded pipeline; requests run this many at once (default %(default)s)")
    parser.add_argument("--max-faces", type=int, default=VisionConfig.max_faces, help="most faces read per image (default %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes, help="larger bodies get 413 (default %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=limits.max_pixels, help="width×height from the image header above this gets 400, before decoding (default %(default)s)")
    parser.add_argument("--rate", type=float, default=limits.rate_per_s, help="sustained requests/s per token; more get 429 (default %(default)s)")
    parser.add_argument("--burst", type=int, default=limits.burst, help="requests per token allowed at once before --rate applies (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=limits.timeout_s, help="seconds a request may take, upload and queueing included; then 503 (default %(default)s)")
    parser.add_argument("--max-queue", type=int, default=limits.max_queue, help="requests waiting for an inference worker beyond this get 503 (default %(default)s)")
    parser.add_argument("--max-per-device", type=int, default=limits.max_per_device, help="requests one token may have queued or running at once; more get 429 (default %(default)s)")
    parser.add_argument("--idle-timeout", type=float, default=limits.idle_timeout_s, help="seconds a connection may stay idle or take to send its request header; then it is closed (default %(default)s)")
    parser.add_argument("--voice", type=Path, default=None, help="Piper voice (.onnx beside its .onnx.json) for ?speech=1 answers (default: espeak-ng)")
    parser.add_argument("--espeak-voice", default="en-us", help="espeak-ng voice when no Piper voice is given or it fails to load (default %(default)s)")
    parser.add_argument("--speech-rate", type=float, default=1.0, help="speaking speed multiplier 0.5-2.0 for ?speech=1 audio (default %(default)s)")
    parser.add_argument("--no-speech", action="store_true", help="load no voice; ?speech=1 requests get 400")


def main(args: argparse.Namespace) -> int:
    from edge import images
    from edge.offload.limits import Limits
    from edge.offload.server import Analyzer, make_app, serve
    from edge.offload.tls import server_context
    from edge.offload.tokens import TokenStore, default_token_file
    from edge.pipeline import Pipeline
    from edge.runtime import onnx_providers
    from edge.speech.phrases import all_phrases
    from edge.speech.tts import PhraseCache, load_voice
    from edge.vision.expression import DEFAULT_SIDECAR

    light = config_from_args(args).light  # a bad config file stops the server before it loads anything
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
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: use 1 or more")
    if args.max_per_device < 1:
        raise ConfigError(f"--max-per-device {args.max_per_device}: use 1 or more")
    if not 0 < args.max_pixels <= images.MAX_PIXELS:
        raise ConfigError(f"--max-pixels {args.max_pixels}: use 1 to {images.MAX_PIXELS:,} (the decoder's own limit)")
    if args.device != "cpu" and args.backend != "onnx":
        if args.device == "cuda":
            raise ConfigError("--device cuda needs --backend onnx (the TFLite runtime here runs on the CPU only)")
        args.device = "cpu"
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_pixels=args.max_pixels,
        rate_per_s=args.rate,
        burst=args.burst,
        timeout_s=args.timeout,
        max_queue=args.max_queue,
        max_per_device=args.max_per_device,
        idle_timeout_s=args.idle_timeout,
    )
    providers = onnx_providers(args.device) if args.backend == "onnx" else None
    with contextlib.ExitStack() as stack:
        pipelines = [
            stack.enter_context(
                Pipeline(
                    model=args.model or DEFAULT_SIDECAR, backend=args.backend, threads=args.threads,
                    max_faces=args.max_faces, precision=args.precision, providers=providers, light=light,
                )
            )  # fmt: skip
            for _ in range(args.workers)
        ]
        expression = pipelines[0].expression
        in_use = expression.providers or ("ai-edge-litert (CPU)",)
        if providers and providers[0] != in_use[0]:
            if args.device == "cuda":
                raise ConfigError(f"--device cuda: onnxruntime could not start {providers[0]} (runs on {in_use[0]}); check the CUDA/cuDNN libraries")
            _LOGGER.warning("%s did not start (onnxruntime fell back to %s): check the CUDA/cuDNN libraries", providers[0], in_use[0])
        _LOGGER.info(
            "expression model %s on %s (faces: BlazeFace + mesh on ai-edge-litert, CPU); %d worker(s)",
            expression.variant, in_use[0], args.workers,
        )  # fmt: skip
        if args.device == "auto" and in_use[0] == "CPUExecutionProvider":
            _LOGGER.info("no GPU execution provider in this onnxruntime: install onnxruntime-gpu (CUDA) to use an NVIDIA GPU")
        speech = None
        if not args.no_speech:
            try:
                voice = stack.enter_context(load_voice(args.voice, args.espeak_voice))
            except AudioError as exc:
                raise ConfigError(f"{exc}; or start the server with --no-speech (then ?speech=1 gets 400)") from None
            speech = PhraseCache(voice, rate=args.speech_rate)
        analyzer = Analyzer(pipelines, speech=speech, light=light)
        stack.callback(analyzer.close)
        analyzer.warm_speech(all_phrases("verbose", classes=None))  # before listening: /healthz "ok" means warm; either class set
        _LOGGER.info("%d device token(s) from %s", len(tokens.hashes), tokens.path)
        asyncio.run(serve(make_app(analyzer, tokens, limits), args.host, args.port, ssl_context, idle_timeout_s=limits.idle_timeout_s))
    return 0
