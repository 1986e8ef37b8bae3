"""Many concurrent requests through the real batcher: each gets exactly its own answer."""

from __future__ import annotations

import asyncio

import numpy as np

from service.app import create_app

from .conftest import run_async, serving

REQUESTS = 240


def test_concurrent_requests_equal_single_requests(text_case):
    texts = text_case.train_inputs
    rng = np.random.default_rng(0)
    # 1 to 3 inputs per request, drawn from texts of every length (and cut to vary them more)
    requests = []
    for r in range(REQUESTS):
        picks = rng.choice(len(texts), size=1 + r % 3, replace=False)
        requests.append([" ".join(texts[p].split()[: 1 + int(rng.integers(0, 40))]) for p in picks])
    assert len({len(t.split()) for inputs in requests for t in inputs}) > 10

    settings = text_case.settings(max_batch_items=16, max_wait_ms=2)
    app = create_app(settings, bundle=text_case.bundle)

    async def main():
        async with serving(app) as client:
            runtime = app.state.atom.runtime
            # the single-request answers, straight from the runtime, one item per batch
            single = {text: runtime.run(runtime.prepare([text], neighbors=3))[0]
                      for inputs in requests for text in inputs}
            responses = await asyncio.gather(
                *(client.post("/v1/atomize", json={"inputs": inputs, "neighbors": 3}) for inputs in requests)
            )
            return single, responses, app.state.atom.default.metrics

    single, responses, metrics = run_async(main())
    assert all(response.status_code == 200 for response in responses)
    for inputs, response in zip(requests, responses):
        results = response.json()["results"]
        assert len(results) == len(inputs)  # none lost
        for text, result in zip(inputs, results):  # none swapped
            expected = single[text]
            np.testing.assert_allclose(result["embedding"], expected.embedding, atol=1e-5)
            np.testing.assert_allclose(result["composition"]["radius"], expected.composition[-1], atol=1e-5)
            roles = [[c["probabilities"][r] for r in ("electron", "proton", "neutron")] for c in result["components"]]
            np.testing.assert_allclose(roles, expected.roles, atol=1e-5)
            np.testing.assert_allclose([n["distance"] for n in result["neighbors"]], expected.neighbors.distance, atol=1e-5)
    # the requests really were batched together
    model = {"model": metrics.model}  # the served model's series
    batches = metrics.parent.registry.get_sample_value("atom_batch_items_count", model)
    items = metrics.parent.registry.get_sample_value("atom_batch_items_sum", model)
    assert items == sum(len(inputs) for inputs in requests)  # every item ran exactly once
    assert batches < items / 2
