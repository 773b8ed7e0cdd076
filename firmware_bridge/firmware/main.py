"""Boot entry on the board: copy this folder to the Pico (mpremote cp *.py :) and reset."""

import bridge

bridge.run()
