"""QUiLoader for the stand-in: the real ``.ui`` file becomes a tree of double widgets.

As Qt's QFormBuilder does (qtbase src/tools/uic and QAbstractFormBuilder::create): each ``<widget>``
is made by its class name, gets its ``objectName`` from ``name``, its ``<property>`` values (a property
the class does not declare, or one marked ``stdset="0"``, becomes a dynamic property, as
QObject::setProperty does), is parented to the enclosing widget, and ``<connections>`` are connected
after the tree is built. A class the stand-in does not know fails the load, so a widget class added to
the ``.ui`` without a double shows at once.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, Optional

from . import qt_double as qt

#: Widget class name -> factory; the stand-in adds the ctk and Slicer classes.
WIDGET_CLASSES: Dict[str, Callable[[], qt.QWidget]] = {
    name: getattr(qt, name) for name in (
        "QWidget", "QFrame", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "QGroupBox",
        "QLineEdit", "QComboBox", "QSpinBox", "QDoubleSpinBox", "QProgressBar", "QTableWidget", "QListWidget")
}
LAYOUT_CLASSES = {"QVBoxLayout": qt.QVBoxLayout, "QHBoxLayout": qt.QHBoxLayout, "QFormLayout": qt.QFormLayout,
                  "QGridLayout": qt.QGridLayout}


def _value(element: ET.Element) -> Any:
    kind = element.tag
    text = element.text or ""
    if kind == "bool":
        return text.strip() == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "string":
        return text
    if kind == "stringlist":
        return [item.text or "" for item in element.findall("string")]
    if kind in ("enum", "set"):
        return text.strip()
    if kind == "size":
        return (int(element.findtext("width", "0")), int(element.findtext("height", "0")))
    return text


def _apply_properties(widget: qt.QObject, element: ET.Element) -> None:
    declared = type(widget)._all_properties()
    for prop in element.findall("property"):
        name = prop.get("name")
        children = list(prop)
        if not children:
            continue
        value = _value(children[0])
        if prop.get("stdset") == "0" or name not in declared:
            widget._dynamic[name] = value
            continue
        if children[0].tag in ("enum", "set") and not isinstance(declared[name][0], str):
            widget._dynamic[name] = value  # an enum's symbolic value; the double keeps the default
            continue
        setattr(widget, name, value)


def _build_layout(element: ET.Element, owner: qt.QWidget, names: Dict[str, qt.QObject]) -> qt.QLayout:
    layout_class = LAYOUT_CLASSES.get(element.get("class"))
    if layout_class is None:
        raise RuntimeError(f"the stand-in has no layout class {element.get('class')}")
    layout = layout_class()
    layout.objectName = element.get("name", "")
    owner.setLayout(layout)
    for item in element.findall("item"):
        for child in item:
            if child.tag == "widget":
                layout.addWidget(_build_widget(child, owner, names))
            elif child.tag == "layout":
                nested = _build_layout_into(child, owner, names)
                layout.addLayout(nested)
    return layout


def _build_layout_into(element: ET.Element, owner: qt.QWidget, names: Dict[str, qt.QObject]) -> qt.QLayout:
    """A layout nested in a layout: its widgets belong to the same owner widget."""
    layout = LAYOUT_CLASSES[element.get("class")]()
    layout._owner = owner
    for item in element.findall("item"):
        for child in item:
            if child.tag == "widget":
                layout.addWidget(_build_widget(child, owner, names))
            elif child.tag == "layout":
                layout.addLayout(_build_layout_into(child, owner, names))
    return layout


def _build_widget(element: ET.Element, parent: Optional[qt.QWidget], names: Dict[str, qt.QObject]) -> qt.QWidget:
    class_name = element.get("class")
    factory = WIDGET_CLASSES.get(class_name)
    if factory is None:
        raise RuntimeError(f"the Slicer stand-in has no widget class {class_name}: add a double that models it")
    widget = factory()
    widget.objectName = element.get("name", "")
    if parent is not None:
        widget.setParent(parent)
    if widget.objectName:
        names[widget.objectName] = widget
    columns = element.findall("column")
    if columns and isinstance(widget, qt.QTableWidget):
        widget.setColumnCount(len(columns))
    _apply_properties(widget, element)
    for child in element:
        if child.tag == "layout":
            _build_layout(child, widget, names)
        elif child.tag == "widget":
            _build_widget(child, widget, names)
    return widget


def load_ui(path: str, parent: Optional[qt.QWidget] = None) -> qt.QWidget:
    root = ET.parse(path).getroot()
    names: Dict[str, qt.QObject] = {}
    top = _build_widget(root.find("widget"), parent, names)
    for connection in root.iter("connection"):
        sender, receiver = names[connection.findtext("sender")], names[connection.findtext("receiver")]
        slot_name = connection.findtext("slot").split("(")[0]
        slot = getattr(receiver, slot_name, None)
        if slot is None:
            raise RuntimeError(f"{receiver.className()} {receiver.objectName} has no slot {slot_name}")
        sender.connect(connection.findtext("signal"), slot)
    return top
