"""Low-rank deltas and LoRA export: factors saved where they are smaller and replayed to the bit,
and adapters that the real ``peft`` loads to the same logits as the merged edit."""

import json

import peft
import pytest
import torch
from safetensors import safe_open

import memit
from helpers import ALL_TYPES, tiny_model
from memit.cli import main
from memit.delta import Delta, DeltaError, load_delta
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.journal import Journal
from memit.lora import load_lora, save_lora
from memit.lowrank import LowRank
from memit.methods import run

REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", "Paris"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano", "guitar")]
TEXT = ["The Eiffel Tower is located in the city of", "Toko Yasuda plays the piano and"]


def _hp(corpus_file, **kw):
    return MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, prefixes=["So. "], stats_corpus=corpus_file,
                            stats_tokens=1024, stats_seq_len=32, **kw)


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _logits(model, tok):
    ids = tok(TEXT, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**ids).logits


def _stored(path):
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def test_a_few_facts_are_saved_as_factors_and_replay_to_the_bit(bpe, corpus_file, tmp_path):
    model = tiny_model("llama", bpe)
    delta = memit.edit(model, bpe, REQS, _hp(corpus_file), progress=False)
    edited = _state(model)
    for name, d in delta.weights.items():
        f = delta.factors[name]
        assert f.rank == len(REQS) and torch.equal(f.dense().float(), d)
    delta.save(tmp_path / "d.safetensors")
    assert all(k.endswith((":left", ":right")) for k in _stored(tmp_path / "d.safetensors"))
    dense = Delta(delta.weights, delta.meta)  # the same change without its factors: the old form
    dense.save(tmp_path / "dense.safetensors")
    assert _stored(tmp_path / "dense.safetensors") == set(delta.weights)
    assert (tmp_path / "d.safetensors").stat().st_size < (tmp_path / "dense.safetensors").stat().st_size / 2
    for file in ("d.safetensors", "dense.safetensors"):  # both forms load and land on the edited bits
        fresh = tiny_model("llama", bpe)
        loaded = load_delta(tmp_path / file)
        loaded.apply(fresh, check_fingerprint=True)
        assert all(torch.equal(p, edited[n]) for n, p in fresh.named_parameters())
        loaded.revert(fresh)
        assert model_fingerprint(fresh) == delta.meta["model_fingerprint"]


def test_factors_are_not_kept_when_the_dense_matrix_is_smaller(tmp_path):
    f = LowRank(torch.randn(8, 5, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64))
    Delta({"x.weight": f.dense().float()}, {}, {"x.weight": f}).save(tmp_path / "d.safetensors")
    assert _stored(tmp_path / "d.safetensors") == {"x.weight"}  # 5·(8 + 6)·8 bytes > 8·6·4
    assert torch.equal(load_delta(tmp_path / "d.safetensors").weights["x.weight"], f.dense().float())


def test_rome_and_multi_round_edits_are_factors_of_the_summed_rank(bpe, corpus_file):
    model = tiny_model("llama", bpe)
    rome = run("rome", model, bpe, REQS, _hp(corpus_file), progress=False)
    (name, f), = rome.factors.items()
    assert f.rank == len(REQS) and torch.equal(f.dense(), rome.weights[name])
    rome.revert(model)
    many = REQS + [memit.EditRequest("{} speaks", "Danielle", "French", "English")]
    delta = run("memit", model, bpe, many, _hp(corpus_file, rounds=3), progress=False)
    edited = sum(r["n_edited"] for r in delta.meta["rounds"])
    assert len(delta.meta["rounds"]) > 1  # a random model: some facts need another round
    for name, d in delta.weights.items():
        assert delta.factors[name].rank == edited and torch.equal(delta.factors[name].dense(), d)


def test_truncation_is_the_best_approximation_and_says_its_error():
    torch.manual_seed(0)
    f = LowRank(torch.randn(20, 6, dtype=torch.float64), torch.randn(6, 30, dtype=torch.float64))
    cut, err = f.truncated(2)
    u, s, vh = torch.linalg.svd(f.dense())
    best = (u[:, :2] * s[:2]) @ vh[:2]
    torch.testing.assert_close(cut.dense(), best)
    assert err == pytest.approx(float((f.dense() - best).norm() / f.dense().norm()))
    assert f.truncated(6)[1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_peft_loads_the_adapter_to_the_logits_of_the_merged_edit(model_type, bpe, corpus_file, tmp_path):
    model = tiny_model(model_type, bpe)
    delta = memit.edit(model, bpe, REQS, _hp(corpus_file), progress=False)
    merged = _logits(model, bpe)
    info = save_lora(delta, tmp_path / "lora")
    assert info["r"] == len(REQS) and all(x["rel_error"] == 0.0 for x in info["layers"])
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1, 2] and config["fan_in_fan_out"] == (model_type == "gpt2")
    base = tiny_model(model_type, bpe)
    plain = _logits(base, bpe)
    with_lora = peft.PeftModel.from_pretrained(base, str(tmp_path / "lora")).eval()
    got = _logits(with_lora, bpe)
    assert (got - merged).abs().max() < 1e-4
    assert (plain - merged).abs().max() > 1e-3  # the edit did change these logits
    # and back: the adapter read as a Delta merges to the edited weights
    fresh = tiny_model(model_type, bpe)
    load_lora(tmp_path / "lora").apply(fresh)
    edited = dict(model.named_parameters())
    for name in delta.weights:
        torch.testing.assert_close(fresh.get_parameter(name), edited[name], rtol=1e-6, atol=1e-6)  # float32 factors: within an ulp


def test_fine_tuning_deltas_are_factorised_for_export(bpe, corpus_file, tmp_path):
    model = tiny_model("gpt2", bpe)
    delta = run("ft", model, bpe, REQS[:1], _hp(corpus_file), progress=False)
    assert not delta.factors  # a dense change, of full rank
    merged = _logits(model, bpe)
    info = save_lora(delta, tmp_path / "lora")
    base = tiny_model("gpt2", bpe)
    got = _logits(peft.PeftModel.from_pretrained(base, str(tmp_path / "lora")).eval(), bpe)
    assert (got - merged).abs().max() < 1e-4 and info["r"] > len(REQS)


def test_cli_exports_a_delta_and_a_journal(bpe, corpus_file, tmp_path, capsys):
    model = tiny_model("llama", bpe)
    base = model_fingerprint(model)
    j = Journal(tmp_path / "j")
    for r in REQS:  # two steps of one fact each
        j.append(base, memit.edit(model, bpe, [r], _hp(corpus_file), progress=False))
    d = memit.edit(model, bpe, REQS, _hp(corpus_file), apply=False, progress=False)
    d.save(tmp_path / "d.safetensors")
    assert main(["export", "lora", "--delta", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "a")]) == 0
    assert "LoRA rank 2 on layers [1, 2] (exact)" in capsys.readouterr().out
    assert main(["export", "lora", "--delta", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "a")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "lora", "--delta", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "a"),
                 "--rank", "1", "--force"]) == 0
    out = capsys.readouterr().out
    assert "LoRA rank 1" in out and "relative error per layer 1:" in out
    assert main(["export", "lora", "--journal", str(tmp_path / "j"), "--out", str(tmp_path / "sum")]) == 0
    assert json.loads((tmp_path / "sum" / "adapter_config.json").read_text())["r"] == 2  # the steps side by side
    assert main(["export", "lora", "--journal", str(tmp_path / "j"), "--per-step", "--out", str(tmp_path / "each")]) == 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["step-0001", "step-0002"]
    summed = load_lora(tmp_path / "sum")
    fresh = tiny_model("llama", bpe)
    summed.apply(fresh)
    for name, p in model.named_parameters():  # the journal's edits, as one adapter
        torch.testing.assert_close(fresh.get_parameter(name), p, rtol=1e-6, atol=1e-6)  # float32 factors: within an ulp
    assert main(["export", "lora", "--out", str(tmp_path / "x")]) == 2
    assert main(["export", "lora", "--delta", str(tmp_path / "d.safetensors"), "--rank", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--rank must be at least 1" in capsys.readouterr().err


def test_bad_exports_get_one_line_and_write_nothing(bpe, corpus_file, tmp_path, capsys):
    model = tiny_model("llama", bpe)
    d = memit.edit(model, bpe, REQS, _hp(corpus_file), apply=False, progress=False)
    d.save(tmp_path / "d.safetensors")
    Journal(tmp_path / "empty")  # a journal folder with no steps
    cases = [(["--delta", str(tmp_path / "d.safetensors"), "--rank", "999"], "larger than possible"),
             (["--journal", str(tmp_path / "empty")], "no journal steps"),
             (["--delta", str(tmp_path / "missing.safetensors")], "missing.safetensors")]
    for extra, needle in cases:
        assert main(["export", "lora", *extra, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    save_lora(d, tmp_path / "lora")
    other = tiny_model("gpt2", bpe)
    with pytest.raises(DeltaError, match="no parameter"):  # an adapter for another model
        load_lora(tmp_path / "lora").apply(other)
