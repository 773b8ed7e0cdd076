"""Ambient light: lux sources and the one day/night rule that decides when the low-light branch runs.

Sources: a gpiozero `LightSensor` (LDR + capacitor; its 0..1 charge-time value mapped to rough
lux), the MCU's lux sensor over the serial bridge (edge/hw/bridge.py), or, as a fallback that needs
no hardware, the mean brightness of the captured frame. `wants_night` is the rule; the wearer loop's
`DayNightSwitch` adds a minimum dwell time to it so a reading hovering around a threshold does not
flip the mode press to press, and a frame seen alone (`analyze`, the offload server, `export
evaluate`, bench) gets `frame_is_night`: the same rule on the frame's brightness as lux.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.config import LightConfig
from edge.errors import HardwareError

if TYPE_CHECKING:
    from edge.parts import Bridge, Switch

_LOGGER = logging.getLogger(__name__)

LOWLIGHT: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
"""The low-light options (`--lowlight`, `?lowlight=`, vision.lowlight) as `Pipeline.analyze(lowlight=…)`
takes them: "auto" leaves the decision to the day/night rule, "on"/"off" force the branch."""

FRAME_FULL_SCALE_LUX = 1000.0
"""Lux taken to give a white frame at a fixed exposure; auto-exposure makes any such figure rough."""
LDR_GAMMA = 0.7
"""Typical LDR slope: resistance ∝ lux^-gamma, and the charge time is proportional to resistance."""


def luma_to_lux(luma: float) -> float:
    """Rough lux from a mean luma 0..255 (undo the sRGB curve, scale to FRAME_FULL_SCALE_LUX)."""
    return FRAME_FULL_SCALE_LUX * (max(0.0, min(255.0, luma)) / 255.0) ** 2.2


def wants_night(lux: float, night: bool | None, night_lux: float, day_lux: float) -> bool:
    """The one day/night rule: the mode a reading asks for, given the current mode (None = none yet).

    Night below `night_lux`; once in night mode, day again only above `day_lux` (hysteresis).
    """
    return lux <= day_lux if night else lux < night_lux


def frame_thresholds(config: LightConfig) -> tuple[float, float]:
    """(night_lux, day_lux) for frame brightness: light.frame_night_luma / frame_day_luma as rough lux."""
    return luma_to_lux(config.frame_night_luma), luma_to_lux(config.frame_day_luma)


def frame_is_night(luma: float, config: LightConfig | None = None) -> bool:
    """The rule for a frame seen alone, with no history and no sensor reading of its own (a photo, an
    offloaded crop, a dataset image): its brightness as lux against the frame thresholds, as the
    wearer loop's switch decides its first frame."""
    return wants_night(luma_to_lux(luma), None, *frame_thresholds(config or LightConfig()))


def ldr_value_to_lux(value: float, dark_lux: float = 1.0) -> float:
    """gpiozero LightSensor value (1 - charge_time/limit) to rough lux.

    `dark_lux` is the light level at which the capacitor just fails to charge within the limit
    (value 0); brighter light charges it faster, following the LDR's power law.
    """
    charge = max(1e-3, 1.0 - max(0.0, min(1.0, value)))
    return dark_lux * charge ** (-1.0 / LDR_GAMMA)


class LuxSource:
    """Something that reports ambient light in (approximate) lux. Context manager; close() idempotent."""

    description = "lux source"

    def read(self) -> float | None:
        """Latest reading in lux, or None when there is none yet."""
        raise NotImplementedError

    def observe(self, luma: float) -> None:
        """Offered the mean luma (0..255) of every captured frame; only frame-based sources use it."""

    def close(self) -> None:
        pass

    def __enter__(self) -> LuxSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameBrightness(LuxSource):
    """Mean luma of the last observed frame, as rough lux (no sensor needed)."""

    description = "frame brightness"

    def __init__(self) -> None:
        self.luma: float | None = None

    def observe(self, luma: float) -> None:
        self.luma = luma

    def read(self) -> float | None:
        return None if self.luma is None else luma_to_lux(self.luma)


class GpioLightSensor(LuxSource):
    """gpiozero `LightSensor` (LDR from 3V3 to the pin, capacitor from the pin to ground)."""

    def __init__(self, pin: str, *, pin_factory: object = None, dark_lux: float = 1.0) -> None:
        from gpiozero import LightSensor

        self.description = f"light sensor on {pin}"
        self._dark_lux = dark_lux
        try:
            self._sensor = LightSensor(pin, pin_factory=pin_factory)
        except Exception as exc:  # noqa: BLE001 — gpiozero raises many kinds (no factory, pin busy, bad name)
            raise HardwareError(f"light.pin {pin}: cannot open the light sensor: {exc}") from exc

    def read(self) -> float | None:
        value = self._sensor.value
        return None if value is None else ldr_value_to_lux(value, self._dark_lux)

    def close(self) -> None:
        self._sensor.close()


class BridgeLightSensor(LuxSource):
    """The MCU's lux sensor (BH1750/VEML7700 over the bridge); frame brightness while it is stale.

    `read()` notes which it used (`used_frame`), so `FallbackSwitch` applies the matching thresholds.
    The bridge itself is owned (and closed) by whoever opened it.
    """

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.description = f"lux sensor on the MCU ({bridge.port})"
        self._frame = FrameBrightness()
        self.used_frame = False

    def observe(self, luma: float) -> None:
        self._frame.observe(luma)

    def read(self) -> float | None:
        lux = self.bridge.lux()
        self.used_frame = lux is None
        return self._frame.read() if lux is None else lux


class FallbackSwitch:
    """A sensor switch (lux thresholds) and a frame switch (luma thresholds), picked per reading.

    Frame brightness on a rough lux scale is not the sensor's scale, so each keeps its own thresholds
    and hysteresis; the mode is the one of the switch that saw the last reading.
    """

    def __init__(self, source: BridgeLightSensor, sensor: DayNightSwitch, frame: DayNightSwitch) -> None:
        self.source, self.sensor, self.frame = source, sensor, frame
        self._night = False

    @property
    def night(self) -> bool:
        return self._night

    def update(self, lux: float | None) -> bool:
        switch = self.frame if self.source.used_frame else self.sensor
        self._night = switch.update(lux)
        return self._night


class DayNightSwitch:
    """Night below `night_lux`, day above `day_lux`, and at least `min_dwell_s` in a mode.

    The first reading sets the mode directly. Between the two thresholds the mode stays as it is,
    and a reading past the other threshold changes it only once the dwell time has passed, so a
    signal jittering around a threshold (even past both, briefly) changes mode rarely, not per press.
    """

    def __init__(
        self,
        night_lux: float,
        day_lux: float,
        min_dwell_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if day_lux <= night_lux:
            raise ValueError(f"day_lux ({day_lux}) must be greater than night_lux ({night_lux})")
        self.night_lux, self.day_lux, self.min_dwell_s = night_lux, day_lux, min_dwell_s
        self._clock = clock
        self._night: bool | None = None
        self._changed_at = 0.0

    @property
    def night(self) -> bool:
        return bool(self._night)

    def update(self, lux: float | None) -> bool:
        """Feed one reading (None = no reading, keep the mode); returns True in night mode."""
        if lux is None:
            return self.night
        now = self._clock()
        night = wants_night(lux, self._night, self.night_lux, self.day_lux)
        if self._night is None:
            self._night, self._changed_at = night, now
            _LOGGER.info("light: starting in %s mode (%.1f lux)", "night" if self._night else "day", lux)
            return self._night
        if night != self._night and now - self._changed_at >= self.min_dwell_s:
            self._night, self._changed_at = not self._night, now
            _LOGGER.info("light: %s mode (%.1f lux)", "night" if self._night else "day", lux)
        return self._night


def open_light(
    config: LightConfig, *, real: bool, clock: Callable[[], float] = time.monotonic, bridge: Bridge | None = None
) -> tuple[LuxSource, Switch]:
    """The configured lux source with its switch; the GPIO sensor falls back to frame brightness.

    "serial" needs the open `bridge` (edge.hw.bridge.Bridge); frame brightness stands in while its
    readings are stale.
    """
    night, day = frame_thresholds(config)
    if config.source == "serial" and bridge is not None:
        sensor = BridgeLightSensor(bridge)
        return sensor, FallbackSwitch(
            sensor,
            DayNightSwitch(config.night_lux, config.day_lux, config.min_dwell_s, clock=clock),
            DayNightSwitch(night, day, config.min_dwell_s, clock=clock),
        )
    if config.source == "serial":
        _LOGGER.warning("light: source serial but no bridge is open (bridge.port); using frame brightness")
    if config.source == "gpio" and real:
        try:
            source: LuxSource = GpioLightSensor(config.pin)
            return source, DayNightSwitch(config.night_lux, config.day_lux, config.min_dwell_s, clock=clock)
        except HardwareError as exc:
            _LOGGER.warning("%s; using frame brightness instead", exc)
    elif config.source == "gpio":
        _LOGGER.info("light: no GPIO (app.hw fake); using frame brightness")
    return FrameBrightness(), DayNightSwitch(night, day, config.min_dwell_s, clock=clock)
