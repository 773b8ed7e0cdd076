"""`python -m edge say TEXT` — speak text through the same voice, cache and sink the glasses use.

The speech is set up exactly as `run` sets it up (`edge.app.open_speech`): the same config file,
env and `--set`, the same voice, and with no sound card the same WAV file. The flags below override
single [speech] keys. Useful to check a voice, a speaking rate or the earphone jack without a camera:

    python -m edge say "looks happy" --sink alsa:plughw:1,0 --rate 1.2
    python -m edge say "two people: looks happy, not sure" --voice voices/en_US-cori-medium.onnx --sink wav:/tmp/say.wav
"""

from __future__ import annotations

import argparse
import logging
import time

from edge.cli_config import add_config_arguments, config_from_args

_LOGGER = logging.getLogger(__name__)

_SPEECH_FLAGS = {"voice": "speech.voice", "espeak_voice": "speech.espeak_voice", "sink": "speech.sink",
                 "rate": "speech.rate", "volume": "speech.volume", "cache_dir": "speech.cache_dir"}
"""Flag → the config key it overrides; a flag left out keeps the configured value."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("text", nargs="+", help="what to say (several words are joined with spaces)")
    parser.add_argument("--voice", metavar="PATH",
                        help="Piper voice .onnx (its .onnx.json beside it); default speech.voice, else espeak-ng")
    parser.add_argument("--espeak-voice", metavar="NAME", help="espeak-ng voice (default: speech.espeak_voice)")
    parser.add_argument("--sink", metavar="ENDPOINT",
                        help="alsa:DEVICE, wav:/path/file.wav, wav:/folder/ or null: (default: speech.sink; "
                             "alsa: with no sound card writes app.state_dir/last_speech.wav, as run does)")
    parser.add_argument("--rate", type=float, help="speaking speed 0.5-2.0 (default: speech.rate)")
    parser.add_argument("--volume", type=float, help="gain 0.0-1.0 (default: speech.volume)")
    parser.add_argument("--cache-dir", metavar="DIR", help="phrase cache folder (default: speech.cache_dir)")
    parser.add_argument("--earcon", action="store_true", help="play the capture tone first")


def main(args: argparse.Namespace) -> int:
    from edge.app import open_speech

    text = " ".join(args.text).strip()
    flags = {key: getattr(args, flag) for flag, key in _SPEECH_FLAGS.items() if getattr(args, flag) is not None}
    config = config_from_args(args, flags)
    with open_speech(config) as speech:
        sink = speech.sink
        started = time.perf_counter_ns()
        if args.earcon:
            sink.play(speech.earcon)
        sink.play(speech.cache.stream(text))
        first = (sink.first_audio_ns or started) - started
        _LOGGER.info("said %r with %s on %s: first audio after %.1f ms, done after %.1f ms", text,
                     speech.voice.voice_id, sink.endpoint, first / 1e6, (time.perf_counter_ns() - started) / 1e6)
    return 0
