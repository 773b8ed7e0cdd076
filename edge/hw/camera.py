"""Frames from a V4L2 device, a video file, an image folder or the built-in demo face.

A grabber thread reads the source continuously and keeps only the newest frame, so a press
analyses what is in front of the wearer now, never a frame queued up seconds ago. When the source
ends or fails the grabber stops, `failed` is set and `latest()` raises `CameraError`; `open()`
starts it again (the app's supervisor does that, with back-off).
"""

from __future__ import annotations

import glob
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge import images
from edge.config import CameraConfig
from edge.errors import CameraError, ImageError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One captured frame."""

    image: np.ndarray
    """BGR uint8, H×W×3."""
    t_ns: int
    """time.monotonic_ns() when the frame was read."""
    index: int
    """Counts frames read by this Camera object, across reopens."""


class FrameReader(Protocol):
    """A source the grabber thread reads from. `read()` raises CameraError when the source is gone."""

    description: str
    paced: bool
    """True when read() itself blocks at the source's frame rate (a live device)."""

    def read(self) -> np.ndarray: ...

    def close(self) -> None: ...


class DeviceReader:
    """A V4L2 device by index or path (USB/UVC; CSI cameras through libcamera's V4L2 compatibility)."""

    paced = True

    def __init__(self, device: int | str, width: int, height: int, fps: float) -> None:
        self.description = f"device {device}"
        self._cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraError(f"camera {device}: cannot open (is it plugged in, and are you in group 'video'?)")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._cap.set(cv2.CAP_PROP_FPS, fps)
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def read(self) -> np.ndarray:
        ok, image = self._cap.read()
        if not ok or image is None:
            raise CameraError(f"camera {self.description}: read failed (unplugged?)")
        return image

    def close(self) -> None:
        self._cap.release()


class VideoFileReader:
    """A video file, paced to the configured rate; at its end it loops or reports the camera lost."""

    paced = False

    def __init__(self, path: Path, loop: bool) -> None:
        self.description = f"video file {path}"
        self._path, self._loop = path, loop
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraError(f"camera.source {path}: cannot open as a video file")

    def read(self) -> np.ndarray:
        ok, image = self._cap.read()
        if not ok and self._loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok or image is None:
            raise CameraError(f"camera {self.description}: ended")
        return image

    def close(self) -> None:
        self._cap.release()


class ImageFolderReader:
    """Every image in a folder, in name order, one per frame.

    A file that does not decode is skipped with one warning (not each time round the folder, nor on
    each reopen): one bad file is a bad frame, not a lost camera. Only a folder where nothing decodes fails."""

    paced = False

    def __init__(self, folder: Path, loop: bool) -> None:
        self.description = f"image folder {folder}"
        self._paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
        if not self._paths:
            raise CameraError(f"camera.source {folder}: no images ({', '.join(sorted(images.IMAGE_SUFFIXES))})")
        self._loop, self._next = loop, 0
        self._bad: set[Path] = set()

    def read(self) -> np.ndarray:
        while len(self._bad) < len(self._paths):
            if self._next >= len(self._paths):
                if not self._loop:
                    raise CameraError(f"camera {self.description}: ended")
                self._next = 0
            path = self._paths[self._next]
            self._next += 1
            if path in self._bad:
                continue
            try:
                return images.read(path)
            except ImageError as exc:
                self._bad.add(path)
                version = _version(path)
                log = _LOGGER.debug if version in _SKIPPED else _LOGGER.warning  # a reopen (no loop) warns no more
                _SKIPPED.add(version)
                log("camera %s: skipping %s", self.description, exc)
        raise CameraError(f"camera {self.description}: no file in it decodes as an image (see the warnings above)")

    def close(self) -> None:
        pass


_SKIPPED: set[tuple] = set()
"""Image files already warned about (by path, mtime and size: a file replaced since is warned about anew)."""


def _version(path: Path) -> tuple:
    try:
        stat = path.stat()
    except OSError:
        return (path,)
    return path, stat.st_mtime_ns, stat.st_size


class DemoReader:
    """Grace Hopper (the public-domain portrait in edge/data/), shifted a little every frame."""

    paced = False
    description = "demo face (grace_hopper.jpg)"

    def __init__(self, width: int, height: int, seed: int = 0) -> None:
        self._base = demo_image(width, height)
        self._rng = np.random.default_rng(seed)

    def read(self) -> np.ndarray:
        dx, dy = self._rng.uniform(-3.0, 3.0, size=2)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        h, w = self._base.shape[:2]
        image = cv2.warpAffine(self._base, shift, (w, h), borderMode=cv2.BORDER_REPLICATE)
        return cv2.add(image, np.full_like(image, int(self._rng.integers(0, 4))))

    def close(self) -> None:
        pass


SCENE_FOV_DEG = 66.0
"""Horizontal field of view the scene source is drawn for (Raspberry Pi Camera Module 3)."""
SCENE_FACE_M = 0.15
"""Width of the demo portrait's face (its mesh box, cheek to cheek with the ears' roots) in metres."""
SCENE_FACE_PX = 188
"""That width in pixels in edge/data/grace_hopper.jpg (the mesh box found on it)."""
SCENE_HOLD = 30
"""Frames each scene is held before the next: about two seconds at 15 fps, a glance."""


class SceneReader:
    """The bench's default source: the demo portrait as a wearer meets people — up close (as the demo),
    alone 2 m away, and a group of three at 1.2, 2 and 3 m — each held for SCENE_HOLD frames, in turn,
    shifted a little every frame. Drawn through a SCENE_FOV_DEG lens at the frame's width, the portrait
    (head, hair, shoulders and its own backdrop) pasted at its size at that distance, eyes at mid-height,
    on a plain wall."""

    paced = False
    description = "scene: demo face close, at 2 m, and a group at 1.2/2/3 m"

    def __init__(self, width: int, height: int, seed: int = 0) -> None:
        portrait = _portrait()
        rng = np.random.default_rng(seed)
        wall = np.linspace([200, 190, 180], [90, 85, 80], height, dtype=np.float32)[:, None, :]  # BGR, wall to floor
        texture = cv2.GaussianBlur(rng.normal(0, 12, (height, width, 1)).astype(np.float32), (0, 0), 6)[..., None]
        backdrop = np.clip(wall + texture, 0, 255).astype(np.uint8)
        self._scenes = [
            demo_image(width, height),
            _people(backdrop, portrait, [(0.5, 2.0)]),
            _people(backdrop, portrait, [(0.25, 1.2), (0.5, 2.0), (0.75, 3.0)]),
        ]
        self._rng = np.random.default_rng(seed)
        self._count = 0

    def read(self) -> np.ndarray:
        base = self._scenes[(self._count // SCENE_HOLD) % len(self._scenes)]
        self._count += 1
        dx, dy = self._rng.uniform(-3.0, 3.0, size=2)
        h, w = base.shape[:2]
        image = cv2.warpAffine(base, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REPLICATE)
        return cv2.add(image, np.full_like(image, int(self._rng.integers(0, 4))))

    def close(self) -> None:
        pass


def _people(backdrop: np.ndarray, portrait: np.ndarray, people: list[tuple[float, float]]) -> np.ndarray:
    """The backdrop with the portrait pasted for each (x as a share of the width, distance in m), farthest first."""
    frame = backdrop.copy()
    h, w = frame.shape[:2]
    focal = (w / 2) / math.tan(math.radians(SCENE_FOV_DEG / 2))
    for x, distance in sorted(people, key=lambda p: -p[1]):
        scale = focal * SCENE_FACE_M / distance / SCENE_FACE_PX
        person = cv2.resize(portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ph, pw = person.shape[:2]
        x0 = int(round(x * w - pw / 2))
        y0 = int(round(h / 2 - 0.4 * ph))  # the portrait's eyes are 40 % down it
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
        frame[fy0:fy1, fx0:fx1] = person[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return frame


def _portrait() -> np.ndarray:
    from edge.images import demo_portrait
    from edge.errors import ImageError

    try:
        return demo_portrait()
    except ImageError as exc:
        raise CameraError(f"demo source: {exc}") from exc


def demo_image(width: int, height: int) -> np.ndarray:
    """The demo face at width×height (centre crop to the aspect ratio, then resize), BGR."""
    image = _portrait()
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    crop_w, crop_h = round(width / scale), round(height / scale)
    x0, y0 = (w - crop_w) // 2, (h - crop_h) // 4  # keep the top of the head
    crop = image[y0 : y0 + crop_h, x0 : x0 + crop_w]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def video_devices() -> list[str]:
    """/dev/video* in numeric order."""
    return sorted(glob.glob("/dev/video*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))


def _first_device(config: CameraConfig) -> FrameReader | None:
    for path in video_devices():
        reader = None
        try:
            reader = DeviceReader(path, config.width, config.height, config.fps)
            reader.read()  # codec/metadata nodes open but deliver nothing
            return reader
        except CameraError as exc:
            _LOGGER.debug("auto camera: skipping %s: %s", path, exc)
            if reader is not None:
                reader.close()
    return None


def open_reader(config: CameraConfig) -> FrameReader:
    """The reader for `camera.source` (not "auto"; `Camera` resolves that)."""
    source = config.source
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    if isinstance(source, int) or source.startswith("/dev/"):
        return DeviceReader(source, config.width, config.height, config.fps)
    if source == "demo":
        return DemoReader(config.width, config.height)
    if source == "scene":
        return SceneReader(config.width, config.height)
    path = Path(source).expanduser()
    if path.is_dir():
        return ImageFolderReader(path, config.loop)
    if path.is_file():
        return VideoFileReader(path, config.loop)
    raise CameraError(
        f"camera.source {source!r}: no such file or folder (use \"auto\", \"demo\", a device index or "
        "path, a video file, or an image folder)"
    )


class Camera:
    """The newest frame from a source, read by a grabber thread. Context manager; close() is idempotent."""

    def __init__(self, config: CameraConfig, *, reader_factory: Callable[[], FrameReader] | None = None) -> None:
        self._config = config
        self._reader_factory = reader_factory
        self._auto_found_device: bool | None = None
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._error: CameraError | None = None
        self._count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed = threading.Event()
        """Set when the grabber stopped because the source ended or failed."""
        self.description = "closed"

    def open(self) -> Camera:
        """(Re)open the source and start grabbing; raises CameraError when it cannot be opened."""
        self.close()
        reader = self._make_reader()
        self.description = reader.description
        with self._cond:
            self._frame, self._error = None, None
        self.failed.clear()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._grab, args=(reader, self._stop), name="camera-grabber", daemon=True
        )
        self._thread.start()
        _LOGGER.info("camera: %s", self.description)
        return self

    def _make_reader(self) -> FrameReader:
        if self._reader_factory is not None:
            return self._reader_factory()
        if self._config.source != "auto":
            return open_reader(self._config)
        reader = _first_device(self._config)
        if reader is not None:
            self._auto_found_device = True
            return reader
        if self._auto_found_device:  # the camera we had went away: do not pretend with the demo
            raise CameraError("camera.source auto: no /dev/video* device delivers frames")
        self._auto_found_device = False
        _LOGGER.info("camera.source auto: no camera found, using the demo face")
        return DemoReader(self._config.width, self._config.height)

    def _grab(self, reader: FrameReader, stop: threading.Event) -> None:
        period = 0.0 if reader.paced else 1.0 / self._config.fps
        due = time.monotonic()
        try:
            while not stop.is_set():
                image = reader.read()
                with self._cond:
                    self._frame = Frame(image, time.monotonic_ns(), self._count)
                    self._count += 1
                    self._cond.notify_all()
                if period:  # after a stall, carry on from now rather than bursting to catch up
                    due = max(due + period, time.monotonic())
                    stop.wait(due - time.monotonic())
        except Exception as exc:  # noqa: BLE001 — any read failure means the camera is lost
            error = exc if isinstance(exc, CameraError) else CameraError(f"camera {reader.description}: {exc}")
            if not stop.is_set():
                _LOGGER.warning("%s", error)
            with self._cond:
                self._error = error
                self._cond.notify_all()
            self.failed.set()
        finally:
            reader.close()

    @property
    def error(self) -> CameraError | None:
        """Why the grabber stopped, if it did."""
        return self._error

    def latest(self, timeout: float = 2.0, *, newer_than: int = -1) -> Frame:
        """The newest frame (with index > newer_than); CameraError if the source failed or nothing came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._frame is not None and self._frame.index > newer_than:
                    return self._frame
                if self._error is not None:
                    raise self._error
                if self._thread is None:
                    raise CameraError("camera is not open")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraError(f"camera {self.description}: no frame within {timeout:g} s")
                self._cond.wait(remaining)

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=3.0)
        if thread.is_alive():
            _LOGGER.warning("camera %s: grabber did not stop within 3 s", self.description)

    def __enter__(self) -> Camera:
        if self._thread is None:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
