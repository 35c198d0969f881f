"""Runs one measurement in a fresh process: ``python -m bench._child CASE APPROACH LOOP PARAMS``.

Prints the result as one JSON object on the last line of stdout.
"""

from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str]) -> None:
    case, approach, loop_name, params = argv
    module = importlib.import_module(f"bench.{case}")
    result = module.run(approach, loop_name, json.loads(params))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
