"""The MCU side of the bridge (MicroPython, RP2040 / Raspberry Pi Pico): lux, button, battery, haptic.

`Bridge` holds the logic and is handed its peripherals, so the simulator (firmware_bridge/simulator.py)
runs exactly this code under CPython with a small `machine` shim. `run()` builds the peripherals from
the pins below and loops forever; main.py calls it at boot.

Sends: HELLO at boot and on request, LUX every `lux_interval_ms` (the host may change it), BUTTON at
once (debounced; tap on release, hold after 1 s), BATTERY every 10 s, HEARTBEAT every second.
Answers PING with PONG and every command with ACK.
"""

import wire
from ticks import sleep_ms, ticks_add, ticks_diff, ticks_ms

FIRMWARE_VERSION = "1.0.0"

UART_ID, UART_TX, UART_RX, BAUDRATE = 0, 0, 1, 115200  # GP0 -> host RXD, GP1 <- host TXD
I2C_ID, I2C_SDA, I2C_SCL, I2C_FREQ = 0, 4, 5, 400000
BUTTON_PIN = 15  # to GND, internal pull-up
MOTOR_PIN = 16  # PWM into the motor driver / transistor base
BATTERY_ADC = 26  # ADC0, cell through a 1:1 divider (100k/100k)
BATTERY_DIVIDER = 2.0

DEBOUNCE_MS = 20
HOLD_MS = 1000
HEARTBEAT_MS = 1000
BATTERY_MS = 10000
MIN_LUX_INTERVAL_MS = 50
SENSOR_RETRY_MS = 2000


def find_sensor(i2c):
    """The first lux sensor that answers on the bus, or None."""
    import bh1750
    import veml7700

    try:
        present = i2c.scan()
    except OSError:
        return None
    for address in bh1750.ADDRESSES:
        if address in present:
            try:
                return bh1750.BH1750(i2c, address)
            except OSError:
                pass
    if veml7700.ADDRESS in present:
        try:
            return veml7700.VEML7700(i2c)
        except OSError:
            pass
    return None


class Bridge:
    def __init__(self, uart, i2c=None, button=None, battery=None, haptic=None, lux_interval_ms=500, now=None):
        self.uart, self.i2c, self.button, self.battery, self.haptic = uart, i2c, button, battery, haptic
        self.lux_interval_ms = lux_interval_ms
        self.decoder = wire.Decoder()
        self.sensor = find_sensor(i2c) if i2c is not None else None
        self._seq = 0
        now = ticks_ms() if now is None else now
        self._next_lux = self._next_heartbeat = self._next_battery = now
        self._next_sensor_retry = ticks_add(now, SENSOR_RETRY_MS)
        self._started = now
        self._pressed = False
        self._raw = 1
        self._raw_since = now
        self._down_at = now
        self._held = False
        self.hello()
        if i2c is not None and self.sensor is None:
            self.send(wire.SENSOR_ERROR, wire.SENSOR_NOT_FOUND)

    # ---- output

    def send(self, kind, *values):
        self._seq = (self._seq + 1) & 0xFF
        try:
            self.uart.write(wire.pack(kind, self._seq, *values))
        except OSError:
            pass  # host side gone; the host resyncs on the next frame

    def hello(self):
        caps = (wire.CAP_LUX if self.sensor else 0) | (wire.CAP_BUTTON if self.button else 0)
        caps |= (wire.CAP_BATTERY if self.battery else 0) | (wire.CAP_HAPTIC if self.haptic else 0)
        sensor = wire.SENSOR_BH1750 if self.sensor and self.sensor.name == "BH1750" else (
            wire.SENSOR_VEML7700 if self.sensor else wire.SENSOR_NONE)
        self.send(wire.HELLO, caps, sensor, FIRMWARE_VERSION.encode())
        self._next_battery = self._next_lux = ticks_ms()  # a (re)connected host gets readings at once

    # ---- one pass of the main loop

    def poll(self, now=None):
        now = ticks_ms() if now is None else now
        data = self.uart.read()
        if data:
            for kind, seq, payload in self.decoder.feed(data):
                self.handle(kind, seq, payload, now)
        if self.button is not None:
            self._poll_button(now)
        if self.haptic is not None:
            self.haptic.poll(now)
        if ticks_diff(now, self._next_lux) >= 0:
            self._next_lux = ticks_add(now, self.lux_interval_ms)
            self._read_lux(now)
        if self.battery is not None and ticks_diff(now, self._next_battery) >= 0:
            self._next_battery = ticks_add(now, BATTERY_MS)
            self.send(wire.BATTERY, min(65535, int(self.battery.read_u16() * 3300 * BATTERY_DIVIDER / 65535)))
        if ticks_diff(now, self._next_heartbeat) >= 0:
            self._next_heartbeat = ticks_add(now, HEARTBEAT_MS)
            self.send(wire.HEARTBEAT, ticks_diff(now, self._started) & 0xFFFFFFFF)

    def handle(self, kind, seq, payload, now):
        values = wire.unpack(kind, payload)
        if kind == wire.PING:
            if values is not None:
                self.send(wire.PONG, values[0])
            return
        if kind == wire.HELLO_REQ:
            self.hello()
            return
        if kind not in (wire.HAPTIC, wire.SET_RATE):
            self.send(wire.ACK, seq, wire.ACK_UNKNOWN)
            return
        if values is None:
            self.send(wire.ACK, seq, wire.ACK_BAD_PAYLOAD)
        elif kind == wire.HAPTIC:
            if self.haptic is None:
                self.send(wire.ACK, seq, wire.ACK_UNSUPPORTED)
            else:
                ok = self.haptic.play(values[0], now)
                self.send(wire.ACK, seq, wire.ACK_OK if ok else wire.ACK_BAD_PAYLOAD)
        else:
            self.lux_interval_ms = max(MIN_LUX_INTERVAL_MS, values[0])
            self._next_lux = now
            self.send(wire.ACK, seq, wire.ACK_OK)

    def _read_lux(self, now):
        if self.sensor is None:
            if self.i2c is not None and ticks_diff(now, self._next_sensor_retry) >= 0:
                self._next_sensor_retry = ticks_add(now, SENSOR_RETRY_MS)
                self.sensor = find_sensor(self.i2c)
                if self.sensor is not None:
                    self.hello()
            return
        try:
            self.send(wire.LUX, self.sensor.lux())
        except OSError:  # unplugged or glitching sensor: say so, look for it again later
            self.sensor = None
            self._next_sensor_retry = ticks_add(now, SENSOR_RETRY_MS)
            self.send(wire.SENSOR_ERROR, wire.SENSOR_READ_FAILED)

    def _poll_button(self, now):
        raw = self.button.value()
        if raw != self._raw:
            self._raw, self._raw_since = raw, now
            return
        pressed = raw == 0
        if ticks_diff(now, self._raw_since) < DEBOUNCE_MS:
            return
        if pressed and not self._pressed:
            self._pressed, self._down_at, self._held = True, now, False
        elif pressed and not self._held and ticks_diff(now, self._down_at) >= HOLD_MS:
            self._held = True
            self.send(wire.BUTTON, wire.BUTTON_HOLD)
        elif not pressed and self._pressed:
            self._pressed = False
            if not self._held:
                self.send(wire.BUTTON, wire.BUTTON_TAP)


def run():
    from machine import ADC, I2C, PWM, UART, Pin

    import haptic

    uart = UART(UART_ID, baudrate=BAUDRATE, tx=Pin(UART_TX), rx=Pin(UART_RX))
    i2c = I2C(I2C_ID, sda=Pin(I2C_SDA), scl=Pin(I2C_SCL), freq=I2C_FREQ)
    bridge = Bridge(
        uart,
        i2c,
        button=Pin(BUTTON_PIN, Pin.IN, Pin.PULL_UP),
        battery=ADC(BATTERY_ADC),
        haptic=haptic.Haptic(PWM(Pin(MOTOR_PIN))),
    )
    while True:
        bridge.poll()
        sleep_ms(2)
