"""The `dexrl` command: one way in to every job. ``parser`` builds the command line, whose
commands run in ``train`` (dexrl train) and ``commands`` (the others)."""

from __future__ import annotations

import os
import sys

from dexrl.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    command = " ".join(filter(None, (args.command, getattr(args, "bench", None))))
    try:
        code = args.fn(args) or 0
    except (ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("DEXRL_DEBUG"):  # the whole traceback, for a report of a defect
            raise
        # Errors a user can cause (a bad option, a path that is a file or a folder where the
        # other was meant) end with one line, not a stack trace; MuJoCo's parser messages
        # span lines ("XML Error: ...\nElement 'x', line 2").
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"dexrl {command}: error: {message}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"\ndexrl {command}: interrupted", file=sys.stderr)
        code = 130
    if code and "RANK" in os.environ:
        sys.exit(code)  # a launched rank reports failure through its exit code
    return code
