"""Which models each panel section offers, and how models and deployments are shown."""

from __future__ import annotations

from ClaraAWSLib.backends.aiaa.client import ANNOTATION_TYPES, DEEPGROW_TYPES
from ClaraAWSLib.backends.aiaa.client import AUTO_SEGMENTATION_TYPES as AUTO_SEGMENT_TYPES
from ClaraAWSLib.panel.model_choices import (
    choose,
    deployment_label,
    model_row,
    models_of_types,
)

MODELS = [
    {"name": "clara_ct_seg_spleen_amp", "type": "segmentation", "labels": ["spleen"], "description": "Spleen"},
    {"name": "clara_ct_annotation_spleen", "type": "annotation", "labels": ["spleen"], "description": ""},
    {"name": "clara_deepgrow_3d", "type": "DeepGrow", "labels": [], "description": "3D clicks", "deepgrow": "3D"},
    {"name": "clara_pipeline", "type": "pipeline", "labels": ["liver"], "description": ""},
    {"name": "clara_classify", "type": "classification", "labels": [], "description": ""},
    {"name": "clara_ct_seg_spleen_amp", "type": "segmentation", "labels": ["spleen"], "description": "duplicate"},
    {"type": "segmentation"},  # nameless: never offered
]


def test_each_section_offers_the_types_the_protocol_allows():
    assert models_of_types(MODELS, AUTO_SEGMENT_TYPES) == ["clara_ct_seg_spleen_amp", "clara_pipeline"]
    assert models_of_types(MODELS, ANNOTATION_TYPES) == ["clara_ct_annotation_spleen"]
    assert models_of_types(MODELS, DEEPGROW_TYPES) == ["clara_deepgrow_3d", "clara_pipeline"]


def test_choose_keeps_the_previous_choice_when_the_server_still_has_it():
    names = ["a", "b", "c"]
    assert choose(names, "b") == "b"
    assert choose(names, "gone", "c") == "c"
    assert choose(names, "", None) == "a"
    assert choose([], "a") == ""


def test_model_row_shortens_long_label_lists_but_the_tooltip_has_them_all():
    labels = [f"organ{i}" for i in range(10)]
    row = model_row({"name": "total", "type": "segmentation", "labels": labels,
                     "description": "  Many\n organs  ", "version": "2"})
    assert row.labels == "organ0, organ1, organ2, organ3, organ4, organ5, … (10 in all)"
    assert row.description == "Many organs"
    assert "organ9" in row.tooltip and "Many organs" in row.tooltip and "version: 2" in row.tooltip
    assert row.type == "segmentation"


def test_model_row_of_a_sparse_model():
    row = model_row({"name": "x"})
    assert (row.name, row.type, row.labels, row.description) == ("x", "", "", "")
    assert row.tooltip == "x (unknown type)"


def test_deployment_label():
    assert deployment_label("clara-prod", "eu-west-1", "https://clara.example.org") == (
        "clara-prod (eu-west-1) https://clara.example.org"
    )
