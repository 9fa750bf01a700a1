"""Segment colours and Slicer terminology tags for the label names AIAA models return.

A terminology tag has seven ``~``-separated parts (context, category, type, type modifier, anatomic
context, anatomic region, region modifier); each coded part is ``scheme^code^meaning``. Only names
found in the small SNOMED CT table below get a tag; every other name still gets a distinct colour.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

Color = Tuple[float, float, float]

TYPE_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMICAL_STRUCTURE = "SCT^123037004^Anatomical Structure"
ALTERED_STRUCTURE = "SCT^49755003^Morphologically Altered Structure"
MASS = "SCT^4147007^Mass"
LEFT = "SCT^7771000^Left"
RIGHT = "SCT^24028007^Right"


@dataclass(frozen=True)
class Organ:
    code: str  # SNOMED CT concept id
    meaning: str
    color: Color  # 0..1 RGB, close to Slicer's General Anatomy colours


def _rgb(red: int, green: int, blue: int) -> Color:
    return (red / 255.0, green / 255.0, blue / 255.0)


#: Normalised name -> organ. Keys are single words or joined words after ``_normalise``.
ORGANS: Dict[str, Organ] = {
    "liver": Organ("10200004", "Liver", _rgb(221, 130, 101)),
    "spleen": Organ("78961009", "Spleen", _rgb(157, 108, 162)),
    "kidney": Organ("64033007", "Kidney", _rgb(185, 102, 83)),
    "pancreas": Organ("15776009", "Pancreas", _rgb(249, 180, 111)),
    "stomach": Organ("69695003", "Stomach", _rgb(216, 132, 105)),
    "gallbladder": Organ("28231008", "Gallbladder", _rgb(139, 150, 98)),
    "aorta": Organ("15825003", "Aorta", _rgb(224, 97, 76)),
    "inferiorvenacava": Organ("64131007", "Inferior vena cava", _rgb(0, 151, 206)),
    "ivc": Organ("64131007", "Inferior vena cava", _rgb(0, 151, 206)),
    "portalvein": Organ("32764006", "Portal vein", _rgb(0, 112, 165)),
    "esophagus": Organ("32849002", "Esophagus", _rgb(211, 171, 143)),
    "oesophagus": Organ("32849002", "Esophagus", _rgb(211, 171, 143)),
    "adrenalgland": Organ("23451007", "Adrenal gland", _rgb(249, 186, 150)),
    "duodenum": Organ("38848004", "Duodenum", _rgb(255, 253, 229)),
    "colon": Organ("71854001", "Colon", _rgb(204, 168, 143)),
    "smallintestine": Organ("30315005", "Small Intestine", _rgb(205, 167, 142)),
    "smallbowel": Organ("30315005", "Small Intestine", _rgb(205, 167, 142)),
    "lung": Organ("39607008", "Lung", _rgb(197, 165, 145)),
    "heart": Organ("80891009", "Heart", _rgb(206, 110, 84)),
    "trachea": Organ("44567001", "Trachea", _rgb(182, 228, 255)),
    "brain": Organ("12738006", "Brain", _rgb(250, 250, 225)),
    "bladder": Organ("89837001", "Urinary bladder", _rgb(222, 154, 132)),
    "urinarybladder": Organ("89837001", "Urinary bladder", _rgb(222, 154, 132)),
    "prostate": Organ("41216001", "Prostate", _rgb(230, 158, 140)),
}

_TUMOUR_WORDS = {"tumor", "tumour", "tumors", "tumours", "lesion", "lesions", "mass", "cancer", "neoplasm"}
_TUMOUR_COLOR = _rgb(144, 238, 144)

#: Well separated colours for names the table does not know, used in order before generated hues.
_PALETTE: Tuple[Color, ...] = (
    _rgb(128, 174, 128), _rgb(241, 214, 145), _rgb(177, 122, 101), _rgb(111, 184, 210),
    _rgb(216, 101, 79), _rgb(221, 130, 101), _rgb(144, 238, 144), _rgb(192, 104, 88),
    _rgb(220, 245, 20), _rgb(78, 63, 0), _rgb(255, 250, 220), _rgb(230, 220, 70),
)


def _words(name: str) -> List[str]:
    return [word for word in re.split(r"[^a-z0-9]+", name.lower()) if word]


def _laterality(words: Sequence[str]) -> Optional[str]:
    if "left" in words or "l" in words[-1:]:
        return LEFT
    if "right" in words or "r" in words[-1:]:
        return RIGHT
    return None


def _find_organ(words: Sequence[str]) -> Optional[Organ]:
    ignored = {"left", "right", "l", "r", "and", "of", "the", "seg", "segment"} | _TUMOUR_WORDS
    significant = [word for word in words if word not in ignored]
    joined = "".join(significant)
    if joined in ORGANS:
        return ORGANS[joined]
    for word in significant:
        if word in ORGANS:
            return ORGANS[word]
        if word.endswith("s") and word[:-1] in ORGANS:  # "kidneys", "lungs"
            return ORGANS[word[:-1]]
    return None


def terminology_tag(label_name: str) -> Optional[str]:
    """The Slicer terminology tag for a model label name, or None when the name is not in the table."""
    words = _words(label_name)
    if not words:
        return None
    organ = _find_organ(words)
    if any(word in _TUMOUR_WORDS for word in words):
        region = f"SCT^{organ.code}^{organ.meaning}" if organ else "^^"
        return f"{TYPE_CONTEXT}~{ALTERED_STRUCTURE}~{MASS}~^^~{ANATOMIC_CONTEXT}~{region}~^^"
    if organ is None:
        return None
    modifier = _laterality(words) or "^^"
    return (
        f"{TYPE_CONTEXT}~{ANATOMICAL_STRUCTURE}~SCT^{organ.code}^{organ.meaning}~{modifier}"
        f"~{ANATOMIC_CONTEXT}~^^~^^"
    )


def known_color(label_name: str) -> Optional[Color]:
    words = _words(label_name)
    if any(word in _TUMOUR_WORDS for word in words):
        return _TUMOUR_COLOR
    organ = _find_organ(words)
    return organ.color if organ else None


def _distance(first: Color, second: Color) -> float:
    return sum((a - b) ** 2 for a, b in zip(first, second)) ** 0.5


def _candidate_colors() -> Iterator[Color]:
    yield from _PALETTE
    hue, step = 0.13, 0
    while True:  # golden-ratio hue steps never repeat; saturation and value vary so many labels still differ
        hue = (hue + 0.618033988749895) % 1.0
        saturation, value = ((0.55, 0.9), (0.8, 0.7), (0.35, 1.0), (0.7, 0.5))[step % 4]
        step += 1
        yield colorsys.hsv_to_rgb(hue, saturation, value)


def _farthest(candidates: Iterator[Color], used: Sequence[Color], wanted: float = 0.15, tries: int = 64) -> Color:
    best, best_distance = None, -1.0
    for _ in range(tries):
        candidate = next(candidates)
        nearest = min((_distance(candidate, other) for other in used), default=1.0)
        if nearest > wanted:
            return candidate
        if nearest > best_distance:
            best, best_distance = candidate, nearest
    return best


def assign_colors(label_names: Sequence[str], taken: Sequence[Color] = ()) -> List[Color]:
    """One colour per name: the anatomy colour when known, else one far from every colour already used."""
    used: List[Color] = list(taken)
    colors: List[Color] = []
    candidates = _candidate_colors()
    for name in label_names:
        color = known_color(name)
        if color is None or any(_distance(color, other) < 0.02 for other in used):
            color = _farthest(candidates, used)
        used.append(color)
        colors.append(color)
    return colors
