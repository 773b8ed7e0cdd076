"""The serial bridge to the microcontroller: firmware (MicroPython, firmware/), protocol, host link, simulator.

firmware/wire.py is the one definition of the frames; the firmware and the host both import it.
"""
