"""BH1750 ambient light sensor over I2C (address 0x23 with ADDR low, 0x5C with ADDR high)."""

ADDRESSES = (0x23, 0x5C)
_POWER_ON = 0x01
_CONTINUOUS_HIGH_RES = 0x10


class BH1750:
    name = "BH1750"

    def __init__(self, i2c, address=0x23):
        self.i2c, self.address = i2c, address
        self.i2c.writeto(address, bytes((_POWER_ON,)))
        self.i2c.writeto(address, bytes((_CONTINUOUS_HIGH_RES,)))  # 1 lx resolution, new value every 120 ms

    def lux(self):
        raw = self.i2c.readfrom(self.address, 2)
        return ((raw[0] << 8) | raw[1]) / 1.2  # datasheet: counts / 1.2 = lx at the default MTreg
