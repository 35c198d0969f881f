"""ask: waits for a line on stdin, as the incident's scripts did.

Run by hand it waits for you to type. Run by the script runner its stdin is
/dev/null, so it reads end-of-file at once and gives up with status 2
instead of waiting forever.
"""

import sys

print("ask: what is your name?", flush=True)
line = sys.stdin.readline()
if not line:
    print("ask: no input (stdin is closed); giving up", flush=True)
    sys.exit(2)
print(f"ask: hello, {line.strip()}!")
