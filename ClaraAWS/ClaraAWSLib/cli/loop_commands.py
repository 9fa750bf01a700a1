"""MONAI Label's active-learning loop: next (an image to label), submit (its label), train."""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Dict, Mapping, Optional, Set, Tuple

from ..core.errors import InputError, NotFoundError
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
    submit.add_argument("--model", help="model or trainer whose label values LABELS uses (default: the first trainer's); "
                        "the values of a model that is not a trainer are mapped by label name to the first trainer's, "
                        "the values training reads")
    submit.add_argument("--allow-empty", action="store_true",
                        help="save a label without any labelled voxel (an image showing none of the labels)")

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
    from ..core.volume_files import read_image_file

    check_label_tag(args.tag)
    labels = read_image_file(args.labels)
    present = whole_label_values(labels, args.labels)
    if not present and not args.allow_empty:
        # Saved as final, an empty label marks the image done and teaches training that it shows nothing.
        raise InputError(f"{args.labels} has no labelled voxel (every value is 0); label the image first, or pass "
                         "--allow-empty if it truly shows none of the labels.")
    with open_monailabel_client(args, "submit") as client:
        values = client.label_values(args.model)
        check_values_known(present, values, args.labels, args.model)
        trainer, trainer_values = values_training_reads(client, args.model, values)
        image_grid = datastore_image_grid(client, args.image_id)
        if not labels.grid.matches(image_grid):
            raise InputError(f"{args.labels} is not on the grid of datastore image {args.image_id} (label: "
                             f"{labels.grid.describe()}; image: {image_grid.describe()}); make the label on the "
                             "image `clara-aws next` wrote for this id, voxel for voxel.")
        labels, mapped = relabelled(labels, present, values, trainer_values, args.labels, args.model, trainer)
        client.save_label(args.image_id, labels, trainer_values, tag=args.tag)
        counts = client.datastore_counts()
    mapping = f" (values mapped by label name to trainer {trainer}'s: {mapped})" if mapped else ""
    print(f"Saved the {args.tag} label of {args.image_id}{mapping}; the datastore has {counts.get('completed')} of "
          f"{counts.get('total')} images labeled.", file=sys.stderr)
    return 0


#: How many unknown label values an error names; an image submitted as a label holds thousands.
LISTED_VALUES = 5

#: More unknown values than this look like intensities, not labels.
IMAGE_LIKE_VALUE_COUNT = 16


def check_label_tag(tag: str) -> None:
    """The server makes a folder of the tag: an empty tag or one with path characters must not reach it."""
    if not tag.strip():
        raise InputError("--tag is empty; give a tag such as final (the default), the label training reads.")
    if "/" in tag or "\\" in tag or ".." in tag or tag == "." or any(unicodedata.category(c) == "Cc" for c in tag):
        raise InputError(f"--tag {tag!r} holds a path character (/, \\, .. or a control character); give a plain "
                         "name such as final.")


def whole_label_values(labels, path) -> Set[int]:
    """The non-zero values of a label image, each checked to be a whole number (int() would cut 1.5 to 1)."""
    import numpy as np

    values = np.unique(labels.array)
    fractional = values[values != np.round(values)]
    if fractional.size:
        shown = ", ".join(f"{float(v):g}" for v in fractional[:LISTED_VALUES])
        more = f" and {fractional.size - LISTED_VALUES} more" if fractional.size > LISTED_VALUES else ""
        raise InputError(f"{path} holds values that are not whole numbers ({shown}{more}); a label holds whole label "
                         "values: round or relabel it and save it again.")
    return {int(v) for v in values if v != 0}


def check_values_known(present: Set[int], values: Mapping[str, int], path, model: Optional[str]) -> None:
    unknown = sorted(present - set(values.values()))
    if not unknown:
        return
    known = ", ".join(f"{name}={value}" for name, value in values.items())
    whose = f"model {model}'s labels" if model else "the server's labels"
    if len(unknown) == 1:
        raise InputError(f"{path} holds the label value {unknown[0]}, which {whose} do not use ({known}); relabel it "
                         "or name the model whose values it uses with --model.")
    shown = unknown if len(unknown) <= LISTED_VALUES else unknown[:LISTED_VALUES - 1] + ["...", unknown[-1]]
    hint = ("is this the image rather than its label?" if len(unknown) > IMAGE_LIKE_VALUE_COUNT or unknown[0] < 0
            else "relabel it or name the model whose values it uses with --model.")
    raise InputError(f"{path} holds {len(unknown):,} values that {whose} do not use ({', '.join(map(str, shown))}; "
                     f"they use {known}): {hint}")


def values_training_reads(client, model: Optional[str], values: Dict[str, int]) -> Tuple[Optional[str], Dict[str, int]]:
    """The trainer a submitted label is for and its name -> value map: the trainer named by ``--model``, else the
    first trainer with labels (as ``label_values`` picks by default); without trainers, ``values`` as they are."""
    trainers = client.trainers()
    if model is None or model in trainers:
        return model, values
    for name, trainer in trainers.items():
        if trainer.get("label_values"):
            return name, dict(trainer["label_values"])
    return None, values


def relabelled(labels, present: Set[int], values: Mapping[str, int], trainer_values: Mapping[str, int], path,
               model: Optional[str], trainer: Optional[str]):
    """The label in the trainer's values, mapped by label name from ``values`` (a DeepEdit liver 6 becomes the
    trainer's liver 2), as integers; returns it with the mapping done ("liver 6->2"), empty when none was needed."""
    import numpy as np

    from ..core.geometry import Volume

    names = {value: name for name, value in values.items()}
    untrained = sorted(names[value] for value in present if names[value] not in trainer_values)
    if untrained:
        raise InputError(f"{path} holds {', '.join(untrained)} of model {model}, which trainer {trainer} does not train "
                         f"(it trains {', '.join(trainer_values)}); clear those voxels or submit for another trainer.")
    target = {value: int(trainer_values[names[value]]) for value in sorted(present)}
    dtype = np.uint8 if max(target.values(), default=0) <= 255 else np.uint16
    if all(old == new for old, new in target.items()) and labels.array.dtype.kind in "iu":
        return labels, ""
    array = np.zeros(labels.array.shape, dtype)
    for old, new in target.items():
        array[labels.array == old] = new
    mapped = ", ".join(f"{names[old]} {old}->{new}" for old, new in target.items() if old != new)
    return Volume(array, labels.grid), mapped


def datastore_image_grid(client, image_id: str):
    """The grid of the datastore image, read from the image itself (the server lists no geometry)."""
    try:
        return client.download_image(image_id).grid
    except NotFoundError:
        raise InputError(f"The server's datastore has no image '{image_id}'; give the id `clara-aws next` printed.") from None


def cmd_train(args) -> int:
    with open_monailabel_client(args, "train") as client:
        if args.train_command == "start":
            task = client.start_training(args.model, args.max_epochs)
            print(f"Training of {args.model} {str(task.get('status', 'SUBMITTED')).lower()}.", file=sys.stderr)
            if not args.wait:
                return 0
            try:
                status = client.wait_for_training(report=_training_reporter())
            except KeyboardInterrupt:
                # Only the waiting ends: the run is the server's, and it goes on until it ends or is stopped.
                print(f"clara-aws: stopped waiting for the training of {args.model}; it goes on on the server: "
                      "`clara-aws train stop` with the same server ends it.", file=sys.stderr)
                return 130
            return _training_outcome(status)
        if args.train_command == "status":
            status = client.training_status()
            if args.json:
                print(json.dumps(status.as_dict()))
            else:
                print(status.summary())
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
