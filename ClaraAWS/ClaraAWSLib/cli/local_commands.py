"""Commands that run on this machine: the reference server and the demo."""

from __future__ import annotations

from pathlib import Path

from .options import SharedOptions, voxel_index


def add_commands(commands, options: SharedOptions) -> None:
    common = options.common
    serve = commands.add_parser("serve", parents=[common], help="run the local AIAA-compatible reference server")
    serve.set_defaults(run=cmd_serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    from ..server.gpu_play import add_gpu_play_arguments
    from ..server.limits import add_limit_arguments

    add_limit_arguments(serve)
    add_gpu_play_arguments(serve)

    demo = commands.add_parser("demo", parents=[common], help="local server + synthetic CT + auto-segmentation, with files to look at")
    demo.set_defaults(run=cmd_demo)
    demo.add_argument("--out", default="clara-aws-demo", metavar="DIR", help="output folder (default ./clara-aws-demo)")
    demo.add_argument("--size", default="192,192,96", metavar="I,J,K", type=voxel_index, help="phantom size in voxels")


def cmd_serve(args) -> int:
    from ..server import serve_forever_cli

    from ..server.gpu_play import gpu_play_from_arguments
    from ..server.limits import limits_from_arguments

    return serve_forever_cli(args.host, args.port, limits=limits_from_arguments(args),
                             gpu=gpu_play_from_arguments(args))


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), size=tuple(args.size))
    return 0
