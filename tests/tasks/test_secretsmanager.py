"""Secrets Manager helpers without AWS: a new secret value keeps the shape and never the values."""

from __future__ import annotations

import json

import pytest

from tasks.secretsmanager import SecretState, SecurityError, new_secret_binary, new_secret_string, version_value


def test_new_secret_value_keeps_the_shape_and_never_the_values():
    old = json.dumps({"openai_api_key": "sk-" + "a" * 40, "nested": {"token": "t" * 10, "port": 5432}, "host": "db.example.com"})
    new, replaced, kept = new_secret_string(old)
    doc = json.loads(new)
    assert set(doc) == {"openai_api_key", "nested", "host"} and set(doc["nested"]) == {"token", "port"}
    assert doc["host"] == "db.example.com" and doc["nested"]["port"] == 5432
    assert doc["openai_api_key"] != "sk-" + "a" * 40 and len(doc["openai_api_key"]) == 43 and len(doc["nested"]["token"]) == 32
    assert replaced == ["openai_api_key", "nested.token"] and kept == ["nested.port", "host"]
    assert "a" * 40 not in new and all(v not in " ".join(replaced + kept) for v in ("sk-", "t" * 10))
    plain, what, _ = new_secret_string("hunter2")
    assert plain != "hunter2" and len(plain) == 32 and what == ["(whole value)"]
    with pytest.raises(SecurityError, match="without a credential string"):
        new_secret_string(json.dumps({"host": "h", "port": 1}))
    assert len(new_secret_binary(b"x")) == 32 and len(new_secret_binary(b"x" * 40)) == 40


def test_a_secret_state_shows_version_ids_only():
    assert SecretState(requested="s", current_version="v1").value == "AWSCURRENT v1" == version_value("v1")
    assert SecretState(requested="s").value == "no AWSCURRENT version"
    assert not SecretState(requested="s").rotates and SecretState(requested="s", rotation_lambda="arn").rotates
