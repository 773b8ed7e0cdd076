"""Vibration motor on a PWM pin (through a transistor or driver): named patterns, played without blocking."""

import wire
from ticks import ticks_add, ticks_diff

_ON = 52000  # duty (of 65535): strong enough to feel, gentle on a coin motor at 3.3 V
PATTERNS = {
    wire.HAPTIC_TAP: ((_ON, 60),),
    wire.HAPTIC_DOUBLE: ((_ON, 60), (0, 80), (_ON, 60)),
    wire.HAPTIC_LONG: ((_ON, 400),),
}


class Haptic:
    def __init__(self, pwm):
        self.pwm = pwm
        self.pwm.freq(200)
        self.pwm.duty_u16(0)
        self._steps = ()
        self._index = 0
        self._next = 0

    def play(self, pattern, now):
        """Start a pattern (replacing one in progress); False if the pattern is unknown."""
        steps = PATTERNS.get(pattern)
        if steps is None:
            return False
        self._steps, self._index, self._next = steps, -1, now
        self.poll(now)
        return True

    def poll(self, now):
        if not self._steps or ticks_diff(now, self._next) < 0:
            return
        self._index += 1
        if self._index >= len(self._steps):
            self.pwm.duty_u16(0)
            self._steps = ()
            return
        duty, ms = self._steps[self._index]
        self.pwm.duty_u16(duty)
        self._next = ticks_add(now, ms)

    @property
    def busy(self):
        return bool(self._steps)
