"""Which server models each part of the panel offers, and how a model or a deployment is shown.

Pure presentation helpers for the Slicer panel; nothing here talks to a server or to Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

MAX_LABELS_SHOWN = 6


def model_type(model: Mapping[str, Any]) -> str:
    return str(model.get("type", "") or "").strip().lower()


def models_of_types(models: Iterable[Mapping[str, Any]], types: Sequence[str]) -> List[str]:
    """Names of the models whose type is one of ``types``, in server order, without duplicates."""
    names: List[str] = []
    for model in models:
        name = str(model.get("name", "") or "").strip()
        if name and model_type(model) in types and name not in names:
            names.append(name)
    return names


def choose(names: Sequence[str], *preferred: Optional[str]) -> str:
    """The first preferred name the list still has, else its first entry, else ""."""
    for name in preferred:
        if name and name in names:
            return name
    return names[0] if names else ""


@dataclass(frozen=True)
class ModelRow:
    name: str
    type: str
    labels: str
    description: str
    tooltip: str


def model_row(model: Mapping[str, Any]) -> ModelRow:
    """The four table cells of a model and a tooltip that holds everything, labels in full."""
    name = str(model.get("name", "") or "")
    labels = [str(label) for label in (model.get("labels") or [])]
    shown = ", ".join(labels[:MAX_LABELS_SHOWN])
    if len(labels) > MAX_LABELS_SHOWN:
        shown += f", … ({len(labels)} in all)"
    description = " ".join(str(model.get("description", "") or "").split())
    lines = [f"{name} ({model_type(model) or 'unknown type'})"]
    if description:
        lines.append(description)
    if labels:
        lines.append("Labels: " + ", ".join(labels))
    extras: Dict[str, Any] = {key: model[key] for key in ("version", "deepgrow", "roi", "padding") if key in model}
    if extras:
        lines.append("; ".join(f"{key}: {value}" for key, value in extras.items()))
    return ModelRow(name, model_type(model), shown, description, "\n".join(lines))


def deployment_label(stack_name: str, region: str, url: str) -> str:
    """How a discovered deployment reads in the server list: ``stack (region) url``."""
    return f"{stack_name} ({region}) {url}"
