"""A bounded hypothesis run of the frame-parser fuzz (tests/fuzz_bridge.py has the long one)."""

from __future__ import annotations

import pytest

from firmware_bridge.firmware import wire
from tests.fuzz_bridge import Counter, check, make_test

CI_EXAMPLES = 400


def test_fuzz_parser_never_raises_and_always_recovers():
    counter = Counter()
    make_test(CI_EXAMPLES, counter)()
    assert counter.n >= CI_EXAMPLES


def test_the_fuzz_check_can_fail():
    """A receiver that drops the frame after garbage must be caught by the same check."""

    class Forgetful(wire.Decoder):
        def feed(self, data):
            return super().feed(data)[:-1]

    good = wire.encode(wire.LUX, 1, b"\x00\x00\x80?")
    original = wire.Decoder
    wire.Decoder = Forgetful
    try:
        with pytest.raises(AssertionError):
            check(b"\x01\x02garbage", [], (good, (wire.LUX, 1, b"\x00\x00\x80?")))
    finally:
        wire.Decoder = original
