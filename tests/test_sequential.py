"""Sequential editing measured batch by batch: resumable through its journal, model restored after."""

import json
import shutil

import pytest
import torch

import memit
from helpers import tiny_model
from memit.eval.sequential import journaled_runs, run_sequence
from memit.hparams import AlphaEditConfig, MemitHyperParams
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


# encore: anchored to the weights before the first batch, which a resumed run must find again
@pytest.mark.parametrize("method", ["memit-seq", "alphaedit", "encore"])
def test_sequence_resumes_and_restores(bpe, corpus_file, tmp_path, monkeypatch, method):
    import memit.eval.sequential as seq_mod

    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, v_lr=0.2, prefixes=["I said. "],
                          stats_corpus=corpus_file, stats_tokens=1024, stats_seq_len=32,
                          alphaedit=AlphaEditConfig(null_threshold=1e-3))
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
    (journal, run, scored), = journaled_runs([tmp_path / "b"])  # what the benchmarks measure afterwards
    assert scored == 2 and len(journal.steps) >= scored and run["method"] == method
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
    sparse = run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "d" / "r.json", score_every=2,
                          max_batches=1, progress=False)
    assert [p["edits"] for p in sparse["points"]] == [0]  # batch 1 edited, not scored: only every 2nd is
    sparse = run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "d" / "r.json", score_every=2,
                          progress=False)
    assert [p["edits"] for p in sparse["points"]] == [0, 2, 3]  # the 2nd batch and the last
    assert sorted(sparse["batch_edit_s"]) == ["0", "1", "2"]
    assert [p["ES"] for p in sparse["points"]] == [whole["points"][i]["ES"] for i in (0, 2, 3)]
    shutil.rmtree(tmp_path / "c" / "r.journal")  # the machine that held it is gone: the scores stay, the edits do not
    with pytest.raises(JournalError, match="journal was lost"):
        run_sequence(model, bpe, CASES, "counterfact", method, hp, 1, tmp_path / "c" / "r.json", progress=False)


def test_base_statistics_keep_alphaedit_in_the_unedited_null_space(bpe, corpus_file, tmp_path):
    """With sequential_stats "base" every batch projects onto the null space of the unedited model's
    C₀ (as AlphaEdit's code does), so each step's ΔW vanishes on that C₀'s range; with "current" the
    later steps use the edited model's C₀, whose null space has moved above the first edited layer."""
    from memit.journal import Journal
    from memit.methods.sequential import null_projector
    from memit.stats import stats_for

    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, v_lr=0.2, prefixes=["I said. "], stats_corpus=corpus_file,
                          stats_tokens=1024, stats_seq_len=32, alphaedit=AlphaEditConfig(null_energy=0.05),
                          sequential_stats="base")
    model = tiny_model("llama", bpe)
    c0 = stats_for(model, bpe, hp, progress=False)
    leak = {}
    for mode in ("base", "current"):
        hp.sequential_stats = mode
        out = tmp_path / mode / "r.json"
        run_sequence(model, bpe, CASES, "counterfact", "alphaedit", hp, 1, out, progress=False)
        journal = Journal(out.with_name("r.journal"))
        steps = [memit.delta.load_delta(journal.dir / s["delta"]) for s in journal.steps]
        name = "model.layers.2.mlp.down_proj.weight"
        p = null_projector(c0[2], hp.alphaedit.null_threshold, hp.alphaedit.null_energy).float()
        leak[mode] = max(float((d.weights[name] @ (torch.eye(p.shape[0]) - p)).norm() / d.weights[name].norm())
                         for d in steps)
        assert json.loads(out.read_text())["hparams"]["sequential_stats"] == mode
    assert leak["base"] < 1e-6 < leak["current"]  # 8e-8 (float rounding) against 4e-5 here
    with pytest.raises(JournalError, match="sequential_stats"):  # a sequence keeps the statistics it started with
        run_sequence(model, bpe, CASES, "counterfact", "alphaedit", hp, 1, tmp_path / "base" / "r.json", progress=False)


def test_journaled_runs_leave_out_a_run_with_nothing_scored(tmp_path):
    for name, points in (("started", [{"edits": 0}]), ("going", [{"edits": 0}, {"edits": 1}])):
        (tmp_path / f"{name}.journal").mkdir()
        (tmp_path / f"{name}.json").write_text(json.dumps({"method": "memit", "points": points}))
    assert [(run["points"][-1]["edits"], scored) for _, run, scored in journaled_runs([tmp_path])] == [(1, 1)]
