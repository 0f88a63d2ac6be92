"""Helper for the MPI test programs: print a named JSON result line for the test to read."""

import json
import sys


def report(key: str, value: object) -> None:
    print(f"RESULT {key} {json.dumps(value)}", flush=True)
    sys.stdout.flush()
