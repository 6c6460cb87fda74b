"""Causal tracing on a tiny model: restorations that must recover everything, or nothing."""

import pytest
import torch

from helpers import tiny_model
from memit.models.arch import get_arch
from memit.trace import KINDS, categorise, suggest_band, trace_fact


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gpt_neox"])
def test_restorations_recover_all_or_nothing(model_type, bpe):
    model = tiny_model(model_type, bpe)
    arch = get_arch(model)
    res = trace_fact(model, bpe, arch, "Everyone knows that {} plays the", "Toko Yasuda", 4, noise=1.0,
                     samples=2, window=2)
    eff, s0 = res["effects"], res["subject_range"][0]
    n = res["n_tokens"]
    assert set(eff) == set(KINDS) and eff["hidden"].shape == (n, 4)
    # the last block's clean output at the last token gives back the clean prediction exactly
    assert eff["hidden"][n - 1, 3] == pytest.approx(res["p_clean"] - res["p_corrupt"], abs=1e-5)
    # tokens before the subject are never corrupted: restoring them changes nothing
    assert s0 > 0 and torch.allclose(eff["hidden"][:s0], torch.zeros(s0, 4), atol=1e-6)
    cats = categorise(res)
    assert cats["mlp"].shape == (6, 4)
    assert len(suggest_band(cats["mlp"][2], 2)) == 2


def test_suggest_band_picks_the_peak():
    assert suggest_band(torch.tensor([0.0, 0.1, 0.5, 0.6, 0.2, 0.0]), 2) == [2, 3]
