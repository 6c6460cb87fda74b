"""Deltas: save → load → apply → revert is bit-exact; damage and mismatches are refused."""

import pytest
import torch

import memit
from helpers import tiny_model
from memit.delta import DeltaError, load_delta
from memit.files import CorruptFileError
from memit.hparams import MemitHyperParams


@pytest.fixture(scope="module")
def edited(bpe, corpus_file):
    model = tiny_model("llama", bpe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hp = MemitHyperParams(layers=[1, 2], lam=0.5, prefixes=["I said. "], stats_corpus=corpus_file,
                          stats_tokens=2000, stats_seq_len=32, v_num_grad_steps=4)
    reqs = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
            memit.EditRequest("{} plays the", "Toko Yasuda", "piano")]
    delta = memit.edit(model, bpe, reqs, hp, apply=False, progress=False)
    return model, before, delta


def _same(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_apply_false_leaves_the_model_untouched(edited):
    model, before, _ = edited
    assert _same(model, before)


def test_round_trip_is_bit_exact(edited, tmp_path):
    model, before, delta = edited
    delta.apply(model)
    after_apply = {k: v.clone() for k, v in model.state_dict().items()}
    assert not _same(model, before)
    delta.revert(model)
    assert _same(model, before)
    path = tmp_path / "d.safetensors"
    delta.save(path)
    loaded = load_delta(path)
    assert loaded.meta["layers"] == [1, 2] and set(loaded.weights) == set(delta.weights)
    loaded.apply(model, check_fingerprint=True)
    assert _same(model, after_apply)  # the loaded delta reproduces the edit exactly
    loaded.revert(model)
    assert _same(model, before)
    with loaded.applied(model):
        assert _same(model, after_apply)
    assert _same(model, before)


def test_save_refuses_to_overwrite(edited, tmp_path):
    _, _, delta = edited
    path = tmp_path / "d.safetensors"
    delta.save(path)
    with pytest.raises(DeltaError, match="exists"):
        delta.save(path)


def test_damaged_file_is_detected(edited, tmp_path):
    _, _, delta = edited
    path = tmp_path / "d.safetensors"
    delta.save(path)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError):
        load_delta(path)


def test_wrong_model_is_refused(edited, bpe):
    _, _, delta = edited
    other = tiny_model("llama", bpe, seed=1)
    with pytest.raises(DeltaError, match="fingerprint"):
        delta.apply(other, check_fingerprint=True)
    gpt2 = tiny_model("gpt2", bpe)
    with pytest.raises(DeltaError, match="no parameter"):
        delta.apply(gpt2)
