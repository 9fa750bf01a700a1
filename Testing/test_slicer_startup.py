"""Installing and starting ClaraAWS in Slicer 5.8.1 and in current Slicer, through the Slicer stand-in:
the effect registers, the settings page stores the code's defaults, boto3 is installed each version's
way, settings changes reach the open panel, Reload leaves nothing listening, CTest runs the self-test once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402
from aws_fixtures import aws_env, moto_endpoint, moto_server  # noqa: E402,F401
from standin_fixtures import add_volume, connect, phantom, profile, slicer_app, wait_idle  # noqa: E402,F401

from slicer_standin import SLICER_5_8_1, SLICER_MAIN, StandinSlicer  # noqa: E402
from slicer_standin import qt_double as qt  # noqa: E402

MODULE_DIR = Path(__file__).resolve().parents[1] / "ClaraAWS"


def registered_effect_names():
    return [effect.name for effect in slicer.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()]


def test_start_up_registers_the_effect_and_the_settings_page_and_stores_verified_tls(slicer_app):
    assert slicer_app.slot_errors == []
    assert registered_effect_names() == ["ClaraAWS"]
    assert slicer_app.app.settingsDialog().panel("ClaraAWS") is not None
    # The settings dialog stored each registered widget's value at start-up: the code's defaults.
    from ClaraAWSLib.panel import settings_store

    assert settings_store.load_tls_options(slicer_app.settings).verify is True
    assert settings_store.update_on_every_click(slicer_app.settings) is True
    assert settings_store.surface_after_import(slicer_app.settings) is False
    # Loading the effect left the library importable (from 5.10 on the loaded module replaces sys.modules[folder]).
    assert hasattr(sys.modules["ClaraAWSLib"], "__path__")
    assert type(slicer.SegmentEditorClaraAWSLib).__name__ == "SegmentEditorEffect"


def test_after_a_restart_the_panel_verifies_certificates(profile):
    with StandinSlicer(profile) as first:
        first.start()
    second = first.restart()  # the settings as the INI file gives them back ("true"/"false" text)
    try:
        second.start()
        panel = second.open_module()
        assert panel.ui.verifyTlsCheckBox.checked is True
        assert panel.ui.tlsWarningLabel.visible is False
        from ClaraAWSLib.panel import settings_store

        assert settings_store.load_tls_options(second.settings).client_verify() is True
    finally:
        second.uninstall()


def test_an_effect_file_outside_slicers_naming_rule_is_not_found(profile, tmp_path):
    """The rule itself, on both loaders: a file named otherwise than <Folder>/<Class>.py is refused."""
    from slicer_standin.effects import load_effect_class

    wrong = tmp_path / "panel" / "segment_editor_effect.py"
    wrong.parent.mkdir()
    wrong.write_text("class SegmentEditorEffect:\n    pass\n")
    with pytest.raises(RuntimeError, match="class segment_editor_effectEffect was not found"):
        load_effect_class(str(wrong), profile.effect_loader)
    sys.modules.pop("panel", None)


def test_the_module_registers_once_even_when_loaded_after_start_up(profile):
    """A module loaded after startupCompleted() (Extension Wizard) registers when its panel is first shown."""
    with StandinSlicer(profile) as app:
        app.app.complete_startup()  # Slicer is up; then the module is added
        app.module = app.app.load_scripted_module(str(MODULE_DIR / "ClaraAWS.py"))
        assert registered_effect_names() == []
        app.open_module()
        assert registered_effect_names() == ["ClaraAWS"]
        assert app.app.settingsDialog().panel("ClaraAWS") is not None
        app.open_module("SegmentEditor")
        app.open_module()  # entering again registers nothing twice
        assert registered_effect_names() == ["ClaraAWS"] and app.slot_errors == []


# ---------------------------------------------------------------------------------------------- boto3


@pytest.fixture
def clara_stack(moto_endpoint, aws_env):
    from aws_fixtures import cloudformation, create_stack

    create_stack(cloudformation(moto_endpoint), "clara-prod", "clara-root", UseHTTPS="HTTPS",
                 LoadBalancerDnsName="Clara-prod-1.us-east-1.elb.amazonaws.com")
    aws_env.monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # boto3 without an endpoint goes to moto
    aws_env.monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint


def discover(app: StandinSlicer, panel) -> None:
    panel.ui.discoverButton.click()
    panel.ui.findDeploymentsButton.click()
    wait_idle(app, panel, "discovery")


@pytest.mark.parametrize("profile_under_test", [SLICER_5_8_1, SLICER_MAIN], ids=["slicer-5.8.1", "slicer-main"])
def test_discover_without_boto3_asks_installs_and_finds_the_stack(profile_under_test, clara_stack):
    with StandinSlicer(profile_under_test) as app:
        app.start()
        panel = app.open_module()
        app.dialogs.answer(qt.QMessageBox.Ok)  # "install boto3?"
        discover(app, panel)
        assert app.slot_errors == []
        assert app.installer.installs == ["boto3>=1.26"]
        assert len(app.dialogs.shown) == 1  # one question, then no error
        urls = [panel.ui.serverUrlComboBox.itemData(index) for index in range(panel.ui.serverUrlComboBox.count)]
        assert "https://Clara-prod-1.us-east-1.elb.amazonaws.com" in urls


@pytest.mark.parametrize("profile_under_test", [SLICER_5_8_1, SLICER_MAIN], ids=["slicer-5.8.1", "slicer-main"])
def test_declining_the_boto3_install_changes_nothing_and_raises_nothing(profile_under_test, aws_env):
    with StandinSlicer(profile_under_test) as app:
        app.start()
        panel = app.open_module()
        before = app.settings_values
        app.dialogs.answer(qt.QMessageBox.Cancel)
        discover(app, panel)
        assert app.slot_errors == [] and app.installer.installs == []
        assert len(app.dialogs.shown) == 1  # the question; no error box after a "no"
        assert panel.ui.findDeploymentsButton.enabled
        assert {k: v for k, v in app.settings_values.items() if not k.startswith("ClaraAWS/aws")} == \
            {k: v for k, v in before.items() if not k.startswith("ClaraAWS/aws")}


def test_a_failed_pip_install_on_slicer_58_is_one_error_box(aws_env):
    with StandinSlicer(SLICER_5_8_1) as app:
        app.start()
        panel = app.open_module()
        app.installer.fail_with = "pip exited with status 1: no network"
        app.dialogs.answer(qt.QMessageBox.Ok)  # install?
        app.dialogs.answer(qt.QMessageBox.Ok)  # the error box
        discover(app, panel)
        assert app.slot_errors == []
        assert app.dialogs.shown[-1]["text"].startswith("boto3 could not be installed")
        assert qt.QApplication.overrideCursor() is None  # the busy cursor is gone again


# ----------------------------------------------------------------------------------------- settings page


def test_settings_page_changes_reach_the_open_panel_and_back(slicer_app, reference_server):
    from ClaraAWSLib.panel import settings_store
    from ClaraAWSLib.panel.consent import ConsentBook

    panel = slicer_app.open_module()
    page = slicer_app.app.settingsDialog().panel("ClaraAWS")
    page.verifyCheckBox.click()  # the user turns verification off on the settings page
    assert panel.ui.verifyTlsCheckBox.checked is False and panel.ui.tlsWarningLabel.visible is True
    panel.ui.caBundlePathLineEdit.currentPath = "/etc/pki/clara.pem"  # an edit in the panel...
    assert settings_store.load_tls_options(slicer_app.settings).verify is False  # ...keeps the page's choice
    slicer_app.app.openSettingsDialog()  # Slicer reloads every page when it opens the dialog
    assert page.caBundleEdit.currentPath == "/etc/pki/clara.pem" and page.verifyCheckBox.checked is False
    page.verifyCheckBox.click()
    assert panel.ui.verifyTlsCheckBox.checked is True
    page.caBundleEdit.currentPath = ""
    assert panel.ui.caBundlePathLineEdit.currentPath == ""

    connect(slicer_app, panel, reference_server.url)
    assert page.historyList.texts()[0] == reference_server.url  # the page lists the server at once

    # "Don't ask again" for an https server, then "Ask again" on the page: the next upload asks again.
    https = "https://clara.example.org"
    book = ConsentBook(slicer_app.settings)
    panel.consent.agreed(https, dont_ask_again=True)
    page.refreshLists()
    assert not panel.consent.needs_asking(https)
    page.consentList.setCurrentRow(page.consentList.texts().index(https))
    page.forgetConsentButton.click()
    assert panel.consent.needs_asking(https) and https not in book.remembered()
    assert slicer_app.slot_errors == []


def _whole_grid_answer(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    labels = np.zeros((20, 30, 40), np.uint8)
    labels[5:9, 10:14, 20:27] = 3
    path = tmp_path / "answer.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(path), True)
    return path, labels


def test_on_slicer_5_8_the_settings_page_installs_zlib_ng_after_asking_and_answers_decode_with_it(tmp_path):
    """Slicer 5.8's Python runs on zlib 1.2.3 (SOURCES.md 15): the page says so and offers zlib-ng; a "no"
    changes nothing, a "yes" installs it (pip_install after our question) and the next answer inflates with
    it, to the same labels."""
    import numpy as np

    pytest.importorskip("zlib_ng")
    with StandinSlicer(SLICER_5_8_1, hide_packages=("zlib_ng",)) as app:
        app.start()
        app.open_module()
        page = app.app.settingsDialog().panel("ClaraAWS")
        from ClaraAWSLib.core import inflate
        from ClaraAWSLib.core.imageio import decode_label_box

        assert inflate.engine() == "zlib" and page.installZlibNgButton.visible
        assert page.decodingLabel.text.startswith("zlib, Slicer's own")
        app.dialogs.answer(qt.QMessageBox.Cancel)
        page.installZlibNgButton.click()
        assert app.installer.installs == [] and inflate.engine() == "zlib" and page.installZlibNgButton.visible

        app.dialogs.answer(qt.QMessageBox.Ok)
        page.installZlibNgButton.click()
        assert app.installer.installs == [inflate.ZLIB_NG_REQUIREMENT] and inflate.engine() == "zlib-ng"
        assert page.decodingLabel.text == "zlib-ng" and not page.installZlibNgButton.visible
        path, labels = _whole_grid_answer(tmp_path)
        assert type(inflate.gzip_inflater()).__name__ == "_ZlibNgInflater"
        box = decode_label_box(path.read_bytes(), path.name)
        assert box.start == (20, 10, 5) and np.array_equal(box.array, labels[5:9, 10:14, 20:27])
        assert app.slot_errors == [] and len(app.dialogs.shown) == 2


def test_on_slicer_5_10_and_newer_the_settings_page_offers_nothing_as_pythons_own_zlib_is_zlib_ng(tmp_path):
    """Slicer 5.10 and newer build Python's zlib on zlib-ng (SOURCES.md 15): the page says Slicer's own
    inflater is zlib-ng, offers no install and asks nothing; answers inflate with Python's zlib."""
    import zlib

    import numpy as np

    with StandinSlicer(SLICER_MAIN, hide_packages=("zlib_ng",)) as app:
        app.start()
        app.open_module()
        page = app.app.settingsDialog().panel("ClaraAWS")
        from ClaraAWSLib.core import inflate
        from ClaraAWSLib.core.imageio import decode_label_box

        assert inflate.engine() == "zlib" and inflate.is_fast()
        assert page.decodingLabel.text == "zlib-ng, Slicer's own" and not page.installZlibNgButton.visible
        path, labels = _whole_grid_answer(tmp_path)
        assert type(inflate.gzip_inflater()) is type(zlib.decompressobj())
        box = decode_label_box(path.read_bytes(), path.name)
        assert box.start == (20, 10, 5) and np.array_equal(box.array, labels[5:9, 10:14, 20:27])
        assert app.installer.installs == [] and app.dialogs.shown == [] and app.slot_errors == []


# ------------------------------------------------------------------------------------------- self-test


def test_ctest_runs_the_self_test_once_and_it_passes(profile):
    """slicer_add_python_unittest: Slicer --testing runs slicer.testing.runUnitTest([module dir], 'ClaraAWS')."""
    with StandinSlicer(profile, testing=True) as app:
        app.start()
        testing = sys.modules["slicer.testing"]
        testing.runUnitTest([str(MODULE_DIR)], "ClaraAWS")
        result = testing.last_result
        test_methods = [name for name in dir(sys.modules["ClaraAWS"].ClaraAWSTest) if name.startswith("test")]
        assert result.testsRun == len(test_methods) == 2
        assert result.wasSuccessful() and app.slot_errors == []


# ----------------------------------------------------------------------------------------------- reload


def test_developer_reload_leaves_the_old_panel_listening_to_nothing(slicer_app, phantom):
    add_volume(phantom)
    old = slicer_app.open_module()
    old.ui.deepgrowGroupBox.checked = True  # the deepgrow tool is on: its lists are observed
    lists = [old._parameterNode.foregroundPoints, old._parameterNode.backgroundPoints]
    assert all(node is not None for node in lists)
    called = []
    old.onDeepgrowPoint = lambda *args, **kwargs: called.append(args)  # what the old panel would do
    old.onReload()
    new = slicer.modules.ClaraAWSWidget
    assert new is not old and old.pointTools.active_tool is None
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    new._parameterNode.foregroundPoints = node
    node.AddControlPointWorld(1.0, 2.0, 3.0)
    assert called == []
    assert slicer_app.slot_errors == []
