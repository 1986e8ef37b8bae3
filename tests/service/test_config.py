"""Settings: ATOM_ environment variables, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults():
    settings = Settings()
    assert settings.bundle == ("bundles/tweets",)
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


def test_a_queue_smaller_than_a_request_is_refused_with_the_fix_named():
    with pytest.raises(ValidationError) as caught:
        Settings(max_queue_items=64)
    message = str(caught.value)
    assert "max_queue_items=64 is below max_inputs_per_request=256" in message
    assert "Lower ATOM_MAX_INPUTS_PER_REQUEST (--max-inputs-per-request) to at most 64" in message
    assert Settings(max_queue_items=64, max_inputs_per_request=64).max_queue_items == 64


def test_new_limits_have_their_defaults_and_bounds():
    settings = Settings()
    assert (settings.max_concurrent_requests, settings.max_connections) == (512, 2048)
    assert (settings.read_timeout_s, settings.drain_s, settings.metrics_port) == (15.0, 5.0, None)
    assert Settings(bundle_digest="ab" * 32).pinned_digest == "sha256:" + "ab" * 32
    with pytest.raises(ValidationError):
        Settings(metrics_port=8000)  # the API port


def test_the_padding_bound_is_auto_by_device_unless_set(monkeypatch):
    from service.app import batching_config

    assert Settings().max_batch_padding is None
    assert batching_config(Settings(), "CPUExecutionProvider").max_batch_padding == 0.1
    assert batching_config(Settings(), "CUDAExecutionProvider").max_batch_padding == float("inf")
    monkeypatch.setenv("ATOM_MAX_BATCH_PADDING", "0.3")
    assert batching_config(Settings(), "CUDAExecutionProvider").max_batch_padding == 0.3
    assert batching_config(Settings(max_batch_padding="inf"), "CPUExecutionProvider").described()["max_batch_padding"] is None
    with pytest.raises(ValidationError):
        Settings(max_batch_padding=-0.1)


def test_the_http_layer_takes_the_c_parser_when_installed_and_h11_on_request():
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from service.server import guarded_protocol

    assert issubclass(guarded_protocol(10, 1.0, "auto"), HttpToolsProtocol)
    assert issubclass(guarded_protocol(10, 1.0, "h11"), H11Protocol)
    with pytest.raises(ValidationError):
        Settings(http="h2")
