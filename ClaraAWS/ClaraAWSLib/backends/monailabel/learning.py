"""The active-learning loop's calls of a MONAI Label server: the next sample, the datastore (images and
labels, under generated ids only), and training (start, status, stop, wait)."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Callable, Dict, Mapping, Optional, Union
from urllib.parse import quote

from ...core.errors import CancelledError, InputError, MalformedResponseError, NotFoundError, RemoteError, ServerError
from ...core.geometry import Volume
from ...core.imageio import EncodedImage, decode_image, encode_volume
from ...core.multipart import CancelToken, FilePart, MultipartBody, ProgressCallback
from ..transport import ImageInput, as_encoded_image, json_body, upload_name
from .answers import (
    NO_TASK,
    TRAIN_STATUSES,
    TrainingStatus,
    bare_500,
    disposition_filename,
    float_or_none,
    int_or_none,
    is_bare_500,
    stats_belong_to_task,
)

#: Datastore ids go into queries; ids ClaraAWS makes are ``clara-`` and 16 hex digits, never a name.
GENERATED_ID_PREFIX = "clara-"

#: A downloaded datastore image may be a whole CT: bound it like an upload of 1024^3 voxels, not like JSON.
MAX_IMAGE_BYTES = 8 << 30

_EPOCH_LINE = re.compile(r"Epoch\[(\d+)\] Complete")

#: NONE answers in a row after which ``wait_for_training`` gives up: behind a load balancer without stickiness a
#: poll that reaches another server finds no task while the run goes on, but polls in a row all reaching
#: other servers are unlikely; a server that restarted answers NONE every time.
NONE_ANSWERS_TO_GIVE_UP = 5

def generated_image_id() -> str:
    return GENERATED_ID_PREFIX + uuid.uuid4().hex[:16]


class ActiveLearningCalls:
    """Mixin of ``MONAILabelClient``: it supplies ``_call``, ``_get_json``, ``transport``, ``info``, ``strategies``
    and ``trainers``."""

    #: Set once this client has started a training run: a NONE status then does not mean "never trained".
    _started_training = False

    def next_sample(self, strategy: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """``POST /activelearning/{strategy}``: the next image to label ({id, name, ...}), None when all are labeled."""
        strategies = self.strategies()
        if strategy is None:
            if not strategies:
                raise InputError("The MONAI Label server offers no active-learning strategy; it cannot pick a next sample.")
            strategy = "random" if "random" in strategies else strategies[0]
        elif strategies and strategy not in strategies:
            raise InputError(f"The server has no strategy '{strategy}'; it offers {', '.join(strategies)}.")
        try:
            answer = self.transport.json(self._call("POST", "/activelearning/" + quote(strategy, safe=""),
                                                body=json_body({"client_id": "clara-aws"}), what=f"strategy '{strategy}'"),
                                     "/activelearning/")
        except RemoteError as error:
            if is_bare_500(error):
                raise bare_500(error, f"The MONAI Label server failed to pick a sample with strategy '{strategy}' "
                                "(a bare HTTP 500); see its log (GET /logs/).") from error
            raise
        if not isinstance(answer, dict):
            raise MalformedResponseError("The server's next sample is not a JSON object; the response is malformed.")
        if not answer.get("id"):
            # The server answers {} both when every image has a final label and when it holds no image at all.
            if not int_or_none(self.datastore_counts().get("total")):
                raise InputError("The server's datastore holds no images; add studies to the server's datastore "
                                 "(or upload an image) first.")
            return None
        answer["id"] = str(answer["id"])
        return answer

    def download_image(self, image_id: str, *, progress: Optional[ProgressCallback] = None,
                       cancel: Optional[CancelToken] = None) -> Volume:
        """``GET /datastore/image?image=ID``: the datastore image as a Volume (its file's grid, exactly)."""
        answer = self._call("GET", "/datastore/image", params={"image": image_id}, cancel=cancel,
                            what=f"the datastore image '{image_id}'", download_progress=progress, max_bytes=MAX_IMAGE_BYTES)
        filename = disposition_filename(answer.response.headers.get("Content-Disposition", "")) or ".nii.gz"
        return decode_image(answer.content, filename, max_voxels=MAX_IMAGE_BYTES)

    def upload_image(self, image: ImageInput, image_id: Optional[str] = None, *,
                     progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> str:
        """``PUT /datastore/image``: store an image permanently under a generated id (never a name); returns the id."""
        image_id = image_id or generated_image_id()
        encoded = as_encoded_image(image)
        body = MultipartBody({"params": json.dumps({"client_id": "clara-aws"})},
                             FilePart("file", upload_name(encoded.suffix), encoded.data), progress=progress, cancel=cancel)
        try:
            answer = self.transport.json(self._call("PUT", "/datastore/image", params={"image": image_id}, body=body,
                                                cancel=cancel, what="the datastore"), "/datastore/image")
        except RemoteError as error:
            if is_bare_500(error):
                raise bare_500(error, "The MONAI Label server could not store the image in its datastore (a bare HTTP "
                                "500); it may be out of disk space or could not read the image: see its log.") from error
            raise
        return str(answer.get("image") or image_id) if isinstance(answer, dict) else image_id

    def save_label(self, image_id: str, labels: Union[Volume, EncodedImage], label_values: Mapping[str, int], *,
                   tag: str = "final", progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None) -> Dict[str, Any]:
        """``PUT /datastore/label?image=ID&tag=TAG``: a label image whose values are ``label_values`` (name -> value)."""
        encoded = labels if isinstance(labels, EncodedImage) else encode_volume(labels)
        params = {"label_info": [{"name": name, "idx": int(value)} for name, value in label_values.items()],
                  "client_id": "clara-aws"}
        body = MultipartBody({"params": json.dumps(params)},
                             FilePart("label", upload_name(encoded.suffix), encoded.data), progress=progress, cancel=cancel)
        try:
            answer = self.transport.json(self._call("PUT", "/datastore/label", params={"image": image_id, "tag": tag},
                                                body=body, cancel=cancel, what="the datastore"), "/datastore/label")
        except RemoteError as error:
            if is_bare_500(error):
                raise bare_500(error, f"The MONAI Label server could not save the label of image '{image_id}' (a bare "
                                "HTTP 500): its datastore may have no image of that id; fetch a sample again.") from error
            raise
        return answer if isinstance(answer, dict) else {}

    def datastore_counts(self) -> Dict[str, Any]:
        """``GET /datastore/?output=stats``: {total, completed, label_tags}."""
        answer = self._get_json("/datastore/", "the datastore", params={"output": "stats"})
        if not isinstance(answer, dict):
            raise MalformedResponseError("The server's datastore counts are not a JSON object; the response is malformed.")
        return answer

    def start_training(self, model: str, max_epochs: Optional[int] = None, **params: Any) -> Dict[str, Any]:
        """``POST /train/{model}`` with trainer params (e.g. max_epochs); the run goes on in the server's background."""
        trainers = self.trainers()
        if trainers and model not in trainers:
            raise InputError(f"The server has no trainer '{model}'; it trains {', '.join(trainers)}.")
        if max_epochs is not None:
            if int(max_epochs) < 1:
                raise InputError(f"--max-epochs must be at least 1, not {max_epochs}.")
            params["max_epochs"] = int(max_epochs)
        try:
            answer = self.transport.json(self._call("POST", "/train/" + quote(model, safe=""), body=json_body(params),
                                                what=f"trainer '{model}'"), "/train/")
        except RemoteError as error:
            if error.status == 429:
                raise RemoteError("A training run is already going on the server; wait for it to end or stop it first.",
                                  status=429, details=error.details) from error
            if is_bare_500(error):
                raise bare_500(error, f"The MONAI Label server failed to start training '{model}' (a bare HTTP 500); "
                                "see its log.") from error
            raise
        self._started_training = True
        return answer if isinstance(answer, dict) else {}

    def training_status(self) -> TrainingStatus:
        """The latest run (``GET /train/``) with its epoch and best metric (``/info/`` train_stats, when they are
        this run's)."""
        try:
            task = self._get_json("/train/", "the training status")
        except NotFoundError:
            return TrainingStatus(NO_TASK, run_started=self._started_training or self._any_run_recorded())
        if not isinstance(task, dict):
            raise MalformedResponseError("The server's training status is not a JSON object; the response is malformed.")
        status = str(task.get("status") or "").upper()
        request = task.get("request") if isinstance(task.get("request"), dict) else {}
        model = str(request.get("model") or "")
        details = [str(line) for line in (task.get("details") or [])][-20:]
        result = TrainingStatus(status, model=model, details=details, task_id=str(task.get("id") or ""))
        result.total_epochs = int_or_none(request.get("max_epochs"))
        stats = (self.info().get("train_stats") or {}).get(model) or {}
        if result.finished and isinstance(stats, dict) and stats and stats_belong_to_task(stats, task):
            result.epoch = int_or_none(stats.get("epoch"))
            result.total_epochs = int_or_none(stats.get("total_epochs")) or result.total_epochs
            result.best_metric = float_or_none(stats.get("best_metric"))
        else:
            # While a run goes on, and after one that failed before its first epoch, /info/'s train_stats may
            # be the previous run's: the epoch comes from this run's own log lines (ignite's "Epoch[n] Complete"),
            # the best metric from stats of this run only.
            epochs = [int(m) for line in details for m in _EPOCH_LINE.findall(line)]
            result.epoch = max(epochs) if epochs else None
        if status not in TRAIN_STATUSES:
            raise MalformedResponseError(f"The server reports the training status {status!r}, which MONAI Label does not use.")
        return result

    def _any_run_recorded(self) -> bool:
        """Whether ``/info/`` holds a training run's stats (they outlive a restart; ``{}`` per untrained model)."""
        stats = self.info().get("train_stats")
        return isinstance(stats, dict) and any(isinstance(one, dict) and one for one in stats.values())

    def stop_training(self) -> bool:
        """``DELETE /train/``: True if a run was stopped, False if none was going."""
        answer = self.transport.json(self._call("DELETE", "/train/", what="the training"), "/train/")
        return isinstance(answer, dict) and bool(answer)

    def wait_for_training(self, *, poll_seconds: float = 2.0, timeout: Optional[float] = None,
                          report: Optional[Callable[[TrainingStatus], None]] = None, cancel: Optional[CancelToken] = None
                          ) -> TrainingStatus:
        """Poll the status until the run ends; ``report`` sees every status but a lone NONE. A status poll answers
        late while the server runs an inference (it serves one request at a time), which is not an error."""
        started = time.monotonic()
        none_answers = 0
        while True:
            status = self.training_status()
            if status.task_unknown:
                # A poll through a load balancer without stickiness may reach a server that never ran this task
                # while the run goes on on another; only NONE after NONE says the run is out of reach.
                none_answers += 1
                if none_answers >= NONE_ANSWERS_TO_GIVE_UP:
                    raise ServerError(status.summary())
            else:
                none_answers = 0
                if report is not None:
                    report(status)
                if status.finished:
                    return status
            if cancel is not None and cancel.is_set():
                raise CancelledError("Stopped waiting for the training; it goes on on the server.")
            if timeout is not None and time.monotonic() - started > timeout:
                raise ServerError(f"The training did not end within {timeout:g} s; it goes on on the server.")
            time.sleep(poll_seconds)
