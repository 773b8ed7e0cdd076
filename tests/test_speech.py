"""edge.speech: what is said, how it is synthesised and cached, and where the audio goes."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import random
import shutil
import stat
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.bench import TEST_VOICE
from edge.errors import AudioError, ConfigError
from edge.results import LABELS, FaceResult, FrameResult, Position
from edge.speech import phrases
from edge.speech.phrases import Status, all_phrases, describe, split_fragments
from edge.speech.playback import AlsaSink, NullSink, WavSink, earcon, open_sink
from edge.speech.tts import (AudioChunk, AudioClip, EspeakTTS, PhraseCache, PiperTTS, Voice, check_rate,
                             load_voice)

REPO = Path(__file__).resolve().parent.parent
VOICE = TEST_VOICE  # the tone voice `edge bench` falls back to (edge/speech/voices/)
HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed (apt-get install espeak-ng)")


def face(label: str = "happy", clock: int = 12, distance_m: float = 1.0, x: float = 0.5, unsure: bool = False) -> FaceResult:
    return FaceResult(box=(0, 0, 10, 10), label=label, confidence=0.3 if unsure else 0.9, unsure=unsure,
                      scores={label: 0.9}, position=Position(clock=clock, distance_m=distance_m, x=x), fallback=False)


def frame(*faces: FaceResult) -> FrameResult:
    return FrameResult(faces=tuple(faces), lowlight=False)


class CountingVoice(Voice):
    """Wraps a real voice and counts synthesis calls, so cache tests can prove a hit did no work."""

    def __init__(self, inner: Voice) -> None:
        self.inner = inner
        self.voice_id = inner.voice_id
        self.sample_rate = inner.sample_rate
        self.calls: list[str] = []

    def synthesize(self, text: str, rate: float = 1.0, volume: float = 1.0) -> Iterator[AudioChunk]:
        self.calls.append(text)
        return self.inner.synthesize(text, rate, volume)


@pytest.fixture(scope="module")
def piper_voice() -> PiperTTS:
    return PiperTTS(VOICE)


# --- phrases -----------------------------------------------------------------------------------------

def test_no_face_and_too_dark() -> None:
    assert describe(frame()) == "no face"
    assert describe(frame(), too_dark=True) == "too dark"
    assert describe(frame(), "verbose") == "no face"
    assert describe(frame(face("sad")), too_dark=True) == "too dark"  # faces found, none readable (results.too_dark)


def test_one_face_terse_wording() -> None:
    said = {label: describe(frame(face(label))) for label in LABELS}
    assert said == {"angry": "looks angry", "disgust": "looks disgusted", "fear": "looks worried",
                    "happy": "looks happy", "sad": "looks sad", "surprise": "looks surprised",
                    "neutral": "looks calm"}
    assert describe(frame(face("happy", unsure=True))) == "not sure"


def test_two_faces_terse_left_to_right() -> None:
    right = face("neutral", unsure=True, x=0.8, clock=1)
    left = face("happy", x=0.2, clock=11)
    assert describe(frame(right, left)) == "two people: looks happy, not sure"


def test_three_faces_terse_and_verbose() -> None:
    faces = (face("happy", 11, 2.2, 0.1), face("sad", 12, 0.0, 0.5, unsure=True), face("surprise", 1, 0.5, 0.9))
    assert describe(frame(*faces)) == "three people: looks happy, not sure, looks surprised"
    assert describe(frame(*faces), "verbose") == (
        "three people: at 11 o'clock, about 2 metres, looks happy; at 12 o'clock, not sure; "
        "at 1 o'clock, very close, looks surprised")


def test_one_and_two_faces_verbose() -> None:
    assert describe(frame(face("fear", 12, 1.2)), "verbose") == "at 12 o'clock, about 1 metre, looks worried"
    two = frame(face("happy", 11, 2.0, 0.3), face("angry", 1, 9.0, 0.7, unsure=True))
    assert describe(two, "verbose") == (
        "two people: at 11 o'clock, about 2 metres, looks happy; at 1 o'clock, far away, not sure")


def test_many_faces_are_capped() -> None:
    faces = [face("happy", x=i / 10) for i in range(6)]
    assert describe(frame(*faces)) == "six people: looks happy, looks happy, looks happy, looks happy, and two more"
    assert describe(frame(*[face(x=i / 20) for i in range(12)])).startswith("many people: ")


def test_clock_wraps_and_bad_verbosity() -> None:
    assert phrases.clock_phrase(0) == "at 12 o'clock"
    assert phrases.clock_phrase(15) == "at 3 o'clock"
    with pytest.raises(ConfigError, match="chatty"):
        describe(frame(), "chatty")  # type: ignore[arg-type]


@pytest.mark.parametrize("verbosity", ["terse", "verbose"])
def test_every_description_is_built_from_listed_fragments(verbosity: str) -> None:
    known = set(all_phrases(verbosity))  # type: ignore[arg-type]
    rng = random.Random(7)
    for _ in range(300):
        faces = [face(rng.choice(LABELS), rng.randint(1, 12), rng.choice([0.0, 0.4, 1.0, 2.6, 4.9, 7.0]),
                      rng.random(), rng.random() < 0.3) for _ in range(rng.randint(0, 13))]
        text = describe(frame(*faces), verbosity, too_dark=rng.random() < 0.5)  # type: ignore[arg-type]
        assert set(split_fragments(text)) <= known, text


def test_all_phrases_lists() -> None:
    terse, verbose = all_phrases("terse"), all_phrases("verbose")
    assert len(terse) == len(set(terse))
    assert set(terse) < set(verbose)
    for expected in ("no face", "not sure", "looks happy", "two people", "camera lost", "camera back", "ready",
                     "offload unavailable", "continuous on", "continuous off", "too dark", "nothing to repeat"):
        assert expected in terse
    assert "about 2 metres" in verbose and "about 2 metres" not in terse
    assert "at 7 o'clock" in terse and "now smiling" in terse  # continuous mode's news names who changed
    assert str(Status.CAMERA_LOST) == "camera lost"


# --- synthesis -----------------------------------------------------------------------------------------

def test_piper_test_voice_speaks_non_silent_int16(piper_voice: PiperTTS) -> None:
    chunks = list(piper_voice.synthesize("looks happy"))
    assert len(chunks) == 1
    clip = chunks[0]
    assert clip.samples.dtype == np.int16 and clip.sample_rate == 16_000
    assert np.abs(clip.samples.astype(np.int32)).max() > 10_000
    assert piper_voice.voice_id.startswith("piper:edge-test-tone:")


def test_piper_length_grows_with_text_and_rate_and_volume_apply(piper_voice: PiperTTS) -> None:
    short = piper_voice.synthesize_clip("calm")
    long = piper_voice.synthesize_clip("two people: looks happy, not sure. Then a second sentence.")
    assert len(long.samples) > 3 * len(short.samples) > 0
    assert len(list(piper_voice.synthesize("One sentence. Two sentences."))) == 2
    fast = piper_voice.synthesize_clip("looks happy", rate=2.0)
    normal = piper_voice.synthesize_clip("looks happy")
    assert len(fast.samples) == pytest.approx(len(normal.samples) / 2, rel=0.05)
    quiet = piper_voice.synthesize_clip("looks happy", volume=0.5)
    assert np.abs(quiet.samples.astype(np.int32)).max() == pytest.approx(32767 / 2, rel=0.02)
    assert np.array_equal(piper_voice.synthesize_clip("looks happy").samples, normal.samples)


def test_rate_and_volume_ranges() -> None:
    assert check_rate(1.5) == 1.5
    with pytest.raises(ConfigError, match="0.5 to 2.0"):
        check_rate(175)
    with pytest.raises(ConfigError, match="volume"):
        PhraseCache(CountingVoice(PiperTTS(VOICE)), volume=1.5)


@pytest.mark.train
def test_committed_test_voice_matches_its_generator() -> None:
    pytest.importorskip("onnx", reason="onnx (requirements-train.txt) builds the test voice")
    spec = importlib.util.spec_from_file_location("make_test_voice", REPO / "tools" / "make_test_voice.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    model = tool.build_model()
    assert model == VOICE.read_bytes()
    assert tool.build_config(model) == Path(f"{VOICE}.json").read_bytes()


# --- phrase cache --------------------------------------------------------------------------------------

def test_cache_hit_returns_same_audio_without_synthesis(piper_voice: PiperTTS) -> None:
    voice = CountingVoice(piper_voice)
    cache = PhraseCache(voice, rate=1.0, volume=1.0, cache_dir=None)
    first = cache.get("looks happy")
    second = cache.get("looks happy")
    assert voice.calls == ["looks happy"]
    assert second is first
    assert np.array_equal(first.samples, piper_voice.synthesize_clip("looks happy").samples)
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert "looks happy" in cache and "looks sad" not in cache


def test_cache_key_includes_rate_volume_and_voice(piper_voice: PiperTTS) -> None:
    voice = CountingVoice(piper_voice)
    keys = {PhraseCache(voice, rate=r, volume=v).key("ready") for r, v in [(1.0, 1.0), (1.2, 1.0), (1.0, 0.8)]}
    assert len(keys) == 3
    other = CountingVoice(piper_voice)
    other.voice_id = "espeak-ng:en-us"
    assert PhraseCache(other).key("ready") not in keys


def test_disk_cache_survives_a_new_instance(piper_voice: PiperTTS, tmp_path: Path) -> None:
    first_voice = CountingVoice(piper_voice)
    original = PhraseCache(first_voice, cache_dir=tmp_path).get("camera lost")
    files = list(tmp_path.iterdir())
    assert [p.suffix for p in files] == [".wav"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o644

    second_voice = CountingVoice(piper_voice)
    again = PhraseCache(second_voice, cache_dir=tmp_path)
    clip = again.get("camera lost")
    assert second_voice.calls == []
    assert again.stats.disk_hits == 1
    assert clip.sample_rate == original.sample_rate and np.array_equal(clip.samples, original.samples)


def test_corrupt_disk_entry_is_resynthesised(piper_voice: PiperTTS, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    voice = CountingVoice(piper_voice)
    cache = PhraseCache(voice, cache_dir=tmp_path)
    (tmp_path / f"{cache.key('ready')}.wav").write_bytes(b"RIFF garbage")
    with caplog.at_level(logging.WARNING):
        clip = cache.get("ready")
    assert voice.calls == ["ready"] and len(clip.samples) > 0
    assert "unreadable" in caplog.text
    assert AudioClip.from_wav_bytes((tmp_path / f"{cache.key('ready')}.wav").read_bytes()).sample_rate == 16_000


def test_warm_then_every_description_is_a_hit(piper_voice: PiperTTS) -> None:
    voice = CountingVoice(piper_voice)
    cache = PhraseCache(voice)
    synthesised = cache.warm(all_phrases("verbose"))
    assert synthesised == len(all_phrases("verbose")) == len(voice.calls)
    assert cache.warm(all_phrases("terse")) == 0
    calls = len(voice.calls)
    text = describe(frame(face("happy", 11, 2.0, 0.2), face("sad", 1, 1.0, 0.8, unsure=True)), "verbose")
    clip = cache.compose(text)
    assert len(voice.calls) == calls
    parts = [cache.get(f) for f in split_fragments(text)]
    assert len(parts) == 7  # "two people" + 3 per face
    short, long = round(0.12 * clip.sample_rate), round(0.24 * clip.sample_rate)
    assert len(clip.samples) == sum(len(p.samples) for p in parts) + 4 * short + 2 * long
    start = len(parts[0].samples)
    assert not clip.samples[start:start + long].any() and clip.samples[start + long] == parts[1].samples[0]
    assert cache.compose("looks happy") is cache.get("looks happy")


def test_lru_keeps_pinned_phrases(piper_voice: PiperTTS) -> None:
    cache = PhraseCache(CountingVoice(piper_voice), max_items=2)
    cache.warm(["ready"])
    for text in ("one", "two", "three"):
        cache.get(text)
    assert "ready" in cache and "three" in cache and "two" in cache and "one" not in cache


def test_stream_yields_chunks_and_fills_cache(piper_voice: PiperTTS) -> None:
    voice = CountingVoice(piper_voice)
    cache = PhraseCache(voice)
    chunks = list(cache.stream("First sentence. Second sentence."))
    assert len(chunks) == 2
    assert list(cache.stream("First sentence. Second sentence.")) == [cache.get("First sentence. Second sentence.")]
    assert len(voice.calls) == 1


# --- playback ------------------------------------------------------------------------------------------

def test_wav_file_sink_writes_a_valid_wav(piper_voice: PiperTTS, tmp_path: Path) -> None:
    clip = piper_voice.synthesize_clip("looks happy")
    target = tmp_path / "sub" / "out.wav"
    with open_sink(f"wav:{target}") as sink:
        assert isinstance(sink, WavSink)
        sink.play(clip)
    with wave.open(str(target), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16_000)
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert np.array_equal(data, clip.samples)
    assert [p.name for p in target.parent.iterdir()] == ["out.wav"]


def test_wav_folder_sink_numbers_utterances(tmp_path: Path) -> None:
    with open_sink(f"wav:{tmp_path}/") as sink:
        sink.play(earcon())
        sink.play(earcon(16_000), block=False)
        assert sink.wait(timeout=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001.wav", "0002.wav"]
    with open_sink(f"wav:{tmp_path}") as sink:
        sink.play(earcon())
    assert (tmp_path / "0003.wav").is_file()


def test_null_sink_records_first_audio_time(piper_voice: PiperTTS) -> None:
    seen: list[int] = []
    sink = open_sink("null:", on_first_audio=seen.append)
    assert isinstance(sink, NullSink)
    cache = PhraseCache(piper_voice)
    before = time.perf_counter_ns()
    sink.play(cache.stream("looks happy. not sure."))
    after = time.perf_counter_ns()
    sink.close()
    sink.close()
    [record] = sink.records
    assert before < record.first_audio_ns <= record.finished_ns <= after
    assert seen == [record.first_audio_ns] and sink.first_audio_ns == record.first_audio_ns
    assert record.samples == len(cache.get("looks happy. not sure.").samples) and record.sample_rate == 16_000
    with pytest.raises(AudioError, match="closed"):
        sink.play(earcon())


def test_sink_resamples_mixed_rate_chunks() -> None:
    with NullSink() as sink:
        sink.play([earcon(16_000, duration_s=0.1), earcon(8_000, duration_s=0.1)])
    assert sink.records[0].sample_rate == 16_000
    assert sink.records[0].samples == 3_200


class GatedSink(NullSink):
    """A null sink whose writes wait for a gate: stands in for a speaker that is busy playing."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _write(self, samples: np.ndarray) -> None:
        self.entered.set()
        self.gate.wait()


def test_background_play_only_enqueues_and_keeps_order() -> None:
    sink = GatedSink()
    caller = threading.Thread(target=lambda: [sink.play(earcon(duration_s=d), block=False) for d in (0.1, 0.2, 0.3)])
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "play(block=False) waited for the speaker"
    assert sink.records == [] and sink.wait(timeout=0) is False
    sink.gate.set()
    assert sink.wait(timeout=30)
    assert [r.samples for r in sink.records] == [2205, 4410, 6615]
    sink.close()


def test_stop_drops_queued_utterances() -> None:
    sink = GatedSink()
    for text in ("first", "second", "third"):
        sink.play(AudioClip(np.ones(100, np.int16), 16_000, text), block=False)
    assert sink.entered.wait(timeout=30)
    sink.stop()
    sink.gate.set()
    assert sink.wait(timeout=30)
    assert [(r.text, r.stopped) for r in sink.records] == [("first", True)]
    sink.play(AudioClip(np.ones(100, np.int16), 16_000, "after"))
    assert sink.records[-1].text == "after" and not sink.records[-1].stopped
    sink.close()


def test_background_error_is_raised_by_wait(tmp_path: Path) -> None:
    aplay = _fake_aplay(tmp_path, "cat > /dev/null; exit 3")
    with AlsaSink("default", aplay=aplay) as sink:
        sink.play(earcon(), block=False)
        with pytest.raises(AudioError, match="exit 3"):
            sink.wait(timeout=30)
        assert sink.wait(timeout=30)


@pytest.mark.parametrize("endpoint", ["speaker", "bluetooth:headset", "wav:", "null:x", ""])
def test_bad_sink_string_is_a_config_error(endpoint: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_sink(endpoint)
    assert repr(endpoint) in str(info.value) and "alsa:DEVICE" in str(info.value) and "null:" in str(info.value)


def test_earcon_is_short_soft_and_faded() -> None:
    tone = earcon(22_050)
    assert tone.duration_s == pytest.approx(0.06, abs=1e-4)
    peak = np.abs(tone.samples.astype(np.int32)).max()
    assert 10_000 < peak < 32_767
    assert abs(int(tone.samples[0])) < 100 and abs(int(tone.samples[-1])) < 100


def _fake_aplay(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-aplay"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_alsa_sink_pipes_raw_pcm_to_aplay(tmp_path: Path) -> None:
    aplay = _fake_aplay(tmp_path, f'echo "$@" > {tmp_path}/args; cat > {tmp_path}/pcm')
    clip = earcon(22_050)
    with AlsaSink("plughw:1,0", aplay=aplay) as sink:
        sink.play(clip)
    assert (tmp_path / "args").read_text().split() == ["-q", "-D", "plughw:1,0", "-t", "raw", "-f", "S16_LE",
                                                        "-r", "22050", "-c", "1"]
    assert np.array_equal(np.frombuffer((tmp_path / "pcm").read_bytes(), dtype="<i2"), clip.samples)
    assert sink.first_audio_ns is not None


def test_alsa_sink_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="alsa-utils"):
        AlsaSink(aplay="no-such-aplay-here")
    aplay = _fake_aplay(tmp_path, 'cat > /dev/null; echo "audio open error: No such file or directory" >&2; exit 1')
    with AlsaSink("hw:9", aplay=aplay) as sink, pytest.raises(AudioError) as info:
        sink.play(earcon())
    assert "hw:9" in str(info.value) and "aplay -l" in str(info.value) and "audio open error" in str(info.value)


def test_stop_cuts_a_background_play(tmp_path: Path) -> None:
    aplay = _fake_aplay(tmp_path, "exec sleep 60")
    long_clip = AudioClip(np.ones(22_050 * 30, dtype=np.int16), 22_050, "long")
    sink = AlsaSink("default", aplay=aplay)
    sink.play(long_clip, block=False)
    sink.stop()
    assert sink.wait(timeout=30)
    sink.close()


def test_cli_say_writes_a_wav(tmp_path: Path) -> None:
    from edge import cli_say

    parser = argparse.ArgumentParser()
    cli_say.add_arguments(parser)
    out = tmp_path / "say.wav"
    args = parser.parse_args(["looks", "happy", "--voice", str(VOICE), "--sink", f"wav:{out}", "--rate", "2",
                              "--cache-dir", str(tmp_path / "cache")])
    assert cli_say.main(args) == 0
    with wave.open(str(out), "rb") as wav:
        assert wav.getframerate() == 16_000 and wav.getnframes() == len(PiperTTS(VOICE).synthesize_clip(
            "looks happy", rate=2.0).samples)


def test_cli_say_sets_up_speech_as_run_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#18 item 14: `say` reads the same config, picks the same voice and, with no sound card, falls back
    to the same WAV file as `run` (it used to fail there, default to another espeak voice, and had no --config)."""
    import edge.app as app_module
    import edge.speech.tts as tts_module
    from edge import cli_say
    from edge.config import Config

    monkeypatch.setattr(app_module, "has_sound_card", lambda: False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("GLASSES_SPEECH__VOICE", "GLASSES_SPEECH__SINK", "GLASSES_SPEECH__RATE", "GLASSES_APP__STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    parser = argparse.ArgumentParser()
    cli_say.add_arguments(parser)
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[speech]\nvoice = "{VOICE}"\nrate = 2.0\n')
    assert cli_say.main(parser.parse_args(["looks", "happy", "--config", str(config_file)])) == 0
    fallback = tmp_path / "state" / "glasses" / "last_speech.wav"  # where run writes with no sound card
    with wave.open(str(fallback), "rb") as wav:  # the configured voice at the configured rate
        assert wav.getframerate() == 16_000 and wav.getnframes() == len(PiperTTS(VOICE).synthesize_clip(
            "looks happy", rate=2.0).samples)

    chosen: list[tuple] = []
    real_load_voice = tts_module.load_voice
    monkeypatch.setattr(tts_module, "load_voice", lambda *a: chosen.append(a) or real_load_voice(VOICE))
    assert cli_say.main(parser.parse_args(["looks", "happy", "--config", str(tmp_path / "config.toml"),
                                           "--set", "speech.voice="])) == 0
    assert chosen == [(None, Config().speech.espeak_voice)]  # no Piper voice: run's espeak-ng voice


# --- espeak-ng and fallback ----------------------------------------------------------------------------

def test_no_tts_at_all_is_an_audio_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(AudioError, match="install it with `apt-get install espeak-ng`"):
        load_voice(None)
    with pytest.raises(AudioError, match="not found"):
        load_voice(tmp_path / "missing.onnx")


@needs_espeak
def test_espeak_synthesises_wav_from_stdout() -> None:
    voice = EspeakTTS("en-us")
    assert voice.command("hi", rate=1.0, volume=0.5)[1:8] == ["--stdout", "-s", "175", "-a", "50", "-v", "en-us"]
    chunks = list(voice.synthesize("looks happy. not sure."))
    assert len(chunks) == 2
    assert all(c.samples.dtype == np.int16 and c.sample_rate == 22_050 for c in chunks)
    assert np.abs(chunks[0].samples.astype(np.int32)).max() > 1_000
    slow = voice.synthesize_clip("looks happy", rate=0.5)
    fast = voice.synthesize_clip("looks happy", rate=2.0)
    assert len(slow.samples) > 2 * len(fast.samples)


@needs_espeak
def test_espeak_bad_voice_is_an_audio_error() -> None:
    with pytest.raises(AudioError, match="espeak-ng --voices"):
        list(EspeakTTS("zzvoice").synthesize("hello"))


@needs_espeak
def test_corrupt_piper_voice_falls_back_to_espeak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07not an onnx model" * 10)
    Path(f"{bad}.json").write_bytes(Path(f"{VOICE}.json").read_bytes())
    with caplog.at_level(logging.WARNING, logger="edge.speech.tts"):
        voice = load_voice(bad, espeak_voice="en-us")
    assert isinstance(voice, EspeakTTS)
    assert "falling back to espeak-ng" in caplog.text and "broken.onnx" in caplog.text
    assert len(voice.synthesize_clip("ready").samples) > 0


def test_good_piper_voice_is_chosen() -> None:
    voice = load_voice(VOICE)
    assert isinstance(voice, PiperTTS) and voice.sample_rate == 16_000


def tracked(label: str, track_id: int, x: float = 0.5, clock: int = 12, unsure: bool = False) -> FaceResult:
    return FaceResult(box=(0, 0, 10, 10), label=label, confidence=0.3 if unsure else 0.9, unsure=unsure,
                      scores={label: 0.9}, position=Position(clock=clock, distance_m=1.0, x=x), fallback=False,
                      track_id=track_id)


def test_continuous_changes_say_only_what_changed() -> None:
    changes = phrases.Changes(confirm=2)
    one = lambda *faces: FrameResult(faces=faces, lowlight=False)  # noqa: E731
    assert changes.update(one(tracked("neutral", 1))) == "looks calm"
    assert changes.update(one(tracked("neutral", 1))) is None
    assert changes.update(one(tracked("happy", 1))) is None  # once could be a flicker
    assert changes.update(one(tracked("happy", 1))) == "now smiling"
    assert changes.update(one(tracked("happy", 1, unsure=True))) is None  # unsure is not news
    assert changes.update(one(tracked("happy", 1))) is None
    # someone joins: the whole picture again, then news names who changed
    two = one(tracked("happy", 1, x=0.3, clock=11), tracked("sad", 2, x=0.7, clock=1))
    assert changes.update(two) == "two people: looks happy, looks sad"
    assert changes.update(two) is None
    calm = one(tracked("happy", 1, x=0.3, clock=11), tracked("neutral", 2, x=0.7, clock=1))
    assert changes.update(calm) is None
    assert changes.update(calm) == "at 1 o'clock, now calm"
    assert changes.update(one()) == "no face"
    assert changes.update(one()) is None
    for fragment in split_fragments("at 1 o'clock, now calm; now smiling"):
        assert fragment in all_phrases("terse")
