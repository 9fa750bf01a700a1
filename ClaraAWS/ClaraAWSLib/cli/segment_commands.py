"""Commands that run a model: models, segment, annotate, deepgrow, deepedit."""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Optional

from ..core.errors import ClaraError, InputError
from ..core.server_text import one_line
from .connection import open_client
from .options import SharedOptions, add_io_arguments, labelled_voxel_index, voxel_index


def add_commands(commands, options: SharedOptions) -> None:
    connection = options.connection
    models = commands.add_parser("models", parents=[connection], help="list the models a server offers")
    models.set_defaults(run=cmd_models)
    models.add_argument("--json", action="store_true", help="print a JSON array, one object per model")
    models.add_argument("--type", help="only models of this type (segmentation, annotation, deepgrow, ...)")
    models.add_argument("--label", help="only models with this label")

    segment = commands.add_parser("segment", parents=[connection], help="auto-segment a volume")
    segment.set_defaults(run=cmd_segment)
    add_io_arguments(segment)

    annotate = commands.add_parser("annotate", parents=[connection], help="segment from >= 6 extreme points (dextr3d)")
    annotate.set_defaults(run=cmd_annotate)
    add_io_arguments(annotate)
    annotate.add_argument("--point", action="append", default=[], metavar="I,J,K", type=voxel_index, help="extreme point, voxel index of INPUT (repeat >= 6 times)")
    annotate.add_argument("--session", action="store_true", help="upload the volume once into a server session, then send only the points")

    deepgrow = commands.add_parser("deepgrow", parents=[connection], help="segment from foreground/background clicks")
    deepgrow.set_defaults(run=cmd_deepgrow)
    add_io_arguments(deepgrow)
    deepgrow.add_argument("--fg", action="append", default=[], metavar="I,J,K", type=voxel_index, help="foreground click, voxel index (repeatable)")
    deepgrow.add_argument("--bg", action="append", default=[], metavar="I,J,K", type=voxel_index, help="background click, voxel index (repeatable)")
    deepgrow.add_argument("--session", action="store_true", help="upload the volume once into a server session, then send only the clicks")

    deepedit = commands.add_parser("deepedit", parents=[connection], help="segment from clicks per label (MONAI Label deepedit models)")
    deepedit.set_defaults(run=cmd_deepedit)
    add_io_arguments(deepedit)
    deepedit.add_argument("--click", action="append", default=[], metavar="LABEL=I,J,K", type=labelled_voxel_index,
                          help="a click on label LABEL ('background' for background), voxel index (repeatable)")


def cmd_models(args) -> int:
    with open_client(args) as client:
        models = client.models(label=args.label, type=args.type)
    if args.json:
        print(json.dumps([_model_json(m) for m in models], indent=2))
        return 0
    if not models:
        print("The server offers no models" + (" matching the filter." if args.type or args.label else "."))
        return 0
    # What the server wrote goes to the terminal as clean lines (--json keeps it exact, escaped by JSON).
    rows = [(one_line(m["name"], 80), one_line(m["type"], 40), one_line(", ".join(m["labels"]) or "-", 400),
             one_line(m.get("description") or "", 400)) for m in models]
    width = max(len(name) for name, *_ in rows)
    for name, kind, labels, description in rows:
        print(f"{name:<{width}}  {kind:<12}  {labels}")
        if description:
            print(f"{'':<{width}}  {description}")
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
    return _run_work(args, DEEPEDIT, {"clicks": clicks}, points={"foreground": [p for _, p in args.click]},
                     connect=_open_monailabel_backend)


def _open_monailabel_backend(args):
    """The backend of --server when it is a MONAI Label server; an AIAA one is refused before any model lookup
    (it has no deepedit model, and "no model named ..." would hide why)."""
    client = open_client(args)
    if client.kind != "monailabel":
        # Named by the backend's base URL: the wire keeps a user:password@ of --server apart from it.
        shown = client.base_url
        client.close()
        raise InputError(f"deepedit needs a MONAI Label server; {shown} is an AIAA server.")
    return client


def _run_work(args, task: str, arguments: dict, points: Optional[dict] = None, connect=open_client) -> int:
    from ..backends import check_points_inside
    from ..core.geometry import result_on_grid
    from ..core.nifti import encode_volume
    from ..core.volume_files import check_output_path, write_image_file
    from ..datasets import read_input

    # Everything that can be checked here is checked before the network: a bad OUTPUT, URL, header or
    # point found after a long upload and inference would waste both.
    output = check_output_path(args.output, args.input)
    progress = TerminalProgress()
    volume = read_input(args.input)  # an image file or a folder holding one DICOM series
    check_points_inside(points or {}, volume.grid)
    image = encode_volume(volume)
    with connect(args) as client:
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
