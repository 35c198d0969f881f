"""stubborn: ignores SIGTERM and runs until its timeout; only SIGKILL ends it."""

import signal
import time


def ignore(signum: int, frame: object) -> None:
    print("stubborn: got SIGTERM, ignoring it", flush=True)


signal.signal(signal.SIGTERM, ignore)
print("stubborn: ready (SIGTERM is ignored)", flush=True)
while True:
    time.sleep(1.0)
