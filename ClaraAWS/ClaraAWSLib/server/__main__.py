"""``python -m ClaraAWSLib.server [--host H] [--port P]``: the reference server without the full CLI."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import ClaraError, InputError
from .gpu_play import add_gpu_play_arguments, gpu_play_from_arguments
from .limits import add_limit_arguments, limits_from_arguments
from .reference import serve_forever_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ClaraAWSLib.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    add_limit_arguments(parser)
    add_gpu_play_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve_forever_cli(args.host, args.port, limits=limits_from_arguments(args),
                                 gpu=gpu_play_from_arguments(args))
    except ClaraError as error:
        print(f"python -m ClaraAWSLib.server: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, InputError) else 1


if __name__ == "__main__":
    sys.exit(main())
