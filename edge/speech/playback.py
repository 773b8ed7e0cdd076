"""Where audio goes, named by an endpoint string (STYLE §6):

    alsa:DEVICE          aplay on an ALSA device: alsa:default, alsa:plughw:1,0 (earphone jack), …
    wav:/path/file.wav   each utterance replaces the file, atomically (no sound card: `make run`)
    wav:/path/dir/       each utterance is a new numbered file in the folder
    null:                discards audio but records what was played and when it started

Every sink stamps `first_audio_ns` (time.perf_counter_ns) the moment the first chunk of an
utterance is accepted and calls `on_first_audio(ns)`: the benchmark measures press-to-first-audio
against `null:` with exactly the code path the glasses use.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from edge.files import write_atomic
from edge.errors import AudioError, ConfigError
from edge.speech.tts import AudioClip

_LOGGER = logging.getLogger(__name__)

VALID_FORMS = "alsa:DEVICE (e.g. alsa:default, alsa:plughw:1,0), wav:/path/file.wav, wav:/path/folder/ or null:"
FirstAudioHook = Callable[[int], None]


def earcon(sample_rate: int = 22_050, frequency_hz: float = 880.0, duration_s: float = 0.06,
           volume: float = 0.4, fade_s: float = 0.01) -> AudioClip:
    """A short soft tone that says "I heard the button" before any analysis is done.

    Raised-cosine fades avoid the click a hard-edged tone makes in an earphone."""
    n = max(1, round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    tone = np.sin(2 * np.pi * frequency_hz * t)
    fade = min(round(fade_s * sample_rate), n // 2)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))
        tone[:fade] *= ramp
        tone[n - fade:] *= ramp[::-1]
    return AudioClip((tone * volume * 32767).astype(np.int16), sample_rate, "earcon")


@dataclass(frozen=True)
class PlayRecord:
    """One utterance as a sink saw it."""

    text: str
    sample_rate: int
    samples: int
    first_audio_ns: int
    finished_ns: int
    stopped: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate


@dataclass(eq=False)
class _Job:
    chunks: Iterable[AudioClip]
    generation: int
    blocking: bool
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Sink(ABC):
    """Plays utterances one at a time, in order, on its own worker thread.

    `play(audio, block=False)` only enqueues (safe from any thread, never waits for audio);
    `stop()` cuts the current utterance and drops queued ones (a new press should not wait for
    the old sentence); `wait()` blocks until the queue is empty and re-raises a background error.
    A context manager; `close()` lets queued audio finish and is idempotent.
    """

    def __init__(self, endpoint: str, on_first_audio: FirstAudioHook | None = None) -> None:
        self.endpoint = endpoint
        self.on_first_audio = on_first_audio
        self.first_audio_ns: int | None = None
        """perf_counter_ns when the first chunk of the latest utterance was accepted."""
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._generation = 0
        self._playing_generation = 0
        self._error: BaseException | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def play(self, audio: AudioClip | Iterable[AudioClip], block: bool = True) -> None:
        """Play a clip, or an iterable of chunks as they arrive (streamed synthesis).

        block=True waits until it has played and raises its error; block=False returns at once."""
        with self._idle:
            if self._closed:
                raise AudioError(f"audio sink {self.endpoint} is closed")
            job = _Job([audio] if isinstance(audio, AudioClip) else audio, self._generation, block)
            self._pending += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=f"sink-{self.endpoint}", daemon=True)
                self._worker.start()
        self._jobs.put(job)
        if block:
            job.done.wait()
            if job.error is not None:
                raise job.error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has played. True when idle; re-raises a background error once."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout):
                return False
            error, self._error = self._error, None
        if error is not None:
            raise error
        return True

    def stop(self) -> None:
        """Cut the current utterance short and drop everything queued."""
        with self._idle:
            self._generation += 1
        self._interrupt()

    def close(self) -> None:
        """Let queued audio finish, then release the sink. Call stop() first to cut it."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
        try:
            if worker is not None:
                self._jobs.put(None)
                worker.join()
        finally:
            self._release()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _stop_requested(self) -> bool:
        return self._playing_generation != self._generation

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._playing_generation = job.generation
            try:
                if not self._stop_requested():
                    self._run(job.chunks)
            except BaseException as exc:  # a worker thread has nobody else to tell
                job.error = exc
                if not job.blocking:
                    _LOGGER.error("playback on %s failed: %s", self.endpoint, exc)
            finally:
                job.done.set()
                with self._idle:
                    if job.error is not None and not job.blocking:
                        self._error = job.error
                    self._pending -= 1
                    self._idle.notify_all()

    def _run(self, chunks: Iterable[AudioClip]) -> None:
        rate: int | None = None
        first_ns = 0
        total = 0
        texts: list[str] = []
        stopped = False
        try:
            for chunk in chunks:
                if self._stop_requested():
                    break
                if rate is None:
                    rate = chunk.sample_rate
                    self._begin(rate)
                samples = chunk.resampled(rate).samples
                if chunk.text:
                    texts.append(chunk.text)
                self._write(samples)
                if not first_ns:
                    first_ns = time.perf_counter_ns()
                    self.first_audio_ns = first_ns
                    if self.on_first_audio is not None:
                        self.on_first_audio(first_ns)
                total += len(samples)
            if rate is None:
                return
            stopped = self._stop_requested()
            if stopped:
                self._abort()
            else:
                self._finish()
        except BaseException:
            if rate is not None:
                self._abort()
            if not self._stop_requested():
                raise
            _LOGGER.debug("playback on %s stopped", self.endpoint)
            stopped = True
        if rate is not None:
            self._record(PlayRecord(" ".join(texts), rate, total, first_ns, time.perf_counter_ns(), stopped))

    def _record(self, record: PlayRecord) -> None:
        _LOGGER.debug("played %r on %s: %.2f s", record.text, self.endpoint, record.duration_s)

    @abstractmethod
    def _begin(self, sample_rate: int) -> None:
        """Start an utterance at this rate."""

    @abstractmethod
    def _write(self, samples: np.ndarray) -> None:
        """Accept int16 samples; may block at playback speed."""

    @abstractmethod
    def _finish(self) -> None:
        """The utterance is complete: drain or commit it."""

    @abstractmethod
    def _abort(self) -> None:
        """Drop the utterance; leave nothing half-written."""

    def _interrupt(self) -> None:
        """Make a blocked _write return (called from another thread by stop())."""

    def _release(self) -> None:
        """Free what the sink holds (called once by close())."""


class AlsaSink(Sink):
    """`aplay -q -D DEVICE -t raw -f S16_LE -r RATE -c 1`, raw PCM on its stdin, one process per utterance.

    A process per utterance means a device that vanished (earphones unplugged, USB card reset) heals
    on the next press, the device is not held open between utterances, and the rate follows the voice."""

    def __init__(self, device: str = "default", aplay: str = "aplay",
                 on_first_audio: FirstAudioHook | None = None) -> None:
        super().__init__(f"alsa:{device}", on_first_audio)
        path = shutil.which(aplay)
        if path is None:
            raise AudioError(f"{aplay} not found for audio sink alsa:{device}: install alsa-utils "
                             "(`apt-get install alsa-utils`), or use wav:/path/out.wav or null:")
        self.device = device
        self.aplay = path
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()

    def command(self, sample_rate: int) -> list[str]:
        return [self.aplay, "-q", "-D", self.device, "-t", "raw", "-f", "S16_LE", "-r", str(sample_rate), "-c", "1"]

    def _failure(self, what: str) -> AudioError:
        proc = self._proc
        detail = ""
        if proc is not None:
            try:
                proc.wait(timeout=2)
                detail = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            what = f"{what} (exit {proc.returncode})"
        lines = detail.splitlines()[-3:]
        return AudioError(f"aplay on ALSA device {self.device!r} {what}: {' | '.join(lines) or 'no message'}; "
                          "check the device name with `aplay -l` / `aplay -L`")

    def _begin(self, sample_rate: int) -> None:
        with self._proc_lock:
            try:
                self._proc = subprocess.Popen(self.command(sample_rate), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            except OSError as exc:
                raise AudioError(f"cannot start {self.aplay}: {exc}; install alsa-utils") from exc
            if self._stop_requested():
                self._proc.kill()

    def _write(self, samples: np.ndarray) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(samples.astype("<i2").tobytes())
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            if self._stop_requested():
                raise
            raise self._failure("stopped accepting audio") from exc

    def _finish(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.close()
        except OSError:
            pass
        if proc.wait() != 0:
            raise self._failure("failed")
        if proc.stderr:
            proc.stderr.close()
        self._proc = None

    def _abort(self) -> None:
        with self._proc_lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass

    def _interrupt(self) -> None:
        with self._proc_lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()


class WavSink(Sink):
    """Writes each utterance as a complete WAV, via a temp file and os.replace: a reader never sees half a file."""

    def __init__(self, path: str | Path, on_first_audio: FirstAudioHook | None = None) -> None:
        text = str(path)
        super().__init__(f"wav:{text}", on_first_audio)
        self.path = Path(path)
        self.is_dir = text.endswith(("/", os.sep)) or self.path.is_dir()
        folder = self.path if self.is_dir else self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"audio sink wav:{text}: cannot create folder {folder}: {exc}") from exc
        self.written: list[Path] = []
        self._next = 1 + max((int(p.stem) for p in folder.glob("[0-9][0-9][0-9][0-9]*.wav") if p.stem.isdigit()),
                             default=0) if self.is_dir else 0
        self._buffer: list[np.ndarray] = []
        self._rate = 0

    def _begin(self, sample_rate: int) -> None:
        self._buffer = []
        self._rate = sample_rate

    def _write(self, samples: np.ndarray) -> None:
        self._buffer.append(samples)

    def _target(self) -> Path:
        if not self.is_dir:
            return self.path
        target = self.path / f"{self._next:04d}.wav"
        self._next += 1
        return target

    def _finish(self) -> None:
        clip = AudioClip(np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.int16), self._rate)
        self._buffer = []
        target = self._target()
        try:
            write_atomic(target, clip.to_wav_bytes())
        except OSError as exc:
            raise AudioError(f"cannot write {target}: {exc}") from exc
        self.written.append(target)
        _LOGGER.debug("wrote %s (%.2f s)", target, clip.duration_s)

    def _abort(self) -> None:
        self._buffer = []


class NullSink(Sink):
    """Discards audio instantly; keeps a PlayRecord per utterance (text, length, first-audio time)."""

    def __init__(self, on_first_audio: FirstAudioHook | None = None) -> None:
        super().__init__("null:", on_first_audio)
        self.records: list[PlayRecord] = []

    def _begin(self, sample_rate: int) -> None:
        pass

    def _write(self, samples: np.ndarray) -> None:
        pass

    def _finish(self) -> None:
        pass

    def _abort(self) -> None:
        pass

    def _record(self, record: PlayRecord) -> None:
        super()._record(record)
        self.records.append(record)


def parse_sink(endpoint: str) -> tuple[str, str]:
    """(scheme, target) of a sink endpoint string, or ConfigError naming the value and the valid forms.

    The config checks speech.sink with it too, so `check-config` refuses what `run` would."""
    scheme, sep, target = str(endpoint).strip().partition(":")
    if sep and (scheme == "alsa" or (scheme == "wav" and target) or (scheme == "null" and not target)):
        return scheme, target
    raise ConfigError(f"audio sink {endpoint!r} is not valid: use {VALID_FORMS}")


def open_sink(endpoint: str, on_first_audio: FirstAudioHook | None = None) -> Sink:
    """Build the sink an endpoint string names. Raises ConfigError naming the value and the valid forms."""
    scheme, target = parse_sink(endpoint)
    if scheme == "alsa":
        return AlsaSink(target or "default", on_first_audio=on_first_audio)
    if scheme == "wav":
        return WavSink(target, on_first_audio=on_first_audio)
    return NullSink(on_first_audio=on_first_audio)
