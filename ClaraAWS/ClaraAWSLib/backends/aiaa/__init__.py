"""The AIAA backend: NVIDIA Clara Train's AI-Assisted Annotation protocol (``client``) behind the seam."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import ANNOTATE, AUTO_SEGMENT, DEEPGROW, TASK_OF_KIND
from .client import MODEL_TYPES_FOR_TASK, AIAAClient, AIAAResult, check_model_task

__all__ = ["AIAABackend", "AIAAClient", "AIAAResult"]


class AIAABackend(AIAAClient):
    """``AIAAClient`` speaking the seam's tasks; which endpoint serves a task depends on the model's type."""

    kind = "aiaa"

    # models() and model() are AIAAClient's: each model has ``label_values`` (name -> value in a result),
    # labels[v-1] -> v for the protocol's list, the server's own numbers for a labels map.

    def check_model_task(self, model: Mapping[str, Any], task: str) -> Mapping[str, Any]:
        return check_model_task(model, TASK_OF_KIND.get(task, task))

    def model_types_for(self, task: str) -> Sequence[str]:
        # No model type serves deepedit here (MONAI Label's): none, as MONAI Label answers for annotation.
        return MODEL_TYPES_FOR_TASK.get(TASK_OF_KIND.get(task, task), ())

    def endpoint_for(self, task: str, model: Mapping[str, Any]) -> str:
        if task == AUTO_SEGMENT:
            return "segmentation" if model.get("type") == "segmentation" else "inference"
        if task == ANNOTATE:
            return "dextr3d"
        return "inference" if model.get("type") == "pipeline" else "deepgrow"  # pipelines take clicks as params

    def run_task(self, task: str, model: Mapping[str, Any], **arguments: Any) -> AIAAResult:
        name = str(model["name"])
        arguments.pop("label", None)  # the edited segment's name: an AIAA deepgrow model has one label anyway
        if task == AUTO_SEGMENT:
            return self.auto_segment(model, **arguments)
        if task == ANNOTATE:
            return self.dextr3d(name, **arguments)
        if task == DEEPGROW:
            return self.deepgrow(name, endpoint=self.endpoint_for(task, model), **arguments)
        raise ValueError(f"unknown task {task!r}")
