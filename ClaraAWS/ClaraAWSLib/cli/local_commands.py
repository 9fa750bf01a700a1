"""Commands that run on this machine: the reference server and the demo."""

from __future__ import annotations

from pathlib import Path

from .options import SharedOptions, accept_negative_voxel_indices, voxel_size

#: The longest phantom edge. The preview PNG of a long, thin phantom is enlarged to a readable height, so
#: it grows dozens of times that edge wide: 2048 voxels take about 0.6 GB, and past about 10,000 the PNG
#: writer refuses the width and the demo fails after writing its other files.
DEMO_MAX_EDGE_VOXELS = 2048


def add_commands(commands, options: SharedOptions) -> None:
    common = options.common
    serve = commands.add_parser("serve", parents=[common], help="run the local AIAA-compatible reference server")
    serve.set_defaults(run=cmd_serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    from ..server.gpu_play import add_gpu_play_arguments
    from ..server.limits import MIN_IMAGE_EDGE_VOXELS, ServerLimits, add_limit_arguments

    add_limit_arguments(serve)
    add_gpu_play_arguments(serve)

    demo = commands.add_parser("demo", parents=[common], help="local server + synthetic CT + auto-segmentation, with files to look at")
    demo.set_defaults(run=cmd_demo)
    demo.add_argument("--out", default="clara-aws-demo", metavar="DIR", help="output folder (default ./clara-aws-demo)")
    # Checked while parsing, so a size the demo cannot use fails before it makes a folder or a phantom: its
    # own reference server refuses images thinner than the models need (HTTP 400) and images over its voxel
    # limit (HTTP 413), and the demo takes about 2 GB of memory at that limit.
    demo_size = voxel_size(MIN_IMAGE_EDGE_VOXELS, DEMO_MAX_EDGE_VOXELS, ServerLimits.max_image_voxels)
    accept_negative_voxel_indices(demo)  # so that --size -1,2,3 gets the size sentence, not "expected one argument"
    demo.add_argument("--size", default="192,192,96", metavar="I,J,K", type=demo_size,
                      help=f"phantom size in voxels: {MIN_IMAGE_EDGE_VOXELS} to {DEMO_MAX_EDGE_VOXELS} along each axis, "
                           f"at most {ServerLimits.max_image_voxels / 1e6:g} million in all (default 192,192,96)")


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
