"""The ``zsad`` command line.

Every subcommand has ``--help`` with examples. Errors print one ``zsad: error: ...`` line that says what to fix and
exit with status 2 (1 for unexpected failures, 130 on Ctrl-C).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from zsad.cli.options import parse_set
from zsad.cli.parser import build_parser
from zsad.errors import ZsadError

__all__ = ["build_parser", "main", "parse_set"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``zsad`` with ``argv`` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZsadError as exc:
        print(f"zsad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zsad: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `zsad weights list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

