"""VEML7700 ambient light sensor over I2C (address 0x10): gain 1, 100 ms integration."""

ADDRESS = 0x10
_ALS_CONF = 0x00
_ALS = 0x04
RESOLUTION = 0.0576
"""lx per count at gain 1 and 100 ms integration (Vishay application note 84323)."""


class VEML7700:
    name = "VEML7700"

    def __init__(self, i2c, address=ADDRESS):
        self.i2c, self.address = i2c, address
        self.i2c.writeto_mem(address, _ALS_CONF, b"\x00\x00")  # gain 1, IT 100 ms, persistence 1, power on

    def lux(self):
        raw = self.i2c.readfrom_mem(self.address, _ALS, 2)
        return (raw[0] | (raw[1] << 8)) * RESOLUTION
