"""Reading MONAI Label's answers: models and labels in the seam's form, inference results, the training status,
and one sentence for the server's bare ``500 Internal Server Error``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ...core.errors import InputError, MalformedResponseError, RemoteError, ServerError
from ...core.geometry import ImageGrid, LabelBox, Volume
from ...core.imageio import SliceLimit
from ..results import LabelResult, multipart_result
from ..rules import check_points_inside, index_points
from ..transport import json_object

#: What the server says for most failures, with no hint of which.
BARE_500 = "Internal Server Error"

TRAIN_STATUSES = ("SUBMITTED", "RUNNING", "DONE", "ERROR", "STOPPED")

#: What ``GET /train/``'s 404 ("No Train Tasks Found") becomes: the server holds no training task.
NO_TASK = "NONE"

#: The summary of NO_TASK once a run is known to have been started on the server.
NO_TASK_KNOWN = (
    "The server knows no running training task: it restarted, or this request reached another server behind a "
    "load balancer without stickiness (`clara-aws service --tasks N` turns stickiness on); wait, or look again later."
)

#: Every time zone's UTC offset is a whole number of quarter hours (seconds).
QUARTER_HOUR = 900

#: Ask for small results: uint8 NRRD, gzip-compressed by the server (x49 smaller on a 96x96x64 mask).
RESULT_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": True}

BACKGROUND = "background"

class MONAILabelResult(LabelResult):
    """An inference answer; ``only_value`` keeps one label value (as 1): a deepedit model answers every
    label, a click edits one."""

    only_value: Optional[int] = None

    def labels(self, needed: Optional[SliceLimit] = None) -> Volume:
        volume = super().labels(needed)
        if self.only_value is None:
            return volume
        return Volume((volume.array == self.only_value).astype(volume.array.dtype), volume.grid)

    def label_box(self, needed: Optional[SliceLimit] = None) -> LabelBox:
        box = super().label_box(needed)
        if self.only_value is None:
            return box
        return LabelBox(box.grid, box.start, (box.array == self.only_value).astype(box.array.dtype))


@dataclass
class TrainingStatus:
    """The latest training run: ``status`` one of TRAIN_STATUSES, or "NONE" when the server holds no task.

    ``run_started``: a run is known to have been started on the server (this client started one, or ``/info/``
    holds a run's stats). NONE then means the server lost track of it (a restart) or the request reached
    another server behind a load balancer, not that training never ran; such a NONE is not finished.
    """

    status: str
    model: str = ""
    epoch: Optional[int] = None
    total_epochs: Optional[int] = None
    best_metric: Optional[float] = None
    details: List[str] = field(default_factory=list)
    task_id: str = ""
    run_started: bool = False

    @property
    def finished(self) -> bool:
        if self.status == NO_TASK:
            return not self.run_started
        return self.status in ("DONE", "ERROR", "STOPPED")

    @property
    def task_unknown(self) -> bool:
        """NONE although a run was started: the run may go on where this answer could not see it."""
        return self.status == NO_TASK and self.run_started

    def as_dict(self) -> Dict[str, Any]:
        return {"status": self.status, "model": self.model, "epoch": self.epoch, "total_epochs": self.total_epochs,
                "best_metric": self.best_metric, "details": list(self.details), "id": self.task_id}

    def summary(self) -> str:
        if self.status == NO_TASK:
            return NO_TASK_KNOWN if self.run_started else "No training has run on this server."
        text = self.status
        if self.epoch is not None and self.total_epochs:
            text += f", epoch {self.epoch} of {self.total_epochs}"
        if self.best_metric is not None:
            text += f", best metric {self.best_metric:.4f}"
        return text


def stats_belong_to_task(stats: Mapping[str, Any], task: Mapping[str, Any]) -> bool:
    """Whether a model's ``/info/`` train_stats come from ``task`` (``GET /train/``'s answer): a run that fails
    before its first epoch writes no stats, so the previous run's stay in place."""
    stats_start = int_or_none(stats.get("start_ts"))
    task_start, task_end = server_clock_seconds(task.get("start_ts")), server_clock_seconds(task.get("end_ts"))
    if stats_start is None or task_start is None or task_end is None:
        return True  # nothing to compare: they are all there is
    # The task's times are the server's local clock, the stats' start a Unix time, and the server's time zone
    # is unknown: their difference is its UTC offset (whole quarter hours) plus the time this run took to
    # begin training, which lies within the task (all three are whole seconds cut from the same clock, so
    # the bounds hold exactly). Past a quarter hour of run the remainder tells nothing.
    span = task_end - task_start
    if span >= QUARTER_HOUR:
        return True
    return (stats_start - task_start) % QUARTER_HOUR <= span


def server_clock_seconds(value: Any) -> Optional[int]:
    """A task time of the server ("YYYY-MM-DD HH:MM:SS", its local clock) in seconds, read as if it were UTC."""
    try:
        return int(datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return None


def label_map(labels: Any) -> Dict[str, int]:
    """name -> value of a model's labels (a dict name->value, or a list whose value is position + 1); no background."""
    values: Dict[str, int] = {}
    if isinstance(labels, Mapping):
        for name, value in labels.items():
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise MalformedResponseError(
                    f"The server gives the label '{name}' the value {json.dumps(value)[:20]}, not a whole number; "
                    "its model list is malformed."
                ) from None
            if str(name).lower() != BACKGROUND and number != 0:
                values[str(name)] = number
    elif isinstance(labels, (list, tuple)):
        for position, name in enumerate(labels):
            if str(name).lower() != BACKGROUND:
                values[str(name)] = position + 1
    elif labels not in (None, ""):
        raise MalformedResponseError(
            f"The server lists labels as {json.dumps(labels)[:40]}, neither names nor a name-to-value map; "
            "its model list is malformed."
        )
    return values


def normalise_model(name: str, info: Mapping[str, Any]) -> Dict[str, Any]:
    """One ``/info/`` model as the seam lists models: name, type, labels in value order, label_values, description."""
    if not isinstance(info, Mapping):
        raise MalformedResponseError(f"The server describes model '{name}' as {json.dumps(info)[:40]}; its model list is malformed.")
    values = label_map(info.get("labels"))
    description = info.get("description")
    return {
        "name": str(name),
        "type": str(info.get("type") or "others").strip().lower(),
        "labels": [label for label, _ in sorted(values.items(), key=lambda item: item[1])],
        "label_values": values,
        "description": description if isinstance(description, str) else "",
        "dimension": info.get("dimension", 3),
        "config": info.get("config") if isinstance(info.get("config"), Mapping) else {},
    }


def is_bare_500(error: ServerError) -> bool:
    return error.status == 500 and (error.details or "").strip() in ("", BARE_500)


def bare_500(error: ServerError, sentence: str) -> RemoteError:
    return RemoteError(sentence, status=error.status, details=error.details)


def validation_text(error: ServerError) -> str:
    """``field: message`` of FastAPI's validation answer, from the error's details when they are JSON."""
    try:
        detail = json.loads(error.details or "").get("detail")
    except (ValueError, AttributeError):
        return "no details"
    if isinstance(detail, list) and detail:
        first = detail[0] if isinstance(detail[0], dict) else {}
        where = ".".join(str(part) for part in first.get("loc", []) if part != "body")
        return f"{where or 'request'}: {first.get('msg', 'invalid')}"
    return str(detail)[:200] if detail else "no details"


def check_clicks_inside(params: Mapping[str, Any], grid: ImageGrid) -> None:
    """Clicks must be voxels of the image as sent (MONAI Label silently ignores clicks outside it)."""
    check_points_inside(params, grid)
    for name, points in params.items():
        if name in ("foreground", "background") or not isinstance(points, list) or not points:
            continue
        if all(isinstance(p, list) and len(p) == 3 for p in points):  # a deepedit label's clicks
            check_points_inside({"foreground": points}, grid)


def click_params(clicks: Mapping[str, Sequence[Sequence[int]]], label_names: Sequence[str]) -> Dict[str, Any]:
    """DeepEdit's params: one click list per label name (empty for labels without clicks), background's too."""
    unknown = [name for name in clicks if name != BACKGROUND and name not in label_names]
    if unknown:
        raise InputError(
            f"The model has no label {', '.join(repr(n) for n in unknown)}; its labels are {', '.join(label_names)} "
            "(and 'background' for background clicks)."
        )
    params: Dict[str, Any] = {name: index_points(clicks.get(name) or [], f"'{name}' click") for name in label_names}
    params[BACKGROUND] = index_points(clicks.get(BACKGROUND) or [], "background click")
    if not any(params[name] for name in label_names):
        raise InputError("DeepEdit needs at least one click on a label (not only background clicks).")
    return params


def disposition_filename(value: str) -> Optional[str]:
    if not value:
        return None
    message = Message()
    message["content-disposition"] = value
    name = message.get_filename()
    return name.rsplit("/", 1)[-1] if name else None


def int_or_none(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def float_or_none(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_infer_response(content_type: str, content: bytes, model: str) -> MONAILabelResult:
    """The result JSON and the mask file: a multipart answer's part with a filename is the mask, wherever it is."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("multipart/"):
        return multipart_result(MONAILabelResult, content_type, content, ("params",), f"model '{model}'")
    if kind == "application/json":
        return MONAILabelResult(json_object(content, "result parameters"))
    if kind == "application/octet-stream":
        return MONAILabelResult({}, "result.nrrd" if content[:4] == b"NRRD" else "result.nii.gz", content)
    raise MalformedResponseError(
        f"The server answered /infer/{model} with '{kind or 'no content type'}' instead of a result; the response is malformed.",
        details=content[:300].decode("utf-8", errors="replace"),
    )

