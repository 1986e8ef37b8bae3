"""Settings: ATOM_ environment variables, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults():
    settings = Settings()
    assert settings.bundle == Path("bundles/tweets")
    assert (settings.host, settings.port, settings.device) == ("127.0.0.1", 8000, "auto")
    assert settings.api_key is None


def test_environment_with_the_atom_prefix(monkeypatch):
    monkeypatch.setenv("ATOM_MAX_BATCH_ITEMS", "64")
    monkeypatch.setenv("ATOM_API_KEY", "k")
    monkeypatch.setenv("MAX_BATCH_ITEMS", "3")  # no prefix: ignored
    settings = Settings()
    assert settings.max_batch_items == 64
    assert settings.api_key.get_secret_value() == "k"
    assert "k'" not in repr(settings)  # the key does not leak into logs


@pytest.mark.parametrize(
    "values, field",
    [
        ({"max_inputs_per_request": 100, "max_queue_items": 10}, "max_queue_items=10"),
        ({"port": 70000}, "port"),
        ({"device": "tpu"}, "device"),
        ({"max_batch_items": 0}, "max_batch_items"),
    ],
)
def test_invalid_settings_are_refused(values, field):
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    assert field in str(caught.value)
