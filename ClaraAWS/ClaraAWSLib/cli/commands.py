"""The ``clara-aws`` command line: the same client path as the Slicer panel, for scripts and batch work.

Exit codes: 0 success, 1 server or network failure, 2 bad input, usage or unusable geometry,
3 AWS discovery failure, 130 interrupted. A failure prints one line on stderr (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Optional, Sequence

from .. import __version__
from ..core.errors import CancelledError, ClaraError, DiscoveryError, GeometryError, InputError
from . import aws_commands, batch_command, local_commands, loop_commands, segment_commands, service_command
from .options import shared_options

#: Each group adds its commands in this order, the order of ``clara-aws --help``; a new group is one more entry.
COMMAND_GROUPS = (segment_commands, loop_commands, batch_command, local_commands, aws_commands, service_command)


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line, as every other failure is; the whole usage is one ``--help`` away."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help').\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="clara-aws",
        description="AI-assisted segmentation with NVIDIA Clara AIAA and MONAI Label servers (on AWS or local).",
    )
    parser.add_argument("--version", action="version", version=f"clara-aws {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    options = shared_options()
    for group in COMMAND_GROUPS:
        group.add_commands(commands, options)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("clara-aws: interrupted; nothing was written.", file=sys.stderr)
        return 130
    except ClaraError as error:
        if args.debug:
            traceback.print_exc()
            if error.details:
                print(error.details, file=sys.stderr)
        print(f"clara-aws: error: {error}", file=sys.stderr)
        return _exit_code(error)
    except Exception as error:  # a bug: still one line, and the traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"clara-aws: error: an unexpected {type(error).__name__} stopped the command; nothing was written: "
              "run it again with --debug and report the traceback.", file=sys.stderr)
        return 1


def _exit_code(error: ClaraError) -> int:
    if isinstance(error, DiscoveryError):
        return 3
    if isinstance(error, (InputError, GeometryError)):
        return 2
    if isinstance(error, CancelledError):
        return 130
    return 1  # server, network, and a server that cannot listen (ListenError)


if __name__ == "__main__":
    sys.exit(main())
