"""``clara-aws demo``: the whole path on this machine, with files to look at.

Starts the reference server on a free loopback port, makes a synthetic abdominal CT, auto-segments it
through the same client path the Slicer panel uses, writes the CT, the labels and a PNG preview, and
prints the Dice score per organ and the time of each stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Sequence, TextIO

import numpy as np

from ..backends import connect
from ..core.errors import OutputError
from ..core.geometry import result_on_grid
from ..core.nifti import encode_volume
from ..core.volume_files import write_image_file
from ..synthetic.preview import overlay_colour, write_preview

DEMO_MODEL = "phantom_abdomen_seg"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


def run_demo(out: Path, size: Sequence[int] = (192, 192, 96), stream: TextIO = None) -> Dict[str, float]:
    import sys

    from ..synthetic.phantom import make_phantom
    from ..server import ReferenceServer

    stream = stream or sys.stdout
    out = _output_folder(Path(out))

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    started = time.perf_counter()
    phantom = make_phantom(size=tuple(size))
    phantom_seconds = time.perf_counter() - started
    ct_path, truth_path = out / "ct.nii.gz", out / "truth.nii.gz"
    write_image_file(phantom.ct, ct_path)
    write_image_file(phantom.truth, truth_path)
    say(f"Synthetic CT {list(phantom.ct.grid.size)} voxels, spacing {list(phantom.ct.grid.spacing)} mm ({phantom_seconds:.2f} s)")

    with ReferenceServer(host="127.0.0.1", port=0) as server, connect(server.url, backend="aiaa") as client:
        say(f"Reference AIAA server at {server.url}")
        model = client.model(DEMO_MODEL)
        say(f"Model {model['name']} ({model['type']}): {', '.join(model['labels'])}")
        timings: Dict[str, float] = {}
        t = time.perf_counter()
        encoded = encode_volume(phantom.ct)
        timings["encode"] = time.perf_counter() - t
        result = client.inference(DEMO_MODEL, encoded)
        timings.update({key: result.timings[key] for key in ("upload", "wait", "download")})
        t = time.perf_counter()
        labels = result_on_grid(result.labels(), phantom.ct.grid)
        timings["decode"] = time.perf_counter() - t

    labels_path = out / "segmentation.nii.gz"
    write_image_file(labels, labels_path)
    preview_path = write_preview(phantom.ct, labels, out / "preview.png")

    say(f"Uploaded {encoded.size_bytes / 1e6:.1f} MB (raw {phantom.ct.array.nbytes / 1e6:.1f} MB)")
    say("Stage times: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items() if name != "wait"))
    say(f"  (inference on the server, as the client waited: {timings['wait']:.2f} s)")
    scores = {}
    for value, name in enumerate(model["labels"], start=1):
        truth_value = phantom.labels.index(name) + 1 if name in phantom.labels else value
        scores[name] = dice(labels.array == value, phantom.truth.array == truth_value)
        say(f"  Dice {name:<14} {scores[name]:.3f}   overlay colour RGB{overlay_colour(value)}")
    say(f"Files: {ct_path}, {labels_path}, {truth_path}, {preview_path}")
    say("Open ct.nii.gz and segmentation.nii.gz in 3D Slicer (as a segmentation) to inspect them.")
    return scores


def _output_folder(out: Path) -> Path:
    """``out`` as an existing, writable folder; OutputError (one sentence) when it cannot be one."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; give a folder name such as clara-aws-demo.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"The demo folder {out} cannot be created ({error.strerror or error}); give another --out.") from None
    return out
