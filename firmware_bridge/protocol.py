"""Host view of the frames defined in firmware/wire.py: typed messages and a stream parser.

PROTOCOL.md describes the wire format; wire.py is its only implementation, shared with the firmware.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_bridge.firmware import wire

PROTOCOL_VERSION = wire.PROTOCOL_VERSION


@dataclass(frozen=True)
class Message:
    """One valid frame: its type, sequence number and payload values (per wire.LAYOUTS)."""

    kind: int
    seq: int
    values: tuple

    @property
    def name(self) -> str:
        return wire.TYPE_NAMES.get(self.kind, f"type 0x{self.kind:02x}")


class Parser:
    """Bytes in, messages out. Never raises on input; frames with a bad layout count as "layout" errors."""

    def __init__(self) -> None:
        self._decoder = wire.Decoder()
        self.layout_errors = 0

    def feed(self, data: bytes) -> list[Message]:
        messages = []
        for kind, seq, payload in self._decoder.feed(data):
            values = wire.unpack(kind, payload)
            if values is None:
                self.layout_errors += 1
                continue
            messages.append(Message(kind, seq, values))
        return messages

    def reset(self) -> None:
        self._decoder.reset()

    @property
    def frames(self) -> int:
        return self._decoder.frames

    @property
    def errors(self) -> dict[str, int]:
        return dict(self._decoder.errors, layout=self.layout_errors)

    @property
    def other_version(self) -> int | None:
        return self._decoder.other_version


def frame(kind: int, seq: int, *values: object) -> bytes:
    """One frame with its delimiters, payload laid out per wire.LAYOUTS."""
    return wire.pack(kind, seq, *values)
