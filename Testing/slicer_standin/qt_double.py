"""The ``qt`` module as PythonQt shows it to Slicer's Python, for the parts ClaraAWS uses.

Modelled behaviours and where they come from:
- A Python slot gets only as many signal arguments as its function takes (a lambda or a bound method
  without ``*args``); any other callable gets them all: commontk/PythonQt@patched-10
  src/PythonQtSignalReceiver.cpp:60-98 (``numPythonArgs``).
- Qt properties are Python attributes; setting one through its setter emits the notify signal only
  when the value changes (QAbstractButton::setChecked -> toggled, QComboBox::setCurrentIndex ->
  currentIndexChanged, QLineEdit::setText -> textChanged): Qt's documented setter contracts.
- ``blockSignals(True)`` silences every signal of that object until it is unblocked (QObject).
- ``qt.SIGNAL("x(int)")`` is Qt's SIGNAL macro: the signature prefixed with "2" (qobjectdefs.h).
- QSettings keeps what was set for the whole application; after a restart an INI file gives back
  strings, so a stored bool ``False`` reads as ``"false"`` (QSettings IniFormat).
- QRadioButton is auto-exclusive among the radio buttons of one parent (QAbstractButton::autoExclusive).
Nothing here draws; a widget is its properties, its children and its signals.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Callable, Dict, List, Optional

# --------------------------------------------------------------------------------------------- signals

#: Exceptions raised by Python slots (PythonQt prints them and goes on); the stand-in empties it on install.
SLOT_ERRORS: List[BaseException] = []


def _normalized(signature: str) -> str:
    """``"2clicked(bool)"`` or ``"clicked(bool)"`` -> ``"clicked"``."""
    text = str(signature)
    if text[:1] in "12" and "(" in text:
        text = text[1:]
    return text.split("(", 1)[0].strip()


def _arguments_for(slot: Callable, args: tuple) -> tuple:
    """PythonQt passes a Python function or method only the arguments it declares (see module doc)."""
    function = slot.__func__ if inspect.ismethod(slot) else slot
    if not inspect.isfunction(function):
        return args
    code = function.__code__
    if code.co_flags & inspect.CO_VARARGS:
        return args
    declared = code.co_argcount - (1 if inspect.ismethod(slot) else 0)
    return args[:declared]


def SIGNAL(signature: str) -> str:  # noqa: N802 - Qt's name
    return "2" + signature


def SLOT(signature: str) -> str:  # noqa: N802 - Qt's name
    return "1" + signature


class _BoundSignal:
    """``widget.clicked.connect(fn)``, PythonQt's attribute form of a signal."""

    def __init__(self, owner: "QObject", name: str) -> None:
        self._owner, self._name = owner, name

    def connect(self, slot: Callable) -> bool:
        return self._owner.connect(self._name + "()", slot)

    def disconnect(self, slot: Optional[Callable] = None) -> None:
        self._owner.disconnect(self._name + "()", slot)

    def emit(self, *args) -> None:
        self._owner.emit(self._name, *args)


class QObject:
    #: Signal names the class emits; attribute access gives a bound signal.
    SIGNALS: tuple = ("destroyed", "objectNameChanged")
    #: property name -> (default value, notify signal or None)
    PROPERTIES: Dict[str, tuple] = {}

    def __init__(self, parent: Optional["QObject"] = None) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_connections", {})
        object.__setattr__(self, "_blocked", False)
        object.__setattr__(self, "_dynamic", {})
        object.__setattr__(self, "_children", [])
        object.__setattr__(self, "_parent", None)
        object.__setattr__(self, "_deleted", False)
        self.objectName = ""
        if parent is not None:
            self.setParent(parent)

    # --- properties ---------------------------------------------------------------------------------
    @classmethod
    def _all_properties(cls) -> Dict[str, tuple]:
        merged: Dict[str, tuple] = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, "PROPERTIES", {}) or {})
        return merged

    @classmethod
    def _all_signals(cls) -> set:
        names = set()
        for klass in cls.__mro__:
            names.update(getattr(klass, "SIGNALS", ()) or ())
        return names

    def __getattr__(self, name: str) -> Any:
        properties = type(self)._all_properties()
        if name in properties:
            return self._values.get(name, properties[name][0])
        if name in type(self)._all_signals():
            return _BoundSignal(self, name)
        if name == "name":  # PythonQt shows objectName as "name" too (slicer.util.childWidgetVariables reads it)
            return self.__dict__.get("objectName", self._values.get("objectName", ""))
        raise AttributeError(f"{type(self).__name__} has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        properties = type(self)._all_properties()
        if name in properties:
            setter = getattr(type(self), "_set_" + name, None)
            if setter is not None:
                setter(self, value)
            else:
                self._store(name, value)
            return
        object.__setattr__(self, name, value)

    def _store(self, name: str, value: Any) -> bool:
        """Set a property; emit its notify signal when it changed. True when it changed."""
        default, notify = type(self)._all_properties()[name]
        old = self._values.get(name, default)
        self._values[name] = value
        if notify and old != value:
            self.emit(notify, value)
        return old != value

    def setProperty(self, name: str, value: Any) -> bool:  # noqa: N802
        if name in type(self)._all_properties():
            setattr(self, name, value)
            return True
        self._dynamic[name] = value
        return False

    def property(self, name: str) -> Any:
        if name in type(self)._all_properties():
            return getattr(self, name)
        return self._dynamic.get(name)

    def dynamicPropertyNames(self) -> List[str]:  # noqa: N802
        return list(self._dynamic)

    # --- object tree ----------------------------------------------------------------------------------
    def setParent(self, parent: Optional["QObject"]) -> None:  # noqa: N802
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        object.__setattr__(self, "_parent", parent)
        if parent is not None:
            parent._children.append(self)

    def parent(self) -> Optional["QObject"]:
        return self._parent

    def children(self) -> List["QObject"]:
        return list(self._children)

    def className(self) -> str:  # noqa: N802
        return getattr(type(self), "QT_CLASS", type(self).__name__)

    def inherits(self, class_name: str) -> bool:
        return any(getattr(klass, "QT_CLASS", klass.__name__) == class_name for klass in type(self).__mro__)

    def deleteLater(self) -> None:  # noqa: N802
        object.__setattr__(self, "_deleted", True)

    # --- signals ----------------------------------------------------------------------------------------
    def connect(self, *args) -> bool:
        """``obj.connect("signal(args)", slot)`` or ``obj.connect(obj, "signal(args)", slot)`` (PythonQt forms)."""
        if len(args) == 3:
            sender, signal, slot = args
            return sender.connect(signal, slot)
        signal, slot = args
        name = _normalized(signal)
        if name not in type(self)._all_signals():
            # PythonQt refuses a connection to a signal the class does not have (returns False, logs).
            raise AssertionError(f"{self.className()} has no signal {signal!r}")
        self._connections.setdefault(name, []).append(slot)
        return True

    def disconnect(self, signal: str, slot: Optional[Callable] = None) -> bool:
        name = _normalized(signal)
        slots = self._connections.get(name, [])
        if slot is None:
            slots.clear()
            return True
        for index, known in enumerate(slots):
            if known == slot:
                del slots[index]
                return True
        return False

    def receivers(self, signal: str) -> int:
        return len(self._connections.get(_normalized(signal), []))

    def emit(self, signal: str, *args) -> None:
        """Call the slots; an exception in one is printed and the others still run, as PythonQt does
        (PythonQtSignalReceiver.cpp patched-10:125-133, handleError). The stand-in keeps each in SLOT_ERRORS."""
        if self._blocked:
            return
        for slot in list(self._connections.get(_normalized(signal), [])):
            try:
                slot(*_arguments_for(slot, args))
            except Exception as error:  # noqa: BLE001 - PythonQt prints it; tests assert SLOT_ERRORS is empty
                logging.exception("Python slot of %s(%s) failed", self.className(), _normalized(signal))
                SLOT_ERRORS.append(error)

    def blockSignals(self, block: bool) -> bool:  # noqa: N802
        was = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return was

    def signalsBlocked(self) -> bool:  # noqa: N802
        return self._blocked


# --------------------------------------------------------------------------------------------- widgets


class QWidget(QObject):
    SIGNALS = ("customContextMenuRequested",)
    PROPERTIES = {"enabled": (True, None), "visible": (True, None), "toolTip": ("", None), "objectName": ("", None),
                  "windowTitle": ("", None), "cursor": (None, None), "minimumWidth": (0, None),
                  "sizePolicy": (None, None)}

    def __init__(self, parent: Optional[QObject] = None, *args) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_layout", None)

    def setLayout(self, layout: "QLayout") -> None:  # noqa: N802
        object.__setattr__(self, "_layout", layout)
        layout._owner = self
        for widget in layout._widgets:
            widget.setParent(self)

    def layout(self) -> Optional["QLayout"]:
        return self._layout

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def isVisible(self) -> bool:  # noqa: N802
        return bool(self.visible)

    def setEnabled(self, enabled: bool) -> None:  # noqa: N802
        self.enabled = bool(enabled)

    def setVisible(self, visible: bool) -> None:  # noqa: N802
        self.visible = bool(visible)

    def setToolTip(self, text: str) -> None:  # noqa: N802
        self.toolTip = text

    def repaint(self) -> None:
        pass

    def update(self) -> None:
        pass

    def close(self) -> bool:
        self.visible = False
        return True

    def setSizePolicy(self, *args) -> None:  # noqa: N802
        pass

    def isWidgetType(self) -> bool:  # noqa: N802 - what parameterNodeWrapper._isWidget asks
        return True

    def findChildren(self, class_type=None) -> List[QObject]:  # noqa: N802
        found, pending = [], list(self.children())
        while pending:
            child = pending.pop(0)
            found.append(child)
            pending.extend(child.children())
        return [child for child in found if class_type is None or isinstance(child, class_type)]


class QFrame(QWidget):
    pass


class QDialog(QWidget):
    SIGNALS = ("accepted", "rejected", "finished")

    def exec_(self) -> int:
        return 1


class QLabel(QFrame):
    PROPERTIES = {"text": ("", None), "wordWrap": (False, None), "textFormat": (0, None),
                  "openExternalLinks": (False, None)}

    def __init__(self, *args) -> None:
        text = args[0] if args and isinstance(args[0], str) else ""
        parent = next((arg for arg in args if isinstance(arg, QObject)), None)
        super().__init__(parent)
        self.text = text

    def setText(self, text: str) -> None:  # noqa: N802
        self.text = text


class QAbstractButton(QWidget):
    SIGNALS = ("clicked", "toggled", "pressed", "released")
    PROPERTIES = {"text": ("", None), "checkable": (False, None), "checked": (False, "toggled"), "icon": (None, None),
                  "autoExclusive": (False, None)}

    def __init__(self, *args) -> None:
        text = args[0] if args and isinstance(args[0], str) else ""
        parent = next((arg for arg in args if isinstance(arg, QObject)), None)
        super().__init__(parent)
        self.text = text

    def _set_checked(self, value: bool) -> None:
        value = bool(value)
        if not self.checkable:
            return  # QAbstractButton::setChecked does nothing on a button that is not checkable
        if not value and self.autoExclusive and self._values.get("checked"):
            return  # an exclusive button is unchecked only by checking another
        if value and self.autoExclusive and self._parent is not None:
            for sibling in self._parent.children():
                if sibling is not self and isinstance(sibling, QAbstractButton) and sibling.autoExclusive \
                        and sibling._values.get("checked"):
                    sibling._values["checked"] = False
                    sibling.emit("toggled", False)
        self._store("checked", value)

    def setChecked(self, value: bool) -> None:  # noqa: N802
        self.checked = value

    def isChecked(self) -> bool:  # noqa: N802
        return bool(self.checked)

    def setText(self, text: str) -> None:  # noqa: N802
        self.text = text

    def click(self) -> None:
        """A user's click: ignored while disabled; toggles a checkable button, then emits clicked(checked)."""
        if not self.enabled or not self.visible_in_tree():
            return
        if self.checkable:
            self._set_checked(not self.checked)
        self.emit("clicked", bool(self.checked))

    def visible_in_tree(self) -> bool:
        widget: Optional[QObject] = self
        while isinstance(widget, QWidget):
            if not widget.visible:
                return False
            widget = widget.parent()
        return True


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    SIGNALS = ("stateChanged",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.checkable = True


class QRadioButton(QAbstractButton):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.checkable = True
        self.autoExclusive = True


class QGroupBox(QWidget):
    SIGNALS = ("toggled", "clicked")
    PROPERTIES = {"title": ("", None), "checkable": (False, None), "checked": (True, "toggled"), "flat": (False, None)}

    def _set_checked(self, value: bool) -> None:
        if self.checkable:
            self._store("checked", bool(value))

    def setChecked(self, value: bool) -> None:  # noqa: N802
        self.checked = value


class QLineEdit(QWidget):
    SIGNALS = ("textChanged", "textEdited", "returnPressed", "editingFinished")
    PROPERTIES = {"text": ("", "textChanged"), "placeholderText": ("", None), "readOnly": (False, None),
                  "echoMode": (0, None), "clearButtonEnabled": (False, None)}

    def setText(self, text: str) -> None:  # noqa: N802
        self.text = text


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged", "currentTextChanged", "editTextChanged", "activated", "textActivated")
    PROPERTIES = {"editable": (False, None), "currentIndex": (-1, None), "count": (0, None),
                  "insertPolicy": (0, None), "sizeAdjustPolicy": (0, None), "placeholderText": ("", None)}

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_items", [])  # [text, data]
        object.__setattr__(self, "_edit_text", "")
        object.__setattr__(self, "_line_edit", None)

    def _set_editable(self, value: bool) -> None:
        self._values["editable"] = bool(value)
        if value and self._line_edit is None:
            line = QLineEdit(self)
            line.connect("textChanged(QString)", self._on_line_edit_text)
            object.__setattr__(self, "_line_edit", line)

    def _on_line_edit_text(self, text: str) -> None:
        if text != self._edit_text:
            object.__setattr__(self, "_edit_text", text)
            self.emit("editTextChanged", text)

    def lineEdit(self) -> Optional[QLineEdit]:  # noqa: N802
        return self._line_edit

    def _set_count(self, value) -> None:
        raise AttributeError("QComboBox.count is read-only")

    def __getattr__(self, name: str) -> Any:
        if name == "count":
            return len(self._items)
        if name == "currentText":
            return self._current_text()
        return super().__getattr__(name)

    def _current_text(self) -> str:
        if self.editable:
            return self._edit_text
        index = self.currentIndex
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def _set_currentIndex(self, index: int) -> None:  # noqa: N802
        index = int(index)
        if not -1 <= index < len(self._items):
            index = -1
        old = self._values.get("currentIndex", -1)
        self._values["currentIndex"] = index
        if self.editable and self._line_edit is not None:
            self._line_edit.text = self._items[index][0] if index >= 0 else self._edit_text
        if old != index:
            self.emit("currentIndexChanged", index)
            self.emit("currentTextChanged", self._current_text())

    def setCurrentIndex(self, index: int) -> None:  # noqa: N802
        self.currentIndex = index

    def setCurrentText(self, text: str) -> None:  # noqa: N802
        index = self.findText(text)
        if index >= 0:
            self.currentIndex = index
        elif self.editable:
            self.setEditText(text)

    def setEditText(self, text: str) -> None:  # noqa: N802
        if self._line_edit is not None:
            self._line_edit.text = text

    def addItem(self, text: str, data: Any = None) -> None:  # noqa: N802
        self._items.append([str(text), data])
        if len(self._items) == 1 and self.currentIndex < 0:
            self.currentIndex = 0  # QComboBox selects the first item added to an empty box

    def addItems(self, texts) -> None:  # noqa: N802
        for text in texts:
            self.addItem(text)

    def clear(self) -> None:
        self._items.clear()
        self.currentIndex = -1

    def itemText(self, index: int) -> str:  # noqa: N802
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def itemData(self, index: int) -> Any:  # noqa: N802
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def findData(self, data: Any) -> int:  # noqa: N802
        return next((index for index, item in enumerate(self._items) if item[1] == data and data is not None), -1)

    def findText(self, text: str) -> int:  # noqa: N802
        return next((index for index, item in enumerate(self._items) if item[0] == text), -1)


class QAbstractSpinBox(QWidget):
    pass


class QSpinBox(QAbstractSpinBox):
    SIGNALS = ("valueChanged",)
    PROPERTIES = {"value": (0, "valueChanged"), "minimum": (0, None), "maximum": (99, None), "suffix": ("", None),
                  "singleStep": (1, None)}

    def _set_value(self, value) -> None:
        self._store("value", max(self.minimum, min(self.maximum, int(value))))


class QDoubleSpinBox(QSpinBox):
    pass


class QProgressBar(QWidget):
    SIGNALS = ("valueChanged",)
    PROPERTIES = {"value": (0, "valueChanged"), "minimum": (0, None), "maximum": (100, None), "format": ("%p%", None),
                  "textVisible": (True, None)}


class QTableWidgetItem:
    def __init__(self, text: str = "") -> None:
        self._text, self._tooltip = str(text), ""

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802
        self._text = str(text)

    def setToolTip(self, text: str) -> None:  # noqa: N802
        self._tooltip = str(text)

    def toolTip(self) -> str:  # noqa: N802
        return self._tooltip


class QHeaderView(QWidget):
    Interactive, Stretch, Fixed, ResizeToContents = 0, 1, 2, 3
    PROPERTIES = {"stretchLastSection": (False, None), "visible": (True, None)}

    def setSectionResizeMode(self, *args) -> None:  # noqa: N802
        pass


class QTableWidget(QWidget):
    SIGNALS = ("itemSelectionChanged", "cellClicked")
    PROPERTIES = {"rowCount": (0, None), "columnCount": (0, None), "editTriggers": (0, None),
                  "selectionBehavior": (0, None), "alternatingRowColors": (False, None)}

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_cells", {})
        object.__setattr__(self, "_header", QHeaderView())
        object.__setattr__(self, "_vheader", QHeaderView())

    def setRowCount(self, rows: int) -> None:  # noqa: N802
        self.rowCount = int(rows)
        for key in [key for key in self._cells if key[0] >= rows]:
            del self._cells[key]

    def setColumnCount(self, columns: int) -> None:  # noqa: N802
        self.columnCount = int(columns)

    def setItem(self, row: int, column: int, item: QTableWidgetItem) -> None:  # noqa: N802
        assert 0 <= row < self.rowCount and 0 <= column < self.columnCount, \
            f"cell ({row}, {column}) is outside the table ({self.rowCount} x {self.columnCount})"
        self._cells[(row, column)] = item

    def item(self, row: int, column: int) -> Optional[QTableWidgetItem]:
        return self._cells.get((row, column))

    def horizontalHeader(self) -> QHeaderView:  # noqa: N802
        return self._header

    def verticalHeader(self) -> QHeaderView:  # noqa: N802
        return self._vheader


class QListWidgetItem(QTableWidgetItem):
    pass


class QListWidget(QWidget):
    SIGNALS = ("currentRowChanged", "itemSelectionChanged")
    PROPERTIES = {"currentRow": (-1, "currentRowChanged")}

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_items", [])

    def addItem(self, item) -> None:  # noqa: N802
        self._items.append(item if isinstance(item, QListWidgetItem) else QListWidgetItem(str(item)))

    def addItems(self, texts) -> None:  # noqa: N802
        for text in texts:
            self.addItem(text)

    def clear(self) -> None:
        self._items.clear()
        self.currentRow = -1

    @property
    def count(self) -> int:
        return len(self._items)

    def item(self, row: int) -> Optional[QListWidgetItem]:
        return self._items[row] if 0 <= row < len(self._items) else None

    def currentItem(self) -> Optional[QListWidgetItem]:  # noqa: N802
        return self.item(self.currentRow)

    def setCurrentRow(self, row: int) -> None:  # noqa: N802
        self.currentRow = row

    def texts(self) -> List[str]:
        return [item.text() for item in self._items]


# --------------------------------------------------------------------------------------------- layouts


class QLayout(QObject):
    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(None)
        object.__setattr__(self, "_widgets", [])
        object.__setattr__(self, "_items", [])
        self._owner = None
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def addWidget(self, widget: QWidget, *args) -> None:  # noqa: N802
        self._widgets.append(widget)
        self._items.append(widget)
        if self._owner is not None:
            widget.setParent(self._owner)

    def addLayout(self, layout: "QLayout", *args) -> None:  # noqa: N802
        self._items.append(layout)
        layout._owner = self._owner

    def addStretch(self, *args) -> None:  # noqa: N802
        self._items.append(None)

    def addSpacing(self, *args) -> None:  # noqa: N802
        pass

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> Any:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def removeItem(self, item: Any) -> None:  # noqa: N802
        if item in self._items:
            self._items.remove(item)

    def setContentsMargins(self, *args) -> None:  # noqa: N802
        pass

    def setSpacing(self, *args) -> None:  # noqa: N802
        pass


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QFormLayout(QLayout):
    def addRow(self, *args) -> None:  # noqa: N802
        for item in args:
            if isinstance(item, QWidget):
                self.addWidget(item)
            elif isinstance(item, QLayout):
                self.addLayout(item)
            elif isinstance(item, str) and item:
                self.addWidget(QLabel(item))


# --------------------------------------------------------------------------------------------- misc


class Qt:
    WaitCursor, ArrowCursor = 3, 0
    Checked, Unchecked = 2, 0
    AlignLeft, AlignRight, AlignCenter = 1, 2, 4
    UserRole = 256


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path

    def isNull(self) -> bool:  # noqa: N802
        return not self.path


class QCursor:
    def __init__(self, shape: int = 0) -> None:
        self._shape = shape

    def shape(self) -> int:
        return self._shape


class QUrl:
    def __init__(self, url: str = "") -> None:
        from urllib.parse import urlsplit

        self._parts = urlsplit(url)

    def host(self) -> str:
        return self._parts.hostname or ""

    def scheme(self) -> str:
        return self._parts.scheme


class QSize:
    def __init__(self, width: int = 0, height: int = 0) -> None:
        self.width, self.height = width, height


class QMessageBox(QDialog):
    """Qt's QMessageBox; ``exec_`` gives the answer a test put in the stand-in's dialog script."""

    NoButton, Ok, Save, Open, Yes, No, Abort, Retry, Ignore, Close, Cancel = (
        0x0, 0x400, 0x800, 0x2000, 0x4000, 0x10000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000)
    NoIcon, Information, Warning, Critical, Question = 0, 1, 2, 3, 4
    PROPERTIES = {"text": ("", None), "detailedText": ("", None), "icon": (0, None), "standardButtons": (0, None)}

    #: Set by the stand-in: called with the box, returns the pressed button (see application.Dialogs).
    answer_provider: Optional[Callable[["QMessageBox"], int]] = None

    def __init__(self, *args) -> None:
        parent = args[-1] if args and isinstance(args[-1], QObject) else None
        super().__init__(parent)
        if len(args) >= 3:
            self.icon, self.windowTitle, self.text = args[0], args[1], args[2]
        if len(args) >= 4 and isinstance(args[3], int):
            self.standardButtons = args[3]
        object.__setattr__(self, "_check_box", None)

    def setCheckBox(self, box: QCheckBox) -> None:  # noqa: N802
        object.__setattr__(self, "_check_box", box)

    def checkBox(self) -> Optional[QCheckBox]:  # noqa: N802
        return self._check_box

    def exec_(self) -> int:
        provider = type(self).answer_provider
        assert provider is not None, f"a dialog opened with no answer scripted: {self.text!r}"
        return provider(self)

    exec = exec_


class QApplication:
    _override_cursors: List[Any] = []

    @staticmethod
    def setOverrideCursor(cursor) -> None:  # noqa: N802 - a Qt::CursorShape converts to a QCursor
        QApplication._override_cursors.append(cursor if isinstance(cursor, QCursor) else QCursor(cursor))

    @staticmethod
    def restoreOverrideCursor() -> None:  # noqa: N802
        if QApplication._override_cursors:
            QApplication._override_cursors.pop()

    @staticmethod
    def overrideCursor():  # noqa: N802
        return QApplication._override_cursors[-1] if QApplication._override_cursors else None


class QSettings:
    """One application-wide store; the stand-in's ``restart`` turns values into what an INI file gives back."""

    store: Dict[str, Any] = {}

    def __init__(self, *args) -> None:
        pass

    def value(self, key: str, default: Any = None) -> Any:
        return QSettings.store.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802
        QSettings.store[key] = value

    def contains(self, key: str) -> bool:
        return key in QSettings.store

    def remove(self, key: str) -> None:
        for stored in [stored for stored in QSettings.store if stored == key or stored.startswith(key + "/")]:
            del QSettings.store[stored]

    def allKeys(self) -> List[str]:  # noqa: N802
        return sorted(QSettings.store)

    def sync(self) -> None:
        pass

    @staticmethod
    def as_ini_text(value: Any) -> Any:
        """What QSettings' INI format reads back after a restart (bools and numbers become text)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [QSettings.as_ini_text(item) for item in value]
        return value


class QTimer(QObject):
    """A timer the stand-in's event loop fires (``Application.processEvents``) once its interval passed."""

    SIGNALS = ("timeout",)
    PROPERTIES = {"interval": (0, None), "singleShot": (False, None), "active": (False, None)}
    #: Every live timer; the application's event loop looks here.
    running: List["QTimer"] = []

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_due", 0.0)

    def setInterval(self, msec: int) -> None:  # noqa: N802
        self.interval = int(msec)

    def setSingleShot(self, single: bool) -> None:  # noqa: N802
        self._values["singleShot"] = bool(single)

    def start(self, msec: Optional[int] = None) -> None:
        if msec is not None:
            self.interval = int(msec)
        object.__setattr__(self, "_due", time.monotonic() + self.interval / 1000.0)
        self._values["active"] = True
        if self not in QTimer.running:
            QTimer.running.append(self)

    def stop(self) -> None:
        self._values["active"] = False
        if self in QTimer.running:
            QTimer.running.remove(self)

    def isActive(self) -> bool:  # noqa: N802
        return bool(self.active)

    def fire_if_due(self, now: float) -> bool:
        if not self.active or now < self._due:
            return False
        if self._values.get("singleShot"):  # the property; QTimer.singleShot is also the static function
            self.stop()
        else:
            object.__setattr__(self, "_due", now + self.interval / 1000.0)
        self.emit("timeout")
        return True

    @staticmethod
    def singleShot(msec: int, slot: Callable) -> None:  # noqa: N802 - QTimer::singleShot
        timer = QTimer()
        timer.setSingleShot(True)
        timer.connect("timeout()", lambda: slot())
        timer.start(msec)


class QFile:
    ReadOnly = 1

    def __init__(self, path: str) -> None:
        self.path = str(path)

    def exists(self) -> bool:
        import os

        return os.path.isfile(self.path)

    def open(self, mode: int) -> bool:
        return self.exists()

    def close(self) -> None:
        pass


class QUiLoader:
    """Qt's QUiLoader: the widget tree of a Designer file (see ui_loader.py)."""

    def load(self, qfile: QFile, parent: Optional[QWidget] = None) -> Optional[QWidget]:
        from .ui_loader import load_ui

        return load_ui(qfile.path, parent)
