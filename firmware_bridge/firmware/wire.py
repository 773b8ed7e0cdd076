"""Frames on the serial line between the MCU and the host. Runs unchanged on MicroPython and CPython.

One frame on the wire:  0x00 | COBS(body) | 0x00     body = version | type | seq | payload | crc32
(crc32 little-endian over version..payload). COBS removes every 0x00 from the body, so a 0x00 always
means "frame boundary": after garbage, a cut cable or a reset mid-frame, the receiver loses at most
the frame in progress and takes the next one whole. The leading 0x00 ends any garbage before it.
This file is copied to the board as-is, which is why it uses only what MicroPython has (no typing,
no dataclasses) and why COBS is written here rather than taken from a CPython-only package.
"""

import struct

try:
    from binascii import crc32
except ImportError:  # a MicroPython build without binascii.crc32
    crc32 = None

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 48
HEADER_LEN = 3
CRC_LEN = 4
MAX_BODY = HEADER_LEN + MAX_PAYLOAD + CRC_LEN
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1

# MCU -> host
HELLO = 0x01  # caps u8, sensor u8, firmware version (ascii)
LUX = 0x02  # lux f32
BUTTON = 0x03  # event u8 (TAP / HOLD)
BATTERY = 0x04  # millivolts u16
HEARTBEAT = 0x05  # uptime ms u32
ACK = 0x06  # acked seq u8, status u8
PONG = 0x07  # token u32
SENSOR_ERROR = 0x08  # code u8

# host -> MCU
PING = 0x10  # token u32
HAPTIC = 0x11  # pattern u8
SET_RATE = 0x12  # lux interval ms u16
HELLO_REQ = 0x13  # (empty)

TYPE_NAMES = {
    HELLO: "hello", LUX: "lux", BUTTON: "button", BATTERY: "battery", HEARTBEAT: "heartbeat",
    ACK: "ack", PONG: "pong", SENSOR_ERROR: "sensor error", PING: "ping", HAPTIC: "haptic",
    SET_RATE: "set rate", HELLO_REQ: "hello request",
}

# payload layouts (struct, little-endian); HELLO has the version string after its two bytes
LAYOUTS = {
    HELLO: "<BB", LUX: "<f", BUTTON: "<B", BATTERY: "<H", HEARTBEAT: "<I", ACK: "<BB", PONG: "<I",
    SENSOR_ERROR: "<B", PING: "<I", HAPTIC: "<B", SET_RATE: "<H", HELLO_REQ: "<",
}

CAP_LUX = 1
CAP_BUTTON = 2
CAP_BATTERY = 4
CAP_HAPTIC = 8

SENSOR_NONE = 0
SENSOR_BH1750 = 1
SENSOR_VEML7700 = 2
SENSOR_NAMES = {SENSOR_NONE: "none", SENSOR_BH1750: "BH1750", SENSOR_VEML7700: "VEML7700"}

BUTTON_TAP = 1
BUTTON_HOLD = 2

ACK_OK = 0
ACK_UNKNOWN = 1
ACK_BAD_PAYLOAD = 2
ACK_UNSUPPORTED = 3
ACK_NAMES = {ACK_OK: "ok", ACK_UNKNOWN: "unknown command", ACK_BAD_PAYLOAD: "bad payload",
             ACK_UNSUPPORTED: "not fitted on this board"}

SENSOR_NOT_FOUND = 1
SENSOR_READ_FAILED = 2

HAPTIC_TAP = 1
HAPTIC_DOUBLE = 2
HAPTIC_LONG = 3


def _crc32(data):
    if crc32 is not None:
        return crc32(data) & 0xFFFFFFFF
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def cobs_encode(data):
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out.extend(block)
            block = bytearray()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out.extend(block)
                block = bytearray()
    out.append(len(block) + 1)
    out.extend(block)
    return bytes(out)


def cobs_decode(data):
    """The body, or None when `data` is not valid COBS (a zero inside, or a code running past the end)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:
            return None
        block = data[i + 1:i + code]
        if block.find(b"\x00") >= 0:
            return None
        out.extend(block)
        i += code
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def encode(kind, seq, payload=b""):
    """One frame, delimiters included."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload longer than %d bytes" % MAX_PAYLOAD)
    body = bytes((PROTOCOL_VERSION, kind & 0xFF, seq & 0xFF)) + bytes(payload)
    body += struct.pack("<I", _crc32(body))
    return b"\x00" + cobs_encode(body) + b"\x00"


def pack(kind, seq, *values):
    """encode() with the payload laid out as LAYOUTS[kind] says; HELLO takes its version string last."""
    if kind == HELLO:
        return encode(kind, seq, struct.pack(LAYOUTS[kind], values[0], values[1]) + values[2])
    return encode(kind, seq, struct.pack(LAYOUTS[kind], *values))


def unpack(kind, payload):
    """The payload's values as a tuple, or None when its length does not fit the layout."""
    layout = LAYOUTS.get(kind)
    if layout is None:
        return None
    size = struct.calcsize(layout)
    if kind == HELLO:
        if len(payload) < size:
            return None
        caps, sensor = struct.unpack(layout, payload[:size])
        return caps, sensor, bytes(payload[size:])
    if len(payload) != size:
        return None
    return struct.unpack(layout, payload)


class Decoder:
    """Bytes in, (type, seq, payload) frames out; never raises on input, counts what it dropped.

    `errors` counts dropped frames by reason: "cobs", "short", "crc", "version", "overflow".
    `other_version` remembers the version byte of the last frame dropped for its version, so the
    host can say which firmware it is talking to.
    """

    def __init__(self):
        self._buf = bytearray()
        self._overflow = False
        self.errors = {"cobs": 0, "short": 0, "crc": 0, "version": 0, "overflow": 0}
        self.other_version = None
        self.frames = 0

    def reset(self):
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data):
        frames = []
        for byte in data:
            if byte != 0:
                if self._overflow:
                    continue
                if len(self._buf) >= MAX_ENCODED:
                    self._overflow = True
                    self.errors["overflow"] += 1
                    self._buf = bytearray()
                    continue
                self._buf.append(byte)
                continue
            if self._overflow:
                self._overflow = False
                continue
            if self._buf:
                frame = self._frame(bytes(self._buf))
                self._buf = bytearray()
                if frame is not None:
                    frames.append(frame)
        return frames

    def _frame(self, packet):
        body = cobs_decode(packet)
        if body is None:
            self.errors["cobs"] += 1
            return None
        if len(body) < HEADER_LEN + CRC_LEN or len(body) > MAX_BODY:
            self.errors["short"] += 1
            return None
        (crc,) = struct.unpack("<I", body[-CRC_LEN:])
        if crc != _crc32(body[:-CRC_LEN]):
            self.errors["crc"] += 1
            return None
        if body[0] != PROTOCOL_VERSION:
            self.errors["version"] += 1
            self.other_version = body[0]
            return None
        self.frames += 1
        return body[1], body[2], body[HEADER_LEN:-CRC_LEN]
