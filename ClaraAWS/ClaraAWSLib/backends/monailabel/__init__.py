"""The MONAI Label backend: NVIDIA's successor of AIAA (``client``) behind the seam.

Auto-segmentation runs ``segmentation`` models; deepgrow clicks run ``deepgrow`` models, and also
``deepedit`` models, whose clicks go to the label being edited and whose answer is cut to that label's
value; ``DEEPEDIT`` sends one click list per label name. MONAI Label has no extreme-point models.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from ...core.errors import InputError
from .. import ANNOTATE, AUTO_SEGMENT, DEEPEDIT, DEEPGROW
from ..rules import index_points, require_model_type
from .answers import MONAILabelResult, TrainingStatus, click_params, label_map
from .client import MONAILabelClient, MONAILabelSession
from .learning import generated_image_id

__all__ = ["MONAILabelBackend", "MONAILabelClient", "MONAILabelResult", "MONAILabelSession", "TrainingStatus",
           "generated_image_id", "label_map"]

MODEL_TYPES = {AUTO_SEGMENT: ("segmentation",), DEEPGROW: ("deepgrow", "deepedit"), DEEPEDIT: ("deepedit",)}
TASK_WORDS = {AUTO_SEGMENT: "auto-segmentation", DEEPGROW: "deepgrow clicks", DEEPEDIT: "deepedit clicks"}


class MONAILabelBackend(MONAILabelClient):
    kind = "monailabel"

    def check_model_task(self, model: Mapping[str, Any], task: str) -> Mapping[str, Any]:
        if task == ANNOTATE:
            raise InputError(
                "MONAI Label servers have no extreme-point (annotation) models; use a deepgrow or deepedit model with "
                "clicks instead."
            )
        return require_model_type(model, MODEL_TYPES[task], TASK_WORDS[task])

    def model_types_for(self, task: str) -> Sequence[str]:
        """The model types that do ``task`` (none for ANNOTATE: the panel then offers no model for it)."""
        return MODEL_TYPES.get(task, ())

    def endpoint_for(self, task: str, model: Mapping[str, Any]) -> str:
        return f"infer/{model.get('name')}"  # what progress text calls the step

    def run_task(self, task: str, model: Mapping[str, Any], **arguments: Any) -> MONAILabelResult:
        """``arguments``: image= or session=, progress/cancel/download_progress, and the task's own:
        DEEPGROW foreground, background, current_point (unused), label (the label edited; default the first);
        DEEPEDIT clicks (label name -> points, 'background' too)."""
        self.check_model_task(model, task)
        name = str(model["name"])
        params = dict(arguments.pop("params", None) or {})
        only_value = None
        if task == DEEPGROW:
            arguments.pop("current_point", None)  # MONAI Label's models take all clicks, not the last one apart
            foreground = arguments.pop("foreground", None) or []
            background = arguments.pop("background", None) or []
            label = self._edited_label(model, arguments.pop("label", None))
            if not foreground:
                raise InputError("Deepgrow needs at least one foreground point inside the structure; place one and try again.")
            if model.get("type") == "deepedit":
                params.update(click_params({label: foreground, "background": background}, model["labels"]))
                only_value = int(model["label_values"][label])  # the other labels' voxels are not this edit's
            else:
                params["foreground"] = index_points(foreground, "foreground point")
                params["background"] = index_points(background, "background point")
            params["label"] = label
        elif task == DEEPEDIT:
            params.update(click_params(arguments.pop("clicks", None) or {}, model["labels"]))
        return self.infer(name, params=params, only_value=only_value, **arguments)

    @staticmethod
    def _edited_label(model: Mapping[str, Any], label: Optional[str]) -> str:
        labels: Sequence[str] = model.get("labels") or []
        if label is None or label not in labels:
            if not labels:
                raise InputError(f"The model '{model.get('name')}' names no labels; it cannot take clicks.")
            return labels[0]
        return label
