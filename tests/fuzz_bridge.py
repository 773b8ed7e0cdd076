"""Fuzzing the bridge's frame parser (firmware/wire.py) with hypothesis: random and mutated streams.

Each example is one input: a byte stream that is either random bytes or valid frames with random
mutations (bit flips, replaced, inserted and deleted bytes, truncation, repeated slices), fed to a
fresh receiver in random chunks, followed by one valid frame. Checked for every input:

- nothing raises, and the receive buffer never grows past one encoded frame;
- every frame that comes out has a valid layout (as the receiver promises);
- the valid frame after the noise always comes out, as the last frame.

CI runs a bounded hypothesis count (tests/test_bridge_fuzz.py). The long run uses atheris
(libFuzzer's coverage-guided mutations, seeded with valid frame streams) on the same check, because
hypothesis spends about 2 ms of its own per example and a million would take most of an hour:

    nice -n 19 .venv/bin/python -m tests.fuzz_bridge --atheris --runs 1000000
    nice -n 19 .venv/bin/python -m tests.fuzz_bridge --examples 20000      # hypothesis, longer
"""

from __future__ import annotations

import argparse
import atexit
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from firmware_bridge.firmware import wire

KINDS = sorted(wire.LAYOUTS)


@st.composite
def valid_frames(draw) -> tuple[bytes, tuple[int, int, bytes]]:
    """Any well-formed frame: a known or unknown type, any sequence number, any payload up to the limit."""
    kind = draw(st.one_of(st.sampled_from(KINDS), st.integers(0, 255)))
    seq = draw(st.integers(0, 255))
    payload = draw(st.binary(max_size=wire.MAX_PAYLOAD))
    return wire.encode(kind, seq, payload), (kind, seq, payload)


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(b"".join(f for f, _ in draw(st.lists(valid_frames(), min_size=1, max_size=6))))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "repeat")))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
    return bytes(data)


noise = st.one_of(st.binary(max_size=400), mutated(), st.binary(min_size=1, max_size=8).map(lambda b: b * 80))


class Counter:
    def __init__(self) -> None:
        self.n = 0


def check(stream: bytes, cuts: list[int], tail: tuple[bytes, tuple[int, int, bytes]]) -> None:
    decoder = wire.Decoder()
    start = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        for kind, seq, payload in decoder.feed(stream[start:cut]):
            assert 0 <= kind <= 255 and 0 <= seq <= 255 and len(payload) <= wire.MAX_PAYLOAD
        assert len(decoder._buf) <= wire.MAX_ENCODED
        start = max(start, cut)
    encoded, expected = tail
    out = decoder.feed(encoded)
    assert out and out[-1] == expected, (stream.hex(), encoded.hex(), out)
    assert len(out) <= 2


def make_test(examples: int, counter: Counter | None = None):
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(stream=noise, cuts=st.lists(st.integers(0, 10_000), max_size=6), tail=valid_frames())
    def fuzz(stream: bytes, cuts: list[int], tail) -> None:
        if counter is not None:
            counter.n += 1
        check(stream, cuts, tail)

    return fuzz


def atheris_input(data: bytes) -> None:
    """One libFuzzer input → (tail frame, cuts, noise) → check()."""
    import atheris

    fdp = atheris.FuzzedDataProvider(data)
    kind, seq = fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 255)
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, wire.MAX_PAYLOAD))
    cuts = [fdp.ConsumeIntInRange(0, 1000) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    noise = fdp.ConsumeBytes(fdp.remaining_bytes())
    check(noise, cuts, (wire.encode(kind, seq, payload), (kind, seq, payload)))


def _seed_corpus(folder: Path) -> None:
    """Valid frame streams behind a minimal header, so mutations start from real traffic."""
    header = bytes((wire.LUX, 7, 4)) + b"\x00\x00\x80\x3f" + b"\x00"
    streams = [
        wire.pack(wire.HELLO, 1, 15, 1, b"1.0.0") + wire.pack(wire.LUX, 2, 150.0) + wire.pack(wire.BATTERY, 3, 3900),
        wire.pack(wire.BUTTON, 9, wire.BUTTON_TAP) + wire.pack(wire.ACK, 10, 4, 0) + wire.pack(wire.HEARTBEAT, 11, 1000),
        wire.encode(wire.LUX, 0, bytes(range(48))) + b"\x55\xaa" * 20,
        b"",
    ]
    for i, stream in enumerate(streams):
        (folder / f"seed{i}").write_bytes(header + stream)


def run_atheris(runs: int, seed: int) -> int:
    import atheris

    for function in (wire.Decoder.feed, wire.Decoder._frame, wire.cobs_decode, wire.unpack, check):
        atheris.instrument_func(function)
    corpus = Path(tempfile.mkdtemp(prefix="bridge-fuzz-"))
    _seed_corpus(corpus)
    start = time.perf_counter()
    atexit.register(lambda: print(f"atheris: {runs} runs requested, {time.perf_counter() - start:.0f} s", flush=True))
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-seed={seed}", "-max_len=512", "-print_final_stats=1", str(corpus)],
                  atheris_input)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis inputs to try (default %(default)s)")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided run with atheris instead")
    parser.add_argument("--runs", type=int, default=1_000_000, help="atheris inputs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="atheris random seed")
    args = parser.parse_args(argv)
    if args.atheris:
        return run_atheris(args.runs, args.seed)
    counter = Counter()
    start = time.perf_counter()
    make_test(args.examples, counter)()
    elapsed = time.perf_counter() - start
    print(f"{counter.n} inputs, no failure, {elapsed:.0f} s ({counter.n / elapsed:.0f}/s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
