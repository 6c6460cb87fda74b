"""An edit of a model spread by accelerate (layers in memory and on disk) equals the unsplit edit,
and the files the offloaded layers are read from are never written."""

import hashlib

import pytest
import torch
from transformers import AutoModelForCausalLM

import memit
from helpers import tiny_model
from memit.hparams import MemitHyperParams
from memit.methods.memit import edit

REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano")]


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def saved(bpe, tmp_path):
    folder = tmp_path / "model"
    tiny_model("llama", bpe).save_pretrained(folder)
    bpe.save_pretrained(folder)
    return folder


def test_edit_split_across_memory_and_disk_equals_unsplit(bpe, saved, tmp_path, corpus_file):
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=4, v_lr=0.1, stats_corpus=corpus_file,
                          stats_tokens=512, stats_seq_len=32)
    whole = AutoModelForCausalLM.from_pretrained(saved).eval().requires_grad_(False)
    split_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu",
                 "model.layers.0": "cpu", "model.layers.1": "cpu", "model.layers.2": "disk", "model.layers.3": "disk"}
    split, _ = memit.load_model(str(saved), device_map=split_map, offload_folder=tmp_path / "offload")
    name = "model.layers.2.mlp.down_proj.weight"
    assert split.get_parameter(name).device.type == "meta"  # really offloaded
    files = _digest(saved)
    x = torch.tensor([[5, 9, 13, 2, 7]])
    before = split(x).logits

    d_whole = edit(whole, bpe, REQS, hp, progress=False)
    d_split = edit(split, bpe, REQS, hp, progress=False)
    assert d_split.meta["model_fingerprint"] == d_whole.meta["model_fingerprint"]
    assert set(d_split.weights) == set(d_whole.weights) == {"model.layers.1.mlp.down_proj.weight", name}
    for k in d_whole.weights:
        torch.testing.assert_close(d_split.weights[k], d_whole.weights[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split(x).logits, whole(x).logits, rtol=1e-5, atol=1e-5)  # both edited
    assert not torch.allclose(split(x).logits, before)

    d_split.revert(split)
    assert torch.equal(split(x).logits, before)  # bit-exact, the offloaded layer included
    with d_split.applied(split):
        torch.testing.assert_close(split(x).logits, whole(x).logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(split(x).logits, before)
    assert _digest(saved) == files  # the checkpoint the disk layers come from is untouched


def test_max_memory_limit_offloads_and_edits(bpe, saved, tmp_path, corpus_file):
    """The user-facing path: a memory limit too small for the model makes accelerate offload."""
    hp = MemitHyperParams(layers=[2, 3], v_num_grad_steps=2, v_lr=0.1, stats_corpus=corpus_file,
                          stats_tokens=256, stats_seq_len=32)
    model, _ = memit.load_model(str(saved), device_map="auto", max_memory={"cpu": "150KB"},
                                offload_folder=tmp_path / "offload")
    assert "disk" in set(model.hf_device_map.values())
    x = torch.tensor([[5, 9, 13, 2, 7]])
    before = model(x).logits
    delta = edit(model, bpe, REQS, hp, progress=False)
    assert not torch.allclose(model(x).logits, before)
    delta.revert(model)
    assert torch.equal(model(x).logits, before)
