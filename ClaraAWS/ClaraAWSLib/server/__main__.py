"""``python -m ClaraAWSLib.server [--host H] [--port P]``: the reference server without the full CLI."""

from __future__ import annotations

import argparse
import sys

from .reference import serve_forever_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ClaraAWSLib.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    parser.add_argument("--session-expiry", type=int, default=3600, help="session lifetime limit, seconds")
    parser.add_argument("--max-upload-mb", type=float, default=None, help="refuse larger request bodies (413)")
    args = parser.parse_args(argv)
    return serve_forever_cli(args.host, args.port, args.session_expiry, args.max_upload_mb)


if __name__ == "__main__":
    sys.exit(main())
