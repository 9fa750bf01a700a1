"""The ``clara-aws`` command line: the same client path as the Slicer panel, for scripts and batch work.

Exit codes: 0 success, 1 server or network failure, 2 bad input, usage or unusable geometry,
3 AWS discovery failure, 130 interrupted. A failure prints one line on stderr (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .. import __version__
from ..core.errors import CancelledError, ClaraError, DiscoveryError, GeometryError, InputError

SERVER_ENVIRONMENT_VARIABLE = "CLARA_AIAA_URL"
PASSWORD_ENVIRONMENT_VARIABLE = "CLARA_PASSWORD"


# --- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clara-aws",
        description="AI-assisted segmentation with NVIDIA Clara AIAA and MONAI Label servers (on AWS or local).",
    )
    parser.add_argument("--version", action="version", version=f"clara-aws {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print a traceback on failure")

    connection = argparse.ArgumentParser(add_help=False, parents=[common])
    where = connection.add_argument_group("server")
    where.add_argument("--server", metavar="URL", help=f"AIAA server URL, scheme://host[:port][/prefix] (default: ${SERVER_ENVIRONMENT_VARIABLE})")
    where.add_argument("--stack", metavar="NAME", help="find the server URL in this CloudFormation stack's ClaraServiceUrl output")
    where.add_argument("--backend", choices=("aiaa", "monailabel", "auto"), default="auto",
                       help="the server's protocol (default: detected; AIAA answers /v1/models, MONAI Label /info/)")
    where.add_argument("--username", help="MONAI Label with auth on: log in as this user (password from $CLARA_PASSWORD)")
    _add_aws_arguments(where)
    tls = connection.add_argument_group("TLS and HTTP")
    tls.add_argument("--ca-bundle", metavar="PEM", help="verify the server's certificate against this CA bundle")
    tls.add_argument("--insecure", action="store_true", help="do NOT verify the server's TLS certificate (trusted test servers only)")
    tls.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra request header, e.g. for a proxy's auth (repeatable)")
    tls.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="seconds to wait for a connection (default 10)")
    tls.add_argument("--read-timeout", type=float, default=900.0, metavar="S", help="seconds to wait for an answer (default 900)")
    tls.add_argument("--deadline", type=float, default=3600.0, metavar="S",
                     help="seconds a whole request may take, however slowly the bytes arrive (default 3600)")

    models = commands.add_parser("models", parents=[connection], help="list the models a server offers")
    models.add_argument("--json", action="store_true", help="print a JSON array, one object per model")
    models.add_argument("--type", help="only models of this type (segmentation, annotation, deepgrow, ...)")
    models.add_argument("--label", help="only models with this label")

    segment = commands.add_parser("segment", parents=[connection], help="auto-segment a volume")
    _add_io_arguments(segment)

    annotate = commands.add_parser("annotate", parents=[connection], help="segment from >= 6 extreme points (dextr3d)")
    _add_io_arguments(annotate)
    annotate.add_argument("--point", action="append", default=[], metavar="I,J,K", type=_index, help="extreme point, voxel index of INPUT (repeat >= 6 times)")
    annotate.add_argument("--session", action="store_true", help="upload the volume once into a server session, then send only the points")

    deepgrow = commands.add_parser("deepgrow", parents=[connection], help="segment from foreground/background clicks")
    _add_io_arguments(deepgrow)
    deepgrow.add_argument("--fg", action="append", default=[], metavar="I,J,K", type=_index, help="foreground click, voxel index (repeatable)")
    deepgrow.add_argument("--bg", action="append", default=[], metavar="I,J,K", type=_index, help="background click, voxel index (repeatable)")
    deepgrow.add_argument("--session", action="store_true", help="upload the volume once into a server session, then send only the clicks")

    deepedit = commands.add_parser("deepedit", parents=[connection], help="segment from clicks per label (MONAI Label deepedit models)")
    _add_io_arguments(deepedit)
    deepedit.add_argument("--click", action="append", default=[], metavar="LABEL=I,J,K", type=_labelled_index,
                          help="a click on label LABEL ('background' for background), voxel index (repeatable)")

    next_sample = commands.add_parser("next", parents=[connection], help="fetch the next image to label from a MONAI Label datastore")
    next_sample.add_argument("--strategy", help="active-learning strategy (default: random, else the server's first)")
    next_sample.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="where to write the image")
    next_sample.add_argument("--json", action="store_true", help='print {"id": ..., "path": OUTPUT}')

    submit = commands.add_parser("submit", parents=[connection], help="save a label image for a MONAI Label datastore image")
    submit.add_argument("--image-id", required=True, metavar="ID", help="the datastore image the label belongs to")
    submit.add_argument("labels", metavar="LABELS", help="label image on the datastore image's grid, in the server's label values")
    submit.add_argument("--tag", default="final", help="label tag (default final: a label to train on)")
    submit.add_argument("--model", help="model or trainer whose label names the values mean (default: the first trainer)")

    train = commands.add_parser("train", help="start, watch or stop training on a MONAI Label server")
    train_commands = train.add_subparsers(dest="train_command", metavar="ACTION")
    train_commands.required = True
    train_start = train_commands.add_parser("start", parents=[connection], help="start training a model")
    train_start.add_argument("--model", required=True, help="trainer name (see /info/ trainers)")
    train_start.add_argument("--max-epochs", type=int, metavar="N", help="epochs to train")
    train_start.add_argument("--wait", action="store_true", help="show progress on stderr until the run ends")
    train_status = train_commands.add_parser("status", parents=[connection], help="the latest training run")
    train_status.add_argument("--json", action="store_true", help="print the status as a JSON object")
    train_commands.add_parser("stop", parents=[connection], help="stop the running training")

    serve = commands.add_parser("serve", parents=[common], help="run the local AIAA-compatible reference server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    from ..server.limits import add_limit_arguments

    add_limit_arguments(serve)

    demo = commands.add_parser("demo", parents=[common], help="local server + synthetic CT + auto-segmentation, with files to look at")
    demo.add_argument("--out", default="clara-aws-demo", metavar="DIR", help="output folder (default ./clara-aws-demo)")
    demo.add_argument("--size", default="192,192,96", metavar="I,J,K", type=_index, help="phantom size in voxels")

    discover = commands.add_parser("discover", parents=[common], help="find Clara deployments (ClaraServiceUrl) in CloudFormation")
    discover.add_argument("--stack", metavar="NAME", help="only stacks whose name contains NAME")
    _add_aws_arguments(discover)
    discover.add_argument("--json", action="store_true", help="print a JSON array, one object per deployment")
    return parser


def _add_aws_arguments(group) -> None:
    group.add_argument("--profile", help="AWS profile (default: the environment's)")
    group.add_argument("--region", help="AWS region (default: the profile's or the environment's)")
    group.add_argument("--aws-endpoint-url", metavar="URL", help="CloudFormation endpoint (VPC endpoints, local test servers)")
    group.add_argument("--alias", action="append", default=[], metavar="STACK=HOST", help="DNS alias whose certificate the stack's HTTPS load balancer presents (repeatable)")
    group.add_argument("--output-key", action="append", default=[], metavar="KEY",
                       help="stack output holding the server address (repeatable; default ClaraServiceUrl)")


def _add_io_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="input volume (any format SimpleITK reads)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="label image to write, on INPUT's grid")
    parser.add_argument("--model", required=True, help="model name (see 'clara-aws models')")


def _index(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not I,J,K with three whole numbers") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' is not I,J,K with three whole numbers")
    return values


def _labelled_index(text: str):
    label, sep, point = text.rpartition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not LABEL=I,J,K")
    return label.strip(), _index(point)


# --- commands -------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
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


def _aliases(args) -> Dict[str, str]:
    aliases = {}
    for item in args.alias:
        stack, _, host = item.partition("=")
        if not stack or not host:
            raise InputError(f"--alias '{item}' is not STACK=HOST; give e.g. --alias clara-prod=clara.example.org.")
        aliases[stack] = host
    return aliases


def _server_url(args) -> str:
    if args.server and args.stack:
        raise InputError("Give either --server or --stack, not both.")
    if args.stack:
        from ..aws import discovery as aws

        return aws.resolve_stack_url(
            args.stack, profile=args.profile, region=args.region, endpoint_url=args.aws_endpoint_url, aliases=_aliases(args),
            output_keys=args.output_key or None,
        )
    url = args.server or os.environ.get(SERVER_ENVIRONMENT_VARIABLE)
    if not url:
        raise InputError(f"No server given; pass --server URL or --stack NAME, or set {SERVER_ENVIRONMENT_VARIABLE}.")
    return url


def _client(args):
    from ..backends import connect

    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header '{item}' is not 'Name: value'.")
        headers[name.strip()] = value.strip()
    if args.insecure and args.ca_bundle:
        raise InputError("Give either --ca-bundle or --insecure, not both.")
    verify = False if args.insecure else (args.ca_bundle or True)
    options = dict(verify=verify, headers=headers, connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
                   deadline=args.deadline)
    if args.username:
        # Never a command-line argument: it would show in the process list and the shell history.
        options.update(username=args.username, password=os.environ.get(PASSWORD_ENVIRONMENT_VARIABLE, ""))
    if args.insecure:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        print("clara-aws: warning: TLS certificate verification is OFF.", file=sys.stderr)
    return connect(_server_url(args), backend=args.backend, **options)


def _monailabel_client(args, what: str):
    from ..backends import supports_active_learning

    client = _client(args)
    if not supports_active_learning(client):
        client.close()
        raise InputError(f"{what} needs a MONAI Label server; {args.server or 'this server'} is an AIAA server.")
    return client


def cmd_models(args) -> int:
    with _client(args) as client:
        models = client.models(label=args.label, type=args.type)
    if args.json:
        print(json.dumps([_model_json(m) for m in models], indent=2))
        return 0
    if not models:
        print("The server offers no models" + (" matching the filter." if args.type or args.label else "."))
        return 0
    width = max(len(m["name"]) for m in models)
    for model in models:
        print(f"{model['name']:<{width}}  {model['type']:<12}  {', '.join(model['labels']) or '-'}")
        if model.get("description"):
            print(f"{'':<{width}}  {model['description']}")
    return 0


def _model_json(model: dict) -> dict:
    """The contract's keys first (name, type, labels in value order, label_values, description), then the rest."""
    keys = ("name", "type", "labels", "label_values", "description")
    return {**{key: model.get(key) for key in keys}, **{k: v for k, v in model.items() if k not in keys}}


def cmd_segment(args) -> int:
    from ..backends import AUTO_SEGMENT

    return _run_work(args, AUTO_SEGMENT, {})


def cmd_annotate(args) -> int:
    from ..backends import ANNOTATE
    from ..backends import MIN_EXTREME_POINTS

    if len(args.point) < MIN_EXTREME_POINTS:
        raise InputError(
            f"annotate needs at least {MIN_EXTREME_POINTS} --point I,J,K extreme points; {len(args.point)} given."
        )
    return _run_work(args, ANNOTATE, {"points": args.point}, points={"points": args.point})


def cmd_deepgrow(args) -> int:
    from ..backends import DEEPGROW

    if not args.fg:
        raise InputError("deepgrow needs at least one --fg I,J,K foreground click.")
    arguments = {"foreground": args.fg, "background": args.bg, "current_point": args.fg[-1]}
    return _run_work(args, DEEPGROW, arguments, points={"foreground": args.fg, "background": args.bg})


def cmd_deepedit(args) -> int:
    from ..backends import DEEPEDIT

    if not args.click:
        raise InputError("deepedit needs at least one --click LABEL=I,J,K.")
    clicks: Dict[str, List[List[int]]] = {}
    for label, point in args.click:
        clicks.setdefault(label, []).append(point)
    return _run_work(args, DEEPEDIT, {"clicks": clicks}, points={"foreground": [p for _, p in args.click]})


def _run_work(args, task: str, arguments: dict, points: Optional[dict] = None) -> int:
    from ..backends import check_points_inside
    from ..core.geometry import result_on_grid
    from ..core.imageio import check_output_path, encode_volume, read_image_file, write_image_file

    # Everything that can be checked here is checked before the network: a bad OUTPUT, URL, header or
    # point found after a long upload and inference would waste both.
    output = check_output_path(args.output, args.input)
    progress = TerminalProgress()
    volume = read_image_file(args.input)
    check_points_inside(points or {}, volume.grid)
    image = encode_volume(volume)
    with _client(args) as client:
        # Ask for the model first: a wrong name or type fails before a large upload, not after.
        model = client.check_model_task(client.model(args.model), task)
        session = None
        if getattr(args, "session", False):
            session = client.create_session(image, progress=progress)
            progress.done()
        source = {"session": session} if session is not None else {"image": image}
        try:
            result = client.run_task(task, model, **arguments, **source, progress=progress)
        finally:
            progress.done()
            if session is not None:
                try:
                    client.close_session(session)
                except ClaraError:
                    pass  # the server forgets it at expiry anyway
    labels = result.labels()
    on_input_grid = result_on_grid(labels, volume.grid)  # refuses results it cannot place
    write_image_file(on_input_grid, output)
    print(f"Wrote {output} ({_summary(on_input_grid)})", file=sys.stderr)
    return 0


def cmd_next(args) -> int:
    from ..core.imageio import check_output_path, write_image_file

    output = check_output_path(args.output)
    with _monailabel_client(args, "next") as client:
        sample = client.next_sample(args.strategy)
        if sample is None:
            print("clara-aws: every image of the datastore has a final label; nothing to fetch.", file=sys.stderr)
            print(json.dumps({"id": None, "path": None}) if args.json else "")
            return 0
        volume = client.download_image(sample["id"])
    write_image_file(volume, output)
    print(json.dumps({"id": sample["id"], "path": str(output)}) if args.json else sample["id"])
    return 0


def cmd_submit(args) -> int:
    import numpy as np

    from ..core.imageio import read_image_file

    labels = read_image_file(args.labels)
    with _monailabel_client(args, "submit") as client:
        values = client.label_values(args.model)
        present = {int(v) for v in np.unique(labels.array) if v != 0}
        unknown = sorted(present - set(values.values()))
        if unknown:
            known = ", ".join(f"{name}={value}" for name, value in values.items())
            raise InputError(
                f"{args.labels} holds the label value(s) {', '.join(map(str, unknown))}, which the server's labels do not use "
                f"({known}); relabel it or name the model with --model."
            )
        client.save_label(args.image_id, labels, values, tag=args.tag)
        counts = client.datastore_counts()
    print(f"Saved the {args.tag} label of {args.image_id}; the datastore has {counts.get('completed')} of "
          f"{counts.get('total')} images labeled.", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    with _monailabel_client(args, "train") as client:
        if args.train_command == "start":
            task = client.start_training(args.model, args.max_epochs)
            print(f"Training of {args.model} {str(task.get('status', 'SUBMITTED')).lower()}.", file=sys.stderr)
            if not args.wait:
                return 0
            status = client.wait_for_training(report=_training_reporter())
            return _training_outcome(status)
        if args.train_command == "status":
            status = client.training_status()
            if args.json:
                print(json.dumps(status.as_dict()))
            else:
                print("No training has run on this server." if status.status == "NONE" else status.summary())
            return 0
        stopped = client.stop_training()
        print("Stopped the training." if stopped else "No training was running.", file=sys.stderr)
        return 0


def _training_reporter():
    shown = {"text": ""}

    def report(status) -> None:
        text = status.summary()
        if text != shown["text"]:
            shown["text"] = text
            print(f"training: {text}", file=sys.stderr, flush=True)

    return report


def _training_outcome(status) -> int:
    if status.status == "DONE":
        print(f"Training finished: {status.summary()}.", file=sys.stderr)
        return 0
    lines = [line.strip() for line in status.details if line.strip()]
    # A traceback ends in hints ("For details ... visit"); the line naming the exception says more.
    last = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1] if lines else "")
    reason = f" Its log says: {last[:300]}" if last and status.status == "ERROR" else ""
    print(f"clara-aws: error: the training ended {status.status}, not DONE.{reason}", file=sys.stderr)
    return 1


def _summary(labels) -> str:
    import numpy as np

    values, counts = np.unique(labels.array, return_counts=True)
    found = [f"label {int(v)}: {int(c)} voxels" for v, c in zip(values, counts) if v != 0]
    return "; ".join(found) if found else "no voxel labelled"


class TerminalProgress:
    """Upload progress on a terminal (stderr), silent when stderr is not one."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._shown = -1

    def __call__(self, sent: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        percent = int(100 * sent / total)
        if percent != self._shown:
            self._shown = percent
            print(f"\rUploading {sent / 1e6:.1f} of {total / 1e6:.1f} MB ({percent}%)", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self._shown >= 0:
            print(file=sys.stderr)
        self._shown = -1


def cmd_serve(args) -> int:
    from ..server import serve_forever_cli

    from ..server.limits import limits_from_arguments

    return serve_forever_cli(args.host, args.port, limits=limits_from_arguments(args))


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), size=tuple(args.size))
    return 0


def cmd_discover(args) -> int:
    from ..aws import discovery as aws

    deployments = aws.discover(
        profile=args.profile, region=args.region, stack_filter=args.stack, endpoint_url=args.aws_endpoint_url, aliases=_aliases(args),
        output_keys=args.output_key or None,
    )
    if args.json:
        print(json.dumps([d.as_dict() for d in deployments], indent=2))
        return 0
    for deployment in deployments:
        print(f"{deployment.stack_name} ({deployment.region}): {deployment.url}")
        if deployment.note:
            print(f"  note: {deployment.note}")
    return 0


COMMANDS = {
    "models": cmd_models,
    "segment": cmd_segment,
    "annotate": cmd_annotate,
    "deepgrow": cmd_deepgrow,
    "deepedit": cmd_deepedit,
    "next": cmd_next,
    "submit": cmd_submit,
    "train": cmd_train,
    "serve": cmd_serve,
    "demo": cmd_demo,
    "discover": cmd_discover,
}


if __name__ == "__main__":
    sys.exit(main())
