"""`python -m sevila_lib ask VIDEO --question ... --options ...`: the forward chain on your own video (`ask.py`).

The other command-line tools keep their modules: `python -m sevila_lib.notebooks`, `.datasets`, `.training`,
`.mini`, `.world`, `.gpu_check`.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevila_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    from .ask import add_arguments, main as ask_main

    add_arguments(sub.add_parser("ask", help="answer a multiple-choice question about a video file"))
    return ask_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
