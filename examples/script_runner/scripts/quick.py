"""quick: prints a few lines and exits with status 0 at once."""

import os
import sys

print(f"quick: hello from pid {os.getpid()}")
print(f"quick: running on Python {sys.version.split()[0]}")
print("quick: done")
