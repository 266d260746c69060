"""The one ``main`` of the project's subcommand CLIs (``ssl_model``, ``units``, ``layer_weights``).

Each subparser sets ``func``; bad input (:class:`~espnet2_ext.utils.fileio.DataError` or another
``ValueError``) becomes one ``<prog> <command>: error: ...`` line on stderr and exit status 1
instead of a traceback, so run.sh and the job logs show what to fix.
"""

from __future__ import annotations

import argparse
import logging
import sys

from espnet2_ext.utils.fileio import DataError


def run_subcommand(parser: argparse.ArgumentParser, argv: list[str] | None, prog: str) -> int:
    """Parse ``argv`` (default ``sys.argv``), run the chosen subcommand and return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (DataError, ValueError) as e:
        print(f"{prog} {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0
