"""One frozen settings object, read from overrides, environment and a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.settings import Settings


def test_precedence_overrides_then_env_then_file(tmp_path: Path) -> None:
    config = tmp_path / "lorastream.toml"
    config.write_text('[batch]\nmax_events = 10\nmax_wait_s = 7.0\n[kafka]\nclient_id = "file"\n')
    s = Settings.load(
        config, environ={"LORASTREAM_BATCH__MAX_EVENTS": "20"}, kafka={"client_id": "flag"}
    )
    assert s.batch.max_events == 20  # env beats file
    assert s.batch.max_wait_s == 7.0  # file beats default
    assert s.kafka.client_id == "flag"  # overrides beat everything


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[topics]\nevents = "clicks"\n')
    assert Settings.load(environ={"LORASTREAM_CONFIG": str(config)}).topics.events == "clicks"


def test_settings_are_frozen() -> None:
    s = Settings.load(environ={})
    with pytest.raises(ValidationError):
        s.batch.max_events = 3  # type: ignore[misc]


def test_secrets_are_hidden_but_passed_to_kafka_python() -> None:
    s = Settings.load(
        environ={
            "LORASTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "LORASTREAM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "LORASTREAM_KAFKA__SASL_PLAIN_USERNAME": "svc",
            "LORASTREAM_KAFKA__SASL_PLAIN_PASSWORD": "hunter2",
            "LORASTREAM_KAFKA__SSL_CAFILE": "/etc/ca.pem",
        }
    )
    assert "hunter2" not in repr(s)
    assert "hunter2" not in s.model_dump_json()
    kwargs = s.kafka.client_kwargs()
    assert kwargs["sasl_plain_password"] == "hunter2"
    assert kwargs["ssl_cafile"] == "/etc/ca.pem"
    assert kwargs["security_protocol"] == "SASL_SSL"


def test_sasl_without_a_mechanism_says_what_to_set() -> None:
    with pytest.raises(ValidationError, match="SASL_MECHANISM"):
        Settings.load(environ={"LORASTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"})


def test_unknown_settings_are_errors() -> None:
    with pytest.raises(ValidationError):
        Settings.load(environ={}, batch={"max_evnts": 3})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Settings.load(tmp_path / "nope.toml", environ={})


def test_a_misspelled_section_is_an_error_that_suggests_the_right_one() -> None:
    with pytest.raises(ValueError, match=r"no settings section 'bacth'.*LORASTREAM_BATCH__"):
        Settings.load(environ={"LORASTREAM_BACTH__MAX_EVENTS": "64"})
    with pytest.raises(ValidationError, match="max_eventz"):  # a misspelled field, too
        Settings.load(environ={"LORASTREAM_BATCH__MAX_EVENTZ": "64"})
    # variables that are not settings sections stay allowed
    Settings.load(environ={"LORASTREAM_CACHE": "/tmp/x"})


def test_endpoints_default_to_loopback_and_tls_needs_both_files() -> None:
    assert Settings.load(environ={}).metrics.host == "127.0.0.1"
    with pytest.raises(ValidationError, match="go together"):
        Settings.load(environ={}, metrics={"tls_certfile": "cert.pem"})


def test_secrets_are_listed_for_redaction_and_hidden_in_reprs() -> None:
    s = Settings.load(
        environ={
            "LORASTREAM_KAFKA__SASL_PLAIN_PASSWORD": "pw-1",
            "LORASTREAM_PRIVACY__PSEUDONYMIZE_KEY": "key-2",
        }
    )
    assert sorted(s.secrets()) == ["key-2", "pw-1"]
    assert "pw-1" not in repr(s)
    assert "key-2" not in repr(s)
