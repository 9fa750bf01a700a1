"""The AIAA backend: NVIDIA Clara Train's AI-Assisted Annotation protocol (``client``) behind the seam."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from .. import ANNOTATE, AUTO_SEGMENT, DEEPGROW, TASK_OF_KIND
from .client import MODEL_TYPES_FOR_TASK, AIAAClient, AIAAResult, check_model_task

__all__ = ["AIAABackend", "AIAAClient", "AIAAResult"]


class AIAABackend(AIAAClient):
    """``AIAAClient`` speaking the seam's tasks; which endpoint serves a task depends on the model's type."""

    kind = "aiaa"

    def models(self, label: Optional[str] = None, type: Optional[str] = None) -> List[Dict[str, Any]]:
        """The models with ``label_values`` too: an AIAA result gives label ``labels[v-1]`` the value v."""
        return [_with_values(model) for model in super().models(label=label, type=type)]

    def model(self, name: str) -> Dict[str, Any]:
        return _with_values(super().model(name))

    def check_model_task(self, model: Mapping[str, Any], task: str) -> Mapping[str, Any]:
        return check_model_task(model, TASK_OF_KIND.get(task, task))

    def model_types_for(self, task: str) -> Sequence[str]:
        return MODEL_TYPES_FOR_TASK[TASK_OF_KIND.get(task, task)]

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


def _with_values(model: Dict[str, Any]) -> Dict[str, Any]:
    model["label_values"] = {str(name): position + 1 for position, name in enumerate(model.get("labels") or [])}
    return model
