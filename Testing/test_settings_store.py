"""Per-user settings through the SettingsStore interface (dict-backed, shaped like QSettings)."""

from __future__ import annotations

import json

import pytest

from ClaraAWSLib.panel import settings_store as ss
from ClaraAWSLib.core.errors import InputError


class QSettingsLikeStore(ss.MemorySettingsStore):
    """Hands values back the way QSettings does from an INI file: everything as strings."""

    def value(self, key, default=None):
        if key not in self.data:
            return default
        raw = self.data[key]
        if isinstance(raw, bool):
            return "true" if raw else "false"
        return str(raw)


@pytest.fixture(params=[ss.MemorySettingsStore, QSettingsLikeStore])
def store(request):
    return request.param()


def test_every_key_is_under_the_module_prefix(store):
    ss.remember_url(store, "https://a.example.org")
    ss.save_tls_options(store, ss.TLSOptions(False, "/etc/ca.pem"))
    ss.save_aws_options(store, ss.AwsOptions("research", "eu-west-1"))
    ss.set_stack_alias(store, "clara-prod", "clara.example.org")
    ss.forget_upload_consent(store)
    assert store.data and all(key.startswith("ClaraAWS/") for key in store.data)


def test_url_history_is_most_recent_first_deduplicated_and_trimmed(store):
    ss.remember_url(store, "https://a.example.org/")
    ss.remember_url(store, "http://b.example.org:5000")
    history = ss.remember_url(store, "  https://a.example.org//  ")
    assert history == ["https://a.example.org", "http://b.example.org:5000"]
    assert ss.url_history(store) == history
    assert ss.last_url(store) == "https://a.example.org"


def test_url_history_keeps_at_most_ten(store):
    for number in range(15):
        ss.remember_url(store, f"https://host{number}.example.org")
    history = ss.url_history(store)
    assert len(history) == 10
    assert history[0] == "https://host14.example.org" and history[-1] == "https://host5.example.org"


def test_a_path_prefix_is_kept(store):
    assert ss.remember_url(store, "https://proxy.example.org/aiaa/") == ["https://proxy.example.org/aiaa"]


def test_credentials_in_a_url_are_never_stored(store):
    ss.remember_url(store, "https://alice:s3cret@clara.example.org/aiaa")
    assert ss.url_history(store) == ["https://clara.example.org/aiaa"]
    assert "s3cret" not in json.dumps(store.data) and "alice" not in json.dumps(store.data)


def test_an_empty_url_is_refused_and_the_history_is_unchanged(store):
    ss.remember_url(store, "https://a.example.org")
    before = dict(store.data)
    with pytest.raises(InputError):
        ss.remember_url(store, "  / ")
    assert store.data == before


def test_a_corrupt_history_value_is_treated_as_empty(store):
    store.setValue(ss.KEY_URL_HISTORY, "not json [")
    assert ss.url_history(store) == []
    assert ss.remember_url(store, "https://a.example.org") == ["https://a.example.org"]


def test_a_single_entry_history_survives_a_string_round_trip():
    # QSettings returns a one-element string list as a bare string; we store JSON to avoid that.
    store = QSettingsLikeStore()
    ss.remember_url(store, "https://only.example.org")
    assert ss.url_history(store) == ["https://only.example.org"]


def test_plain_http_detection():
    assert ss.is_plain_http("HTTP://clara.example.org")
    assert not ss.is_plain_http("https://clara.example.org")


def test_tls_defaults_to_verified(store):
    options = ss.load_tls_options(store)
    assert options == ss.TLSOptions(True, "")
    assert options.client_verify() is True


def test_tls_options_round_trip_and_client_verify(store):
    ss.save_tls_options(store, ss.TLSOptions(True, " /etc/pki/clara-ca.pem "))
    loaded = ss.load_tls_options(store)
    assert loaded == ss.TLSOptions(True, "/etc/pki/clara-ca.pem")
    assert loaded.client_verify() == "/etc/pki/clara-ca.pem"
    ss.save_tls_options(store, ss.TLSOptions(False, "/etc/pki/clara-ca.pem"))
    assert ss.load_tls_options(store).client_verify() is False


def test_a_boolean_qsettings_hands_back_as_text_is_understood():
    store = ss.MemorySettingsStore({ss.KEY_TLS_VERIFY: "false"})
    assert ss.load_tls_options(store).verify is False
    store = ss.MemorySettingsStore({ss.KEY_TLS_VERIFY: "garbage"})
    assert ss.load_tls_options(store).verify is True  # unknown text falls back to the safe default


def test_aws_options_round_trip(store):
    saved = ss.save_aws_options(store, ss.AwsOptions(" research ", "EU-WEST-1"))
    assert saved == ss.AwsOptions("research", "eu-west-1")
    assert ss.load_aws_options(store) == saved


@pytest.mark.parametrize("options", [ss.AwsOptions("p", "moon-base"), ss.AwsOptions("my profile", "us-east-1")])
def test_bad_aws_options_are_refused_and_nothing_is_written(store, options):
    with pytest.raises(InputError):
        ss.save_aws_options(store, options)
    assert store.data == {}


def test_stack_aliases_are_remembered_per_stack_and_can_be_forgotten(store):
    ss.set_stack_alias(store, "clara-prod", "clara.example.org")
    ss.set_stack_alias(store, "clara-test", "https://test.example.org:8443/")
    assert ss.stack_aliases(store) == {"clara-prod": "clara.example.org", "clara-test": "test.example.org:8443"}
    assert ss.set_stack_alias(store, "clara-prod", "  ") == {"clara-test": "test.example.org:8443"}
    assert ss.stack_aliases(store) == {"clara-test": "test.example.org:8443"}


@pytest.mark.parametrize("alias", ["not a host", "user:pw@clara.example.org", "-bad.example.org", "a/b"])
def test_a_bad_alias_is_refused_and_nothing_changes(store, alias):
    ss.set_stack_alias(store, "clara-prod", "clara.example.org")
    before = dict(store.data)
    with pytest.raises(InputError):
        ss.set_stack_alias(store, "clara-prod", alias)
    assert store.data == before


def test_an_alias_needs_a_stack(store):
    with pytest.raises(InputError):
        ss.set_stack_alias(store, " ", "clara.example.org")


def test_upload_consent_flag_reads_what_ctkmessagebox_writes(store):
    assert ss.upload_consent_remembered(store) is False
    store.setValue(ss.KEY_DONT_ASK_BEFORE_UPLOAD, 1024)  # QMessageBox.Ok, stored when "don't show again" is ticked
    assert ss.upload_consent_remembered(store) is True
    ss.forget_upload_consent(store)
    assert ss.upload_consent_remembered(store) is False
