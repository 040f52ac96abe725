"""The ``ichseg`` command-line tool: argparse front end over the subcommand modules."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .commands import load_commands
from .errors import IchsegError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ichseg",
        description="Segment ICH, PHE and IVH on head CT; train, fine-tune and evaluate the models.",
    )
    parser.add_argument("--version", action="version", version=f"ichseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in load_commands():
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except IchsegError as exc:
        if args.verbose:
            raise
        print(f"ichseg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ichseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"ichseg {args.command}: error: out of memory", file=sys.stderr)
        return 3
    except Exception as exc:  # last resort: one line, full trace only with --verbose
        if args.verbose:
            raise
        print(
            f"ichseg {args.command}: internal error: {type(exc).__name__}: {exc} (run with -v for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
