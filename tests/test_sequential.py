"""Sequential editing measured batch by batch: resumable through its journal, model restored after."""

import json

import pytest
import torch

import memit
from helpers import tiny_model
from memit.eval.sequential import run_sequence
from memit.hparams import MemitHyperParams
from memit.journal import JournalError
from memit.requests import Case

CASES = [Case(memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", target_true="Paris"),
              paraphrase_prompts=("The Eiffel Tower stands in",), neighborhood_prompts=("The Louvre is in",)),
         Case(memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano", target_true="guitar"),
              paraphrase_prompts=("Toko Yasuda is a player of the",), neighborhood_prompts=("Danielle plays the",)),
         Case(memit.EditRequest("{} speaks", "Danielle", "French", target_true="English"),
              paraphrase_prompts=("The language of Danielle is",), neighborhood_prompts=("Toko Yasuda speaks",))]
KNOWN = [{"subject": "Danielle", "prompt": "Danielle speaks", "attribute": "French"},  # edited: left out
         {"subject": "Paris", "prompt": "Paris is the capital of", "attribute": "France"},
         {"subject": "The Louvre", "prompt": "The Louvre is a", "attribute": "museum"}]


@pytest.mark.parametrize("method", ["memit-seq", "alphaedit"])
def test_sequence_resumes_and_restores(bpe, corpus_file, tmp_path, monkeypatch, method):
    import memit.eval.sequential as seq_mod

    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, v_lr=0.2, prefixes=["I said. "],
                          stats_corpus=corpus_file, stats_tokens=1024, stats_seq_len=32, null_threshold=1e-3)
    model = tiny_model("llama", bpe)
    before = {n: p.clone() for n, p in model.named_parameters()}
    whole = run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "a" / "r.json",
                         ppl_corpus=corpus_file, ppl_tokens=256, progress=False, known_facts=KNOWN)
    assert [p["edits"] for p in whole["points"]] == [0, 1, 2, 3]
    assert all(p["retention"]["facts"] == 2 for p in whole["points"])  # the same facts at every point
    assert whole["points"][0]["retention"]["accuracy_edited"] == whole["points"][0]["retention"]["accuracy_unedited"]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # restored exactly

    real, calls = seq_mod.run, []

    def dies_on_third_batch(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(seq_mod, "run", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "b" / "r.json",
                     ppl_corpus=corpus_file, ppl_tokens=256, progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert len(json.loads((tmp_path / "b" / "r.json").read_text())["points"]) == 3  # 0, 1, 2 edits scored
    monkeypatch.setattr(seq_mod, "run", real)
    with pytest.raises(JournalError, match="without known facts"):  # started without them: not mixed in later
        run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "b" / "r.json", known_facts=KNOWN,
                     progress=False)
    resumed = run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "b" / "r.json",
                           ppl_corpus=corpus_file, ppl_tokens=256, progress=False)
    for a, b in zip(whole["points"], resumed["points"]):
        assert a["ES"] == b["ES"] and a["NS"] == b["NS"] and a["perplexity"] == pytest.approx(b["perplexity"])
    assert len(resumed["points"]) == 4
    first = run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "c" / "r.json", max_batches=2,
                         progress=False)
    assert len(first["points"]) == 3  # unedited, then two batches: the call stopped there
    rest = run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "c" / "r.json", progress=False)
    assert [p["ES"] for p in rest["points"]] == [p["ES"] for p in whole["points"]]
