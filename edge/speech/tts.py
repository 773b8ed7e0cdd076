"""Text to audio: Piper (neural, offline) with espeak-ng as the always-there fallback, and a phrase cache.

Speaking settings used everywhere in this package:
- `rate` is a **multiplier of the voice's natural speed**, 0.5–2.0 (1.0 = as the voice was trained,
  1.5 = half as fast again). Piper gets `length_scale = voice length_scale / rate`; espeak-ng gets
  `-s round(175 × rate)` words per minute (175 is espeak-ng's own default).
- `volume` is a gain 0..1 (1 = full scale). Piper audio is peak-normalised then multiplied;
  espeak-ng gets `-a round(100 × volume)` (its default amplitude is 100).

Synthesis never runs on the press-to-speech path for terse phrases: `PhraseCache.warm()` renders
every fragment once at start-up (and on disk, so a restart is instant too).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import subprocess
import threading
import time
import wave
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from edge.files import write_atomic
from edge.errors import AudioError, ConfigError, ModelError

_LOGGER = logging.getLogger(__name__)

RATE_RANGE = (0.5, 2.0)
ESPEAK_BASE_WPM = 175
DEFAULT_ESPEAK_VOICE = "en-us"
_FINGERPRINT_BYTES = 1 << 16
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CACHE_FORMAT = "1"


@dataclass(frozen=True, eq=False)
class AudioClip:
    """Mono 16-bit audio: one sentence streamed from a voice, or a whole utterance."""

    samples: np.ndarray
    """int16, shape (n,)."""
    sample_rate: int
    text: str = ""
    """What it says, for logs and the null sink's record; not part of the audio."""

    def __post_init__(self) -> None:
        if self.samples.dtype != np.int16 or self.samples.ndim != 1:
            raise ValueError(f"AudioClip needs 1-D int16 samples, got {self.samples.dtype} {self.samples.shape}")
        if self.sample_rate <= 0:
            raise ValueError(f"AudioClip sample_rate must be positive, got {self.sample_rate}")

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def resampled(self, sample_rate: int) -> AudioClip:
        """Linear-interpolation resample: enough for joining an earcon or fragments from another voice."""
        if sample_rate == self.sample_rate:
            return self
        if len(self.samples) == 0:
            return AudioClip(self.samples, sample_rate, self.text)
        n = max(1, round(len(self.samples) * sample_rate / self.sample_rate))
        x_new = np.arange(n, dtype=np.float64) * (self.sample_rate / sample_rate)
        y = np.interp(x_new, np.arange(len(self.samples)), self.samples.astype(np.float64))
        return AudioClip(np.clip(np.rint(y), -32768, 32767).astype(np.int16), sample_rate, self.text)

    def to_wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes(self.samples.astype("<i2").tobytes())
        return buffer.getvalue()

    @classmethod
    def from_wav_bytes(cls, data: bytes, text: str = "") -> AudioClip:
        """Parse a mono 16-bit WAV (also espeak-ng's streamed header, whose length field is bogus)."""
        try:
            with wave.open(io.BytesIO(data), "rb") as wav:
                if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                    raise AudioError(
                        f"expected mono 16-bit WAV, got {wav.getnchannels()} channel(s) of {8 * wav.getsampwidth()} bit"
                    )
                rate = wav.getframerate()
                frames = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError) as exc:
            raise AudioError(f"not a readable WAV stream: {exc}") from exc
        frames = frames[: len(frames) - len(frames) % 2]
        return cls(np.frombuffer(frames, dtype="<i2").astype(np.int16), rate, text)

    @classmethod
    def join(cls, clips: Iterable[AudioClip], gap_s: float = 0.0, text: str = "") -> AudioClip:
        """Concatenate clips (resampled to the first one's rate) with `gap_s` of silence between them."""
        clips = list(clips)
        if not clips:
            raise ValueError("AudioClip.join needs at least one clip")
        rate = clips[0].sample_rate
        gap = np.zeros(round(gap_s * rate), dtype=np.int16)
        parts: list[np.ndarray] = []
        for i, clip in enumerate(clips):
            if i and len(gap):
                parts.append(gap)
            parts.append(clip.resampled(rate).samples)
        return cls(np.concatenate(parts), rate, text or " ".join(c.text for c in clips if c.text))


AudioChunk = AudioClip
"""What `Voice.synthesize` streams: one clip per sentence."""


def check_rate(rate: float) -> float:
    low, high = RATE_RANGE
    if not low <= rate <= high:
        raise ConfigError(f"speech rate {rate} is out of range: use a multiplier from {low} to {high} (1.0 = normal)")
    return float(rate)


def check_volume(volume: float) -> float:
    if not 0.0 <= volume <= 1.0:
        raise ConfigError(f"speech volume {volume} is out of range: use 0.0 (silent) to 1.0 (full)")
    return float(volume)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


class Voice(ABC):
    """A text-to-speech backend. Stream by sentence so the first words play while the rest render."""

    voice_id: str
    """Names the backend, the voice and its file version; part of every cache key."""
    sample_rate: int

    @abstractmethod
    def synthesize(self, text: str, rate: float = 1.0, volume: float = 1.0) -> Iterator[AudioChunk]:
        """Yield one int16 mono chunk per sentence. Raises AudioError when synthesis fails."""

    def synthesize_clip(self, text: str, rate: float = 1.0, volume: float = 1.0) -> AudioClip:
        chunks = list(self.synthesize(text, rate, volume))
        if not chunks:
            return AudioClip(np.zeros(0, dtype=np.int16), self.sample_rate, text)
        return AudioClip.join(chunks, text=text)

    def close(self) -> None:
        """Release the backend. Idempotent."""

    def __enter__(self) -> Voice:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _fingerprint(model_path: Path, config_path: Path) -> str:
    """Cheap identity of a voice file: size + first/last 64 KiB + config.

    Hashing a whole 63 MB voice would add most of a second to start-up on a Pi 4 (no SHA extensions)."""
    digest = hashlib.sha256()
    size = model_path.stat().st_size
    digest.update(str(size).encode())
    with model_path.open("rb") as f:
        digest.update(f.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            f.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
            digest.update(f.read())
    digest.update(config_path.read_bytes())
    return digest.hexdigest()[:16]


class PiperTTS(Voice):
    """Piper voice (`name.onnx` + `name.onnx.json`) through piper-tts's own `PiperVoice`.

    Phonemisation uses the espeak-ng data bundled in the piper-tts wheel, so the Debian espeak-ng
    package is not needed for this backend."""

    def __init__(self, model_path: str | Path, config_path: str | Path | None = None) -> None:
        self.model_path = Path(model_path)
        self.config_path = Path(config_path) if config_path else Path(f"{self.model_path}.json")
        for path, what in ((self.model_path, "voice model"), (self.config_path, "voice config")):
            if not path.is_file():
                raise ModelError(f"Piper {what} {path} not found: set the voice path to an existing .onnx "
                                 "with its .onnx.json beside it (python3 -m piper.download_voices NAME)")
        try:
            from piper import PiperVoice
            from piper.config import SynthesisConfig
        except ImportError as exc:
            raise ModelError(f"piper-tts is not installed ({exc}): run `make setup`") from exc
        self._synthesis_config = SynthesisConfig
        started = time.perf_counter()
        try:
            self._voice = PiperVoice.load(self.model_path, config_path=self.config_path)
        except Exception as exc:  # onnxruntime, json and key errors all mean "this voice is unusable"
            raise ModelError(f"Piper voice {self.model_path} could not be loaded: {type(exc).__name__}: {exc}") from exc
        self.sample_rate = int(self._voice.config.sample_rate)
        self._length_scale = float(self._voice.config.length_scale)
        self.voice_id = f"piper:{self.model_path.stem}:{_fingerprint(self.model_path, self.config_path)}"
        _LOGGER.info("Piper voice %s loaded in %.0f ms (%d Hz)", self.model_path.name,
                     1000 * (time.perf_counter() - started), self.sample_rate)

    def synthesize(self, text: str, rate: float = 1.0, volume: float = 1.0) -> Iterator[AudioChunk]:
        config = self._synthesis_config(
            length_scale=self._length_scale / check_rate(rate), volume=check_volume(volume), normalize_audio=True
        )
        try:
            for chunk in self._voice.synthesize(text, syn_config=config):
                yield AudioClip(np.ascontiguousarray(chunk.audio_int16_array, dtype=np.int16), chunk.sample_rate)
        except Exception as exc:
            raise AudioError(f"Piper could not synthesise {text!r}: {type(exc).__name__}: {exc}") from exc


class EspeakTTS(Voice):
    """espeak-ng as a subprocess (Debian package `espeak-ng`): robotic, but tiny and always available.

    WAV comes back on stdout and is parsed in memory — no temp files. One process per sentence so the
    first sentence can play while the next renders."""

    sample_rate = 22_050

    def __init__(self, voice: str = DEFAULT_ESPEAK_VOICE, executable: str = "espeak-ng", timeout_s: float = 10.0) -> None:
        path = shutil.which(executable)
        if path is None:
            raise AudioError(f"{executable} not found: install it with `apt-get install espeak-ng`")
        self.executable = path
        self.voice = voice
        self.timeout_s = timeout_s
        self.voice_id = f"espeak-ng:{voice}"

    def command(self, text: str, rate: float = 1.0, volume: float = 1.0) -> list[str]:
        wpm = round(ESPEAK_BASE_WPM * check_rate(rate))
        amplitude = round(100 * check_volume(volume))
        return [self.executable, "--stdout", "-s", str(wpm), "-a", str(amplitude), "-v", self.voice, "--", text]

    def synthesize(self, text: str, rate: float = 1.0, volume: float = 1.0) -> Iterator[AudioChunk]:
        for sentence in split_sentences(text):
            try:
                done = subprocess.run(self.command(sentence, rate, volume), capture_output=True,
                                      timeout=self.timeout_s, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise AudioError(f"espeak-ng failed on {sentence!r}: {exc}") from exc
            if done.returncode != 0:
                err = done.stderr.decode(errors="replace").strip()
                raise AudioError(f"espeak-ng exited {done.returncode} on {sentence!r}: {err} "
                                 f"(list voices with `espeak-ng --voices`)")
            clip = AudioClip.from_wav_bytes(done.stdout, text=sentence)
            self.sample_rate = clip.sample_rate
            yield clip


def load_voice(voice_path: str | Path | None = None, espeak_voice: str = DEFAULT_ESPEAK_VOICE) -> Voice:
    """Piper when a voice file is configured and loads; otherwise espeak-ng.

    A configured Piper voice that fails is logged as an error-level warning with the reason (loud in
    the logs) and the wearer silently gets espeak-ng instead. Raises AudioError only when neither works."""
    piper_error: Exception | None = None
    if voice_path:
        try:
            return PiperTTS(voice_path)
        except ModelError as exc:
            piper_error = exc
            _LOGGER.warning("PIPER VOICE UNUSABLE, falling back to espeak-ng: %s", exc)
    try:
        voice = EspeakTTS(espeak_voice)
    except AudioError as exc:
        if piper_error is not None:
            raise AudioError(f"no text-to-speech available: {piper_error}; and {exc}") from exc
        raise AudioError(f"no text-to-speech available: no Piper voice configured and {exc}") from exc
    _LOGGER.info("using espeak-ng voice %s", espeak_voice)
    return voice


@dataclass
class CacheStats:
    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    synth_ns: list[int] = field(default_factory=list)


class PhraseCache:
    """Synthesise each phrase once; later requests are a dict lookup.

    Key: sha256(text, voice id, rate, volume), so changing any of them never plays stale audio.
    Memory holds the warmed phrases for good plus up to `max_items` others (least recently used
    evicted: verbose sentences are many). With `cache_dir` every clip is also a `<key>.wav`,
    written atomically, so the next start-up warms from disk instead of synthesising.
    """

    def __init__(self, voice: Voice, rate: float = 1.0, volume: float = 1.0,
                 cache_dir: str | Path | None = None, max_items: int = 256) -> None:
        self.voice = voice
        self.rate = check_rate(rate)
        self.volume = check_volume(volume)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_items = max_items
        self.stats = CacheStats()
        self._clips: OrderedDict[str, AudioClip] = OrderedDict()
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        if self.cache_dir is not None:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"speech cache_dir {self.cache_dir} cannot be created: {exc}") from exc

    def key(self, text: str) -> str:
        material = "\0".join((_CACHE_FORMAT, text, self.voice.voice_id, f"{self.rate:.4f}", f"{self.volume:.4f}"))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def __contains__(self, text: str) -> bool:
        with self._lock:
            return self.key(text) in self._clips

    def __len__(self) -> int:
        return len(self._clips)

    def _remember(self, key: str, clip: AudioClip, pin: bool) -> None:
        with self._lock:
            self._clips[key] = clip
            self._clips.move_to_end(key)
            if pin:
                self._pinned.add(key)
            unpinned = [k for k in self._clips if k not in self._pinned]
            for old in unpinned[: max(0, len(unpinned) - self.max_items)]:
                del self._clips[old]

    def _disk_path(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.wav" if self.cache_dir is not None else None

    def _load_disk(self, key: str, text: str) -> AudioClip | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            return AudioClip.from_wav_bytes(path.read_bytes(), text=text)
        except (OSError, AudioError) as exc:
            _LOGGER.warning("speech cache file %s unreadable (%s); synthesising again", path, exc)
            path.unlink(missing_ok=True)
            return None

    def _store_disk(self, key: str, clip: AudioClip) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        try:
            write_atomic(path, clip.to_wav_bytes())
        except OSError as exc:
            _LOGGER.warning("speech cache cannot write %s: %s (continuing from memory)", path, exc)

    def lookup(self, text: str) -> AudioClip | None:
        """The clip if it is in memory or on disk; never synthesises."""
        key = self.key(text)
        with self._lock:
            clip = self._clips.get(key)
            if clip is not None:
                self._clips.move_to_end(key)
                self.stats.hits += 1
                return clip
        clip = self._load_disk(key, text)
        if clip is not None:
            self.stats.disk_hits += 1
            self._remember(key, clip, pin=False)
        return clip

    def get(self, text: str, pin: bool = False) -> AudioClip:
        """The whole text as one clip: instant on a hit, synthesised (and stored) on a miss."""
        clip = self.lookup(text)
        if clip is not None:
            if pin:
                with self._lock:
                    self._pinned.add(self.key(text))
            return clip
        synthesis = self._synthesize(text, pin)
        while True:
            try:
                next(synthesis)
            except StopIteration as done:
                return done.value

    def stream(self, text: str) -> Iterator[AudioChunk]:
        """Like `get` but, on a miss, yields each sentence as soon as it is synthesised."""
        clip = self.lookup(text)
        if clip is not None:
            yield clip
            return
        yield from self._synthesize(text, pin=False)

    def _synthesize(self, text: str, pin: bool) -> Generator[AudioChunk, None, AudioClip]:
        self.stats.misses += 1
        started = time.perf_counter_ns()
        chunks: list[AudioClip] = []
        for chunk in self.voice.synthesize(text, self.rate, self.volume):
            if not chunk.text and not chunks:
                chunk = AudioClip(chunk.samples, chunk.sample_rate, text)
            chunks.append(chunk)
            yield chunk
        elapsed = time.perf_counter_ns() - started
        self.stats.synth_ns.append(elapsed)
        clip = (AudioClip.join(chunks, text=text) if chunks
                else AudioClip(np.zeros(0, dtype=np.int16), self.voice.sample_rate, text))
        _LOGGER.debug("synthesised %r: %.0f ms of audio in %.1f ms", text, 1000 * clip.duration_s, elapsed / 1e6)
        key = self.key(text)
        self._remember(key, clip, pin)
        self._store_disk(key, clip)
        return clip

    def compose(self, text: str, gap_s: float = 0.12) -> AudioClip:
        """Speak a `describe()` sentence from its cached fragments (see phrases.split_fragments).

        Each fragment is its own clip; fragments of one face are `gap_s` apart, and twice that
        after the head count and between faces, so the wearer hears where one face ends. After
        `warm(all_phrases())` no description waits for synthesis. One fragment is just `get(text)`."""
        from edge.speech.phrases import COUNT_SEPARATOR, FACE_SEPARATOR, ITEM_SEPARATOR

        pieces = re.split(f"({re.escape(COUNT_SEPARATOR)}|{re.escape(ITEM_SEPARATOR)}|{re.escape(FACE_SEPARATOR)})", text)
        fragments = [p.strip() for p in pieces[::2]]
        if len(fragments) == 1 or not all(fragments):
            return self.get(text.strip())
        clips = [self.get(fragments[0])]
        rate = clips[0].sample_rate
        for separator, fragment in zip(pieces[1::2], fragments[1:]):
            pause = gap_s if separator == FACE_SEPARATOR else 2 * gap_s
            clips.append(AudioClip(np.zeros(round(pause * rate), dtype=np.int16), rate))
            clips.append(self.get(fragment))
        return AudioClip.join(clips, text=text)

    def warm(self, phrases: Iterable[str]) -> int:
        """Make every phrase a memory hit (pinned, never evicted). Returns how many were synthesised."""
        started = time.perf_counter()
        misses_before = self.stats.misses
        count = 0
        for text in phrases:
            self.get(text, pin=True)
            count += 1
        synthesised = self.stats.misses - misses_before
        _LOGGER.log(logging.INFO if count > 1 else logging.DEBUG, "speech cache warm: %d phrases, %d synthesised, %.0f ms (%s)",
                    count, synthesised, 1000 * (time.perf_counter() - started), self.voice.voice_id)
        return synthesised
