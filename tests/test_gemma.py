"""Integration on a second real model, Gemma 3 270M (fetched at run time under Google's Gemma
terms, never committed): the demo facts edited in one batch hold, and their neighbours stay."""

import os

import pytest
import torch

import memit
from conftest import USER_CACHE
from memit.demo import demo_cases, probe
from memit.hparams import preset_for
from memit.methods import run
from memit.models.loading import ModelLoadError


@pytest.fixture(scope="module")
def gemma():
    private = os.environ["MEMIT_CACHE"]
    os.environ["MEMIT_CACHE"] = USER_CACHE  # fetched, joined and converted once per user
    try:
        model, tok = memit.load_model("gemma3-270m")
    except ModelLoadError as e:
        pytest.skip(f"Gemma 3 270M not available: {e}")
    finally:
        os.environ["MEMIT_CACHE"] = private
    return model, tok


@pytest.mark.slow
def test_demo_facts_hold_in_gemma_and_neighbours_stay(gemma):
    model, tok = gemma
    assert model.config.model_type == "gemma3_text" and model.config.num_hidden_layers == 18
    cases = demo_cases()
    hp = preset_for("smollm2-135m")  # the SmolLM2 preset, transferred: λ per d_ff, margins and ridge are relative
    hp.stats_tokens = 20_000
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    delta = run("memit", model, tok, [c.request for c in cases], hp, progress=False)
    try:
        rows = probe(model, tok, cases)
        assert delta.meta["verification"]["held"] == len(cases)
        rewrites = [r for r in rows if r["kind"] == "rewrite"]
        assert all(r["p_new"] > r["p_true"] for r in rewrites)
        neighbours = [r for r in rows if r["kind"] == "neighbour"]
        assert sum(r["p_true"] > r["p_new"] for r in neighbours) >= len(cases) - 1
    finally:
        delta.revert(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
