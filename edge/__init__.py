"""Expression-aware glasses: the on-device application."""

__version__ = "0.1.0"
