"""One error hierarchy. Each message names what was wrong and what to do about it."""

from __future__ import annotations


class EdgeError(Exception):
    """Base class for every error the application raises on purpose."""


class ConfigError(EdgeError):
    """A config file, key or value is wrong; the message names the key path."""


class ModelError(EdgeError):
    """A model file is missing, corrupt, or does not match its sidecar."""


class ImageError(EdgeError):
    """An input image cannot be read or decoded."""


class HardwareError(EdgeError):
    """A camera, button, sensor, serial link or audio device failed."""


class CameraError(HardwareError):
    """The camera cannot be opened or stopped delivering frames."""


class AudioError(HardwareError):
    """Audio playback or synthesis failed."""


class OffloadError(EdgeError):
    """The AI server could not answer in time (down, slow, bad certificate, token refused)."""
