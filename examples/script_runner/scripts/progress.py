"""progress: a slow job, 20 steps of half a second, one progress line per step."""

import time

STEPS = 20

for step in range(1, STEPS + 1):
    print(f"progress: step {step}/{STEPS}", flush=True)
    time.sleep(0.5)
print("progress: done", flush=True)
