"""MONAI Label's active-learning loop: next (an image to label), submit (its label), train."""

from __future__ import annotations

import json
import sys

from ..core.errors import InputError
from .connection import open_monailabel_client
from .options import SharedOptions


def add_commands(commands, options: SharedOptions) -> None:
    connection = options.connection
    next_sample = commands.add_parser("next", parents=[connection], help="fetch the next image to label from a MONAI Label datastore")
    next_sample.set_defaults(run=cmd_next)
    next_sample.add_argument("--strategy", help="active-learning strategy (default: random, else the server's first)")
    next_sample.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="where to write the image")
    next_sample.add_argument("--json", action="store_true", help='print {"id": ..., "path": OUTPUT}')

    submit = commands.add_parser("submit", parents=[connection], help="save a label image for a MONAI Label datastore image")
    submit.set_defaults(run=cmd_submit)
    submit.add_argument("--image-id", required=True, metavar="ID", help="the datastore image the label belongs to")
    submit.add_argument("labels", metavar="LABELS", help="label image on the datastore image's grid, in the server's label values")
    submit.add_argument("--tag", default="final", help="label tag (default final: a label to train on)")
    submit.add_argument("--model", help="model or trainer whose label names the values mean (default: the first trainer)")

    train = commands.add_parser("train", help="start, watch or stop training on a MONAI Label server")
    train.set_defaults(run=cmd_train)
    train_commands = train.add_subparsers(dest="train_command", metavar="ACTION")
    train_commands.required = True
    train_start = train_commands.add_parser("start", parents=[connection], help="start training a model")
    train_start.add_argument("--model", required=True, help="trainer name (see /info/ trainers)")
    train_start.add_argument("--max-epochs", type=int, metavar="N", help="epochs to train")
    train_start.add_argument("--wait", action="store_true", help="show progress on stderr until the run ends")
    train_status = train_commands.add_parser("status", parents=[connection], help="the latest training run")
    train_status.add_argument("--json", action="store_true", help="print the status as a JSON object")
    train_commands.add_parser("stop", parents=[connection], help="stop the running training")


def cmd_next(args) -> int:
    from ..core.volume_files import check_output_path, write_image_file

    output = check_output_path(args.output)
    with open_monailabel_client(args, "next") as client:
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

    from ..core.volume_files import read_image_file

    labels = read_image_file(args.labels)
    with open_monailabel_client(args, "submit") as client:
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
    with open_monailabel_client(args, "train") as client:
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
