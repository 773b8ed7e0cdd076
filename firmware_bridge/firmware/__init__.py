"""MicroPython firmware for the bridge MCU; the host imports wire.py from here (one definition of the frames)."""
