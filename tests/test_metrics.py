"""The paper's metrics on small hand-computed cases, and the scorer against full-logit arithmetic."""

import math
import time

import pytest
import torch

from helpers import tiny_model
from memit.eval.fluency import ngram_entropy
from memit.eval.metrics import bootstrap_ci, counterfact_summary, target_scores, zsre_case_scores, zsre_summary
from memit.requests import Case, EditRequest
from memit.tokens import encode


def test_counterfact_rates_from_known_nlls():
    per_case = [
        {"rewrite": [{"new": 1.0, "true": 2.0}],
         "paraphrase": [{"new": 3.0, "true": 2.0}, {"new": 1.0, "true": 2.0}],
         "neighborhood": [{"new": 1.0, "true": 2.0}]},
        {"rewrite": [{"new": 2.0, "true": 1.0}],
         "paraphrase": [{"new": 0.5, "true": 4.0}, {"new": 0.5, "true": 4.0}],
         "neighborhood": [{"new": 3.0, "true": 1.0}]},
    ]
    s = counterfact_summary(per_case)
    assert s["ES"] == pytest.approx(50.0) and s["PS"] == pytest.approx(75.0) and s["NS"] == pytest.approx(50.0)
    e = math.exp
    em = ((e(-1) - e(-2)) + (e(-2) - e(-1))) / 2 * 100
    pm = (((e(-3) - e(-2)) + (e(-1) - e(-2))) / 2 + (e(-0.5) - e(-4))) / 2 * 100
    nm = ((e(-2) - e(-1)) + (e(-1) - e(-3))) / 2 * 100
    assert s["EM"] == pytest.approx(em) and s["PM"] == pytest.approx(pm) and s["NM"] == pytest.approx(nm)
    assert s["Score"] == pytest.approx(3 / (1 / 50 + 1 / 75 + 1 / 50))


def test_ngram_entropy_of_a_known_text():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # bigrams ab, ba, ab
    h3 = 1.0  # trigrams aba, bab
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert ngram_entropy("x x x x x x") == 0.0  # one repeated n-gram: no entropy


def test_bootstrap_interval():
    assert bootstrap_ci([0.7] * 50) == pytest.approx((0.7, 0.7))
    lo, hi = bootstrap_ci([0.0, 1.0] * 200, n_boot=2000)
    assert lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01) and hi == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)


@pytest.mark.parametrize("batch_tokens", [4096, 24])  # one batch; several, each of a few prompts
def test_scores_match_full_logits(bpe, batch_tokens):
    """Each pair scored alone, unpadded, is the reference; batches group prompts by length, so the
    answers must come back in the order asked."""
    model = tiny_model("gpt2", bpe)
    pairs = [("The Eiffel Tower is in", "Paris"), ("Rome is the capital of", "Italy and Germany"),
             ("Toko Yasuda plays", "the guitar"), ("In the morning, the famous Eiffel Tower in Paris is", "closed"),
             ("A", "b")]
    got = target_scores(model, bpe, pairs, batch_tokens)
    for (prompt, target), (nll, hits) in zip(pairs, got, strict=True):
        e = encode(bpe, prompt, target)
        lp = torch.log_softmax(model(input_ids=torch.tensor([e.ids])).logits[0].float(), -1)
        tgt = e.ids[e.n_prompt:]
        want = -sum(lp[p, t].item() for p, t in zip(e.target_positions, tgt)) / len(tgt)
        assert nll == pytest.approx(want, rel=1e-5)
        assert hits == [lp[p].argmax().item() == t for p, t in zip(e.target_positions, tgt)]


def test_zsre_accuracy_on_a_known_sequence(bpe):
    model = tiny_model("llama", bpe)
    # accuracy = share of target tokens that are the argmax after the teacher-forced prefix
    case = Case(EditRequest("Where is {}?", "the tower", "Paris and Rome"), ("Where is the tower located?",),
                loc_prompt="nq question: who plays the guitar", loc_answer="Toko")
    per = zsre_case_scores(model, bpe, [case])
    e = encode(bpe, "Where is the tower?", "Paris and Rome")
    lp = model(input_ids=torch.tensor([e.ids])).logits[0]
    expected = sum(lp[p].argmax().item() == t for p, t in zip(e.target_positions, e.ids[e.n_prompt:]))
    assert per[0]["efficacy"] == [expected / (len(e.ids) - e.n_prompt)]
    assert set(per[0]) == {"case_id", "efficacy", "paraphrase", "specificity"}
    loc_only = zsre_case_scores(model, bpe, [case], kinds=("specificity",))  # the probe after other edits
    assert set(loc_only[0]) == {"case_id", "specificity"} and loc_only[0]["specificity"] == per[0]["specificity"]
    s = zsre_summary([{"efficacy": [1.0], "paraphrase": [0.5], "specificity": [0.0]},
                      {"efficacy": [0.5], "paraphrase": [0.5], "specificity": [1.0]}])
    assert (s["efficacy"], s["paraphrase"], s["specificity"]) == (75.0, 50.0, 50.0)


def test_retention_counts_the_known_facts_still_known():
    from memit.eval.metrics import retention_summary

    before = [True, True, True, False, True]
    after = [True, False, True, True, True]  # one known fact lost; an unknown one gained does not count
    r = retention_summary(before, after)
    assert r["facts"] == 5 and r["known_unedited"] == 4
    assert r["accuracy_unedited"] == 80 and r["accuracy_edited"] == 80
    assert r["kept"] == 75
    assert r["kept_ci95"][0] <= 75 <= r["kept_ci95"][1]


def test_eval_point_scores_retention_without_the_edited_subjects(bpe, corpus_file, tmp_path):
    import json

    import memit
    from helpers import tiny_model
    from memit.eval.perplexity import perplexity
    from memit.eval.run import run_point
    from memit.hparams import MemitHyperParams
    from memit.requests import Case

    model = tiny_model("llama", bpe)
    req = memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", target_true="Paris")
    cases = [Case(req, paraphrase_prompts=("The Eiffel Tower stands in",), neighborhood_prompts=("The Louvre is in",))]
    facts = [{"prompt": "The Eiffel Tower is in", "attribute": "Paris", "subject": "The Eiffel Tower"},
             {"prompt": "Danielle speaks", "attribute": "French", "subject": "Danielle"},
             {"prompt": "Toko Yasuda plays the", "attribute": "piano", "subject": "Toko Yasuda"}]
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=2, prefixes=["I said. "], stats_corpus=corpus_file,
                          stats_tokens=1024, stats_seq_len=32)
    r = run_point(model, bpe, cases, "counterfact", hp, tmp_path / "p.json", fluency=False, progress=False,
                  known_facts=facts, ppl_corpus=corpus_file, ppl_tokens=256)
    assert r["retention"]["facts"] == 2  # the fact about the edited subject is not counted
    assert r["unedited"]["perplexity"] == perplexity(model, bpe, corpus_file, 256)  # the model was restored
    assert r["edited"]["perplexity"] != r["unedited"]["perplexity"]
    assert json.loads((tmp_path / "p.json").read_text())["retention"]["facts"] == 2


def test_eval_points_share_the_baseline_and_the_target_vectors(bpe, corpus_file, tmp_path, monkeypatch):
    """A λ change reuses the unedited scores and the target vectors from disk and gives the same
    figures as a cold run; a change the targets depend on (v_lr) or another model recomputes them."""
    import dataclasses

    import memit
    import memit.eval.run as run_mod
    import memit.targets as targets_mod
    from helpers import tiny_model
    from memit.eval.run import run_point
    from memit.hparams import MemitHyperParams
    from memit.requests import Case

    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "cache"))
    model = tiny_model("llama", bpe)
    req = memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", target_true="Paris")
    cases = [Case(req, paraphrase_prompts=("The Eiffel Tower stands in",), neighborhood_prompts=("The Louvre is in",))]
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=2, prefixes=["I said. "], stats_corpus=corpus_file,
                          stats_tokens=1024, stats_seq_len=32, lam=10.0)
    scored, optimised = [], []
    real_score, real_opt = run_mod.score, targets_mod._optimise
    monkeypatch.setattr(run_mod, "score", lambda *a, **k: (scored.append(1), time.sleep(0.2), real_score(*a, **k))[2])
    monkeypatch.setattr(targets_mod, "_optimise", lambda *a, **k: (optimised.append(1), real_opt(*a, **k))[1])

    def point(hp, name, m=model):
        return run_point(m, bpe, cases, "counterfact", hp, tmp_path / name, fluency=False, progress=False)

    a = point(hp, "a.json")
    assert (len(scored), len(optimised)) == (2, 1)  # unedited + edited; one chunk of targets
    b = point(dataclasses.replace(hp, lam=1e4), "b.json")
    assert (len(scored), len(optimised)) == (3, 1)  # only the edited model was scored; no optimisation
    assert b["unedited"] == a["unedited"] and b["lambda"] == 1e4
    assert b["eval_wall_s"] >= 0.2  # the scoring time counts the edited model's, not only the cached baseline
    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "cold"))
    cold = point(dataclasses.replace(hp, lam=1e4), "c.json")
    assert cold["edited"] == b["edited"] and cold["unedited"] == b["unedited"]
    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "cache"))
    scored.clear(), optimised.clear()
    point(dataclasses.replace(hp, v_lr=0.1), "d.json")
    assert (len(scored), len(optimised)) == (1, 1)  # new targets, same baseline
    point(hp, "e.json", tiny_model("llama", bpe, seed=1))
    assert (len(scored), len(optimised)) == (3, 2)  # other weights: nothing reused


def test_perplexity_is_exp_mean_next_token_nll(bpe, corpus_file):
    from memit.corpus import token_windows
    from memit.eval.perplexity import perplexity

    model = tiny_model("gpt2", bpe)
    windows = token_windows(bpe, corpus_file, 16, 64)
    lp = torch.log_softmax(model(input_ids=windows).logits, -1)
    nll = -lp[:, :-1].gather(-1, windows[:, 1:, None]).mean()
    got = perplexity(model, bpe, corpus_file, max_tokens=64, seq_len=16, batch_rows=3)
    assert got == pytest.approx(math.exp(float(nll)), rel=1e-5)


def test_strata_split_by_what_the_unedited_model_preferred():
    from memit.eval.metrics import counterfact_strata

    def case(new, true, para=(1.0, 2.0)):
        return {"rewrite": [{"new": new, "true": true}], "paraphrase": [{"new": para[0], "true": para[1]}],
                "neighborhood": []}

    pre = [case(3.0, 1.0), case(3.0, 1.0), case(1.0, 3.0)]  # two knew the truth (hard), one did not (easy)
    post = [case(0.5, 2.0), case(2.5, 2.0, (3.0, 1.0)), case(0.1, 4.0)]  # the second hard fact failed
    s = counterfact_strata(pre, post)
    assert s["failed_edits"] == 1
    assert s["hard"]["n"] == 2 and s["hard"]["ES"] == 50 and s["hard"]["PS"] == 50
    assert s["easy"]["n"] == 1 and s["easy"]["ES"] == 100


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma2"])
def test_sampler_with_top1_is_greedy_decoding_of_each_prompt_alone(bpe, model_type):
    from memit.eval.fluency import sample

    model = tiny_model(model_type, bpe)
    prompts = ["The Eiffel Tower is in", "Danielle speaks", "Paris"]  # different lengths: left padding
    got = sample(model, bpe, prompts, max_new_tokens=6, top_k=1, batch_size=3)
    for prompt, text in zip(prompts, got):
        ids = bpe(prompt, return_tensors="pt")["input_ids"]
        ref = model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=bpe.pad_token_id)[0, ids.shape[1]:]
        ref = ref.tolist()
        if bpe.eos_token_id in ref:
            ref = ref[: ref.index(bpe.eos_token_id)]
        assert text == bpe.decode(ref, skip_special_tokens=True)


def test_target_scores_shared_rows_equal_one_pass_per_pair(bpe):
    """One-token targets read from a row of the same prompt give what their own pass gives."""
    from helpers import tiny_model
    from memit.eval.metrics import target_scores
    from memit.tokens import encode

    model = tiny_model("llama", bpe)
    prompts = ["The Eiffel Tower is located in the city of", "Toko Yasuda plays the"]
    targets = ["the", "of", "French and English", "is", "the guitar"]
    pairs = [(p, t) for p in prompts for t in targets]
    got = target_scores(model, bpe, pairs, batch_tokens=64)
    assert sum(len(encode(bpe, p, t).ids) - encode(bpe, p, t).n_prompt == 1 for p, t in pairs) >= 4  # rows shared
    for (p, t), (nll, hits) in zip(pairs, got):
        e = encode(bpe, p, t)
        lp = torch.log_softmax(model(input_ids=torch.tensor([e.ids])).logits[0].float(), -1)
        want = [-float(lp[q, tok]) for q, tok in zip(e.target_positions, e.ids[e.n_prompt:])]
        assert nll == pytest.approx(sum(want) / len(want), abs=1e-5)
        assert hits == [int(lp[q].argmax()) == tok for q, tok in zip(e.target_positions, e.ids[e.n_prompt:])]


def test_pair_probabilities_are_exp_of_mean_nll_and_none_without_a_true_target(bpe):
    from memit.eval.metrics import pair_probabilities, target_nll

    model = tiny_model("llama", bpe)
    got = pair_probabilities(model, bpe, [("The capital is", "Rome", "Paris"), ("He plays the", "piano", None)])
    nll = target_nll(model, bpe, [("The capital is", "Rome"), ("The capital is", "Paris"), ("He plays the", "piano")])
    assert got[0] == pytest.approx((math.exp(-nll[0]), math.exp(-nll[1])))
    assert got[1][0] == pytest.approx(math.exp(-nll[2])) and got[1][1] is None
