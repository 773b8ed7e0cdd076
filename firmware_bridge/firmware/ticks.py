"""Millisecond ticks that wrap, as MicroPython's time module has them; the simulator's machine shim
provides the same four functions under CPython."""

try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms
except ImportError:
    from machine import sleep_ms, ticks_add, ticks_diff, ticks_ms  # noqa: F401 — CPython simulator
