"""``python -m rankpool.interchange``: read the configuration on stdin, print the ports, route."""

from __future__ import annotations

import argparse
import sys

from ..collector import settle_for_service
from .process import read_config, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rankpool.interchange",
        description="rankpool's interchange: routes tasks from one front-end to many MPI pools. "
                    "Reads an InterchangeConfig as one JSON object on stdin, binds, prints "
                    '{"pool_port": P, "client_port": C, "command_port": M} on one line, then '
                    "runs until told to stop.")
    parser.parse_args(argv)
    try:
        config = read_config(sys.stdin)
    except ValueError as exc:
        print(f"rankpool.interchange: bad configuration: {exc}", file=sys.stderr)
        return 2
    settle_for_service()  # a process of its own: its collector is rankpool's to set
    return serve(config, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
