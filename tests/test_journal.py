"""An edit journal: steps appended across runs, any earlier step restored bit-exactly, nothing lost."""

import pytest
import torch

import memit
from helpers import tiny_model
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.journal import Journal, JournalError
from memit.methods import run

BATCHES = [[memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome")],
           [memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano")],
           [memit.EditRequest("{} speaks", "Danielle", "French")]]


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_journal_replays_and_reverts_exactly(bpe, corpus_file, tmp_path):
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, v_lr=0.2, prefixes=["Because of it. "],
                          stats_corpus=corpus_file, stats_tokens=1024, stats_seq_len=32)
    model = tiny_model("llama", bpe)
    base_fp = model_fingerprint(model)
    after = [_weights(model)]
    for batch in BATCHES:  # three runs, each starting from a freshly loaded base model
        fresh = tiny_model("llama", bpe)
        j = Journal(tmp_path / "j")
        j.replay(fresh)
        delta = run("memit-seq", fresh, bpe, batch, hp, prior=j.prior(), progress=False)
        j.append(base_fp, delta)
        after.append(_weights(fresh))
    j = Journal(tmp_path / "j")
    assert len(j.steps) == 3 and set(j.prior()) == {1, 2}
    for k in (3, 1, 0):
        m = tiny_model("llama", bpe)
        j.replay(m, k)
        assert all(torch.equal(p, after[k][n]) for n, p in m.named_parameters()), k
    m, seen = tiny_model("llama", bpe), []
    for k in j.walk(m):  # every step in turn on one model, then the base weights again
        assert all(torch.equal(p, after[k][n]) for n, p in m.named_parameters()), k
        seen.append(k)
    assert seen == [0, 1, 2, 3] and all(torch.equal(p, after[0][n]) for n, p in m.named_parameters())
    undone = j.revert_to(1)
    assert len(Journal(tmp_path / "j").steps) == 1
    assert sorted(p.name for p in undone.iterdir()) == sorted(
        ["steps.json", "step-0002.safetensors", "step-0002.keys.safetensors",
         "step-0003.safetensors", "step-0003.keys.safetensors"])  # moved aside, not deleted
    m = tiny_model("llama", bpe)
    Journal(tmp_path / "j").replay(m)
    assert all(torch.equal(p, after[1][n]) for n, p in m.named_parameters())
    with pytest.raises(JournalError, match="step 5 does not exist"):
        Journal(tmp_path / "j").replay(m, 5)
    other = tiny_model("llama", bpe, seed=1)
    with pytest.raises(JournalError, match="different weights"):
        Journal(tmp_path / "j").replay(other)
