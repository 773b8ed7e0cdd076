"""`python -m edge say TEXT` — speak text through the same voice, cache and sink the glasses use.

Useful to check a voice, a speaking rate or the earphone jack without a camera:

    python -m edge say "looks happy" --sink alsa:plughw:1,0 --rate 1.2
    python -m edge say "two people: looks happy, not sure" --voice voices/en_US-cori-medium.onnx --sink wav:/tmp/say.wav
"""

from __future__ import annotations

import argparse
import logging
import time

_LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="+", help="what to say (several words are joined with spaces)")
    parser.add_argument("--voice", metavar="PATH", default=None,
                        help="Piper voice .onnx (its .onnx.json beside it); without it, or if it fails, espeak-ng")
    parser.add_argument("--espeak-voice", metavar="NAME", default="en-us", help="espeak-ng voice (default: en-us)")
    parser.add_argument("--sink", metavar="ENDPOINT", default="alsa:default",
                        help="alsa:DEVICE, wav:/path/file.wav, wav:/folder/ or null: (default: alsa:default)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="speaking speed as a multiplier of the voice's own, 0.5-2.0 (default: 1.0)")
    parser.add_argument("--volume", type=float, default=1.0, help="gain 0.0-1.0 (default: 1.0)")
    parser.add_argument("--cache-dir", metavar="DIR", default=None, help="keep synthesised phrases here as WAV")
    parser.add_argument("--earcon", action="store_true", help="play the capture tone first")


def main(args: argparse.Namespace) -> int:
    from edge.speech.playback import earcon, open_sink
    from edge.speech.tts import PhraseCache, check_rate, check_volume, load_voice

    text = " ".join(args.text).strip()
    rate, volume = check_rate(args.rate), check_volume(args.volume)
    with open_sink(args.sink) as sink, load_voice(args.voice, args.espeak_voice) as voice:
        cache = PhraseCache(voice, rate=rate, volume=volume, cache_dir=args.cache_dir)
        started = time.perf_counter_ns()
        if args.earcon:
            sink.play(earcon(voice.sample_rate, volume=0.4 * volume))
        sink.play(cache.stream(text))
        first = (sink.first_audio_ns or started) - started
        _LOGGER.info("said %r with %s on %s: first audio after %.1f ms, done after %.1f ms", text, voice.voice_id,
                     sink.endpoint, first / 1e6, (time.perf_counter_ns() - started) / 1e6)
    return 0
