"""The runtime: input validation, outputs equal to ONNX Runtime run directly, padding invariance."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInput, TooLarge
from contract.runner import DeviceError, create_session
from service.runtime import Item, Runtime


@pytest.fixture(scope="module")
def text_runtime(text_case):
    return Runtime(text_case.bundle, device="cpu", max_components_per_input=1024)


@pytest.fixture(scope="module")
def numeric_runtime(numeric_case):
    return Runtime(numeric_case.bundle, device="cpu", max_components_per_input=1024)


def test_text_outputs_equal_the_onnx_model_run_directly(text_case, text_runtime):
    rows = [0, 1, 2, 3, 4, 5]
    items = text_runtime.prepare([text_case.train_inputs[r] for r in rows])
    for row, item in zip(rows, items):  # the service tokenizes as training did
        n = int(text_case.model_mask[row].sum())
        np.testing.assert_array_equal(item.components, text_case.model_inputs[row, :n])
    results = text_runtime.run(items)  # one padded batch of mixed lengths
    expected = text_case.reference(rows)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.embedding, expected["embedding"][i], atol=1e-5)
        np.testing.assert_allclose(result.roles, expected["roles"][i], atol=1e-5)
        np.testing.assert_allclose(result.composition, expected["composition"][i], atol=1e-5)
        np.testing.assert_allclose(result.roles.sum(axis=1), 1.0, atol=1e-5)


def test_numeric_image_is_patchified_like_training(numeric_case, numeric_runtime):
    rows = [0, 7]
    flat = [numeric_case.train_inputs[r] for r in rows]
    square = [np.asarray(pixels).reshape(8, 8).tolist() for pixels in flat]
    items = numeric_runtime.prepare(flat)
    for row, item, other in zip(rows, items, numeric_runtime.prepare(square)):
        np.testing.assert_array_equal(item.components, numeric_case.model_inputs[row])
        np.testing.assert_array_equal(item.components, other.components)
    expected = numeric_case.reference(rows)
    for i, result in enumerate(numeric_runtime.run(items)):
        np.testing.assert_allclose(result.embedding, expected["embedding"][i], atol=1e-5)


def test_padding_does_not_change_an_items_result(text_case, text_runtime):
    texts = text_case.train_inputs[:12]
    items = text_runtime.prepare(texts, neighbors=3)
    assert len({item.length for item in items}) > 1  # mixed lengths, so the batch is padded
    together = text_runtime.run(items)
    for item, batched in zip(items, together):
        (alone,) = text_runtime.run([item])
        np.testing.assert_allclose(batched.embedding, alone.embedding, atol=1e-5)
        np.testing.assert_allclose(batched.roles, alone.roles, atol=1e-5)
        np.testing.assert_array_equal(batched.neighbors.rows, alone.neighbors.rows)


@pytest.mark.parametrize(
    "value, error, words",
    [
        ([float("nan")] * 64, InvalidInput, "inputs[0] contains NaN or Inf"),
        ([1.0, float("inf")] + [0.0] * 62, InvalidInput, "NaN or Inf"),
        ([1.0] * 63, InvalidInput, "expected 64 pixel values or a 8 x 8 image"),
        ([[1.0, 2.0], [3.0]], InvalidInput, "not a rectangular array"),
        ("a string", InvalidInput, "is a string"),
    ],
)
def test_bad_numeric_inputs_are_refused_naming_the_input(numeric_runtime, value, error, words):
    with pytest.raises(error) as caught:
        numeric_runtime.prepare([value])
    assert words in caught.value.message


def test_bad_text_inputs_are_refused(text_runtime):
    with pytest.raises(InvalidInput, match=r"inputs\[1\] is empty"):
        text_runtime.prepare(["t01 t02", ""])
    with pytest.raises(InvalidInput, match=r"inputs\[0\] is not a string"):
        text_runtime.prepare([[1.0, 2.0]])


def test_a_text_past_the_component_limit_is_cut_or_refused(text_case):
    runtime = Runtime(text_case.bundle, device="cpu", max_components_per_input=3)
    short, cut = runtime.prepare(["t01", "t01 t02 t03 t04 t05"])
    assert (short.truncated, cut.truncated) == (False, True)
    assert runtime.token_strings(cut.components) == ["t01", "t02", "t03"]
    with pytest.raises(TooLarge) as caught:
        runtime.prepare(["t01", "t01 t02 t03 t04 t05"], truncate=False)
    assert caught.value.message == (
        'inputs[1] is 19 characters long and has more than 3 tokens, the most model '
        f'{text_case.bundle.manifest.name} takes here; send "truncate": true to cut it, or "chunk": true to '
        'read it whole in windows'
    )


def test_a_numeric_input_past_the_component_limit_names_the_setting(numeric_case):
    runtime = Runtime(numeric_case.bundle, device="cpu", max_components_per_input=3)
    with pytest.raises(TooLarge) as caught:
        runtime.prepare([numeric_case.train_inputs[0]])
    assert caught.value.message == "inputs[0] has 16 components; the limit is max_components_per_input=3"


def test_token_strings_show_the_tokens(text_runtime):
    (item,) = text_runtime.prepare(["t01 t02 t01"])
    assert text_runtime.token_strings(item.components) == ["t01", "t02", "t01"]


def test_warm_up_runs_and_the_provider_is_cpu_here(numeric_runtime):
    numeric_runtime.warm_up()
    assert numeric_runtime.provider == "CPUExecutionProvider"
    assert isinstance(numeric_runtime.run([Item(np.zeros((16, 4), np.float32))])[0].embedding, np.ndarray)


def test_auto_falls_back_to_cpu_and_cuda_fails_loudly_without_cuda(numeric_case):
    session, provider, model_file = create_session(numeric_case.bundle, "auto")
    if provider == "CUDAExecutionProvider":
        pytest.skip("CUDA works on this machine")
    assert (provider, model_file) == ("CPUExecutionProvider", "encoder.onnx")
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="device=cuda"):
        create_session(numeric_case.bundle, "cuda")


def test_finite_rows_read_each_row_and_only_the_roles_of_its_real_components():
    from service.runtime import finite_rows

    embedding, composition = np.zeros((3, 4), np.float32), np.zeros((3, 6), np.float32)
    roles = np.full((3, 5, 3), 1 / 3, np.float32)
    roles[0, 4] = np.nan  # padding of a row of length 2: does not count
    roles[1, 1] = np.inf  # a real component of a row of length 3
    composition[2, 5] = np.nan
    assert finite_rows(embedding, roles, composition, [2, 3, 5]).tolist() == [True, False, False]
    assert finite_rows(embedding, list(roles), composition, [2, 3, 5]).tolist() == [True, False, False]  # one per call
    embedding[0, 0] = np.nan
    assert finite_rows(embedding, roles, composition, [2, 3, 5]).tolist() == [False, False, False]
