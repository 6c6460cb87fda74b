"""Verification of every fact after an edit, and the re-edit rounds: which requests each round
takes, and that the rounds' one Delta applies, replays and reverts bit-exactly."""

import json

import pytest
import torch

import memit
from helpers import ALL_TYPES, make_tokenizer, tiny_model
from memit.cli import main
from memit.delta import load_delta
from memit.eval.metrics import target_scores
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.journal import Journal
from memit.methods import run
from memit.verify import check, scores_behind

PREFIXES = ["Because of it. "]
REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", "Paris"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano", "guitar"),
        memit.EditRequest("{} speaks", "Danielle", "French", "English"),
        memit.EditRequest("{} was born in", "Danielle", "Warsaw", "Paris")]


def _hp(corpus_file, **kw):
    return MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, v_lr=0.2, prefixes=PREFIXES, stats_corpus=corpus_file,
                            stats_tokens=1024, stats_seq_len=32, **kw)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model_type", ALL_TYPES)
@pytest.mark.parametrize("kind,bos", [("bpe", False), ("sp", True)])
def test_rows_behind_one_prefix_score_as_they_do_whole(model_type, kind, bos):
    """The prefix's tokens run once, as a cache, and each row runs the rest: the same NLLs and
    argmax hits as whole rows, with one-token targets read from a shared row and multi-token ones not."""
    tok = make_tokenizer(kind, bos)
    model = tiny_model(model_type, tok)
    prefix = "I said that the day was long. "
    pairs = [(prefix + r.text, t) for r in REQS for t in (r.target_new, r.target_true)]
    pairs += [(prefix + "Danielle speaks", "French and English")]
    fast = scores_behind(model, tok, pairs, batch_tokens=48)  # several batches
    whole = target_scores(model, tok, pairs)
    assert [h for _, h in fast] == [h for _, h in whole]
    torch.testing.assert_close(torch.tensor([x for x, _ in fast]), torch.tensor([x for x, _ in whole]),
                               rtol=1e-4, atol=1e-5)


def test_check_compares_new_with_true_on_every_prompt(bpe):
    model = tiny_model("llama", bpe)
    got = check(model, bpe, REQS, PREFIXES)
    for r, g in zip(REQS, got):
        rows = [p + r.text for p in ["", *PREFIXES]]
        new = [s[0] for s in target_scores(model, bpe, [(t, r.target_new) for t in rows])]
        true = [s[0] for s in target_scores(model, bpe, [(t, r.target_true) for t in rows])]
        held = [a < b for a, b in zip(new, true)]
        assert g == {"holds": all(held), "rewrite": held[0], "held_prompts": sum(held), "prompts": 2}


def test_check_without_target_true_asks_for_the_greedy_continuation(bpe):
    model = tiny_model("llama", bpe)
    prompt = "The Eiffel Tower is located in the city of"
    ids = bpe(prompt)["input_ids"]
    nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    word = bpe.decode([nxt]).strip()
    if not word or bpe(prompt + " " + word)["input_ids"][len(ids):] != [nxt]:  # the greedy token must be a word
        word = None
    other = next(w for w in ("Rome", "piano", "French") if w != word)
    reqs = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", other)]
    assert check(model, bpe, reqs, [])[0]["holds"] is False
    if word:
        reqs = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", word)]
        assert check(model, bpe, reqs, [])[0]["holds"] is True


def test_rounds_reedit_only_what_failed_and_replay_bit_exactly(bpe, corpus_file, tmp_path):
    model = tiny_model("llama", bpe)
    base = _weights(model)
    base_fp = model_fingerprint(model)
    hp = _hp(corpus_file, rounds=3)
    once = run("memit", tiny_model("llama", bpe), bpe, REQS, _hp(corpus_file), progress=False)
    first_failed = [i for i, r in enumerate(once.meta["requests"]) if not r["holds"]]
    assert first_failed  # a random model: some facts do not take in one round
    delta = run("memit", model, bpe, REQS, hp, progress=False)
    rounds = delta.meta["rounds"]
    assert rounds[0]["n_edited"] == 4 and len(rounds) > 1 and rounds[1]["n_edited"] == len(first_failed)
    assert delta.meta["verification"]["rounds_used"] == len(rounds)
    assert all(d.dtype == torch.float64 for d in delta.weights.values())
    total = [x["delta_rel_norm"] for x in delta.meta["layers_info"]]  # the whole edit's ΔW, per layer
    assert total == [float(w.norm() / base[n].double().norm()) for n, w in delta.weights.items()]
    assert [x["delta_rel_norm"] for x in rounds[0]["layers_info"]] != total  # round 1's own, kept as it was
    now = check(model, bpe, REQS, PREFIXES)
    for r, s in zip(delta.meta["requests"], now):
        assert r["holds"] == s["holds"]
        assert (r["reason"] is None) == s["holds"]
        assert r["round"] is None or (r["holds"] and 1 <= r["round"] <= len(rounds))
    reasons = {r["subject"]: r["reason"] for r in delta.meta["requests"]}
    if reasons["Danielle"]:
        assert "shares its subject with request" in reasons["Danielle"]
    edited = _weights(model)
    # saved and applied to a fresh model: the same bits as the edit itself
    delta.save(tmp_path / "d.safetensors")
    fresh = tiny_model("llama", bpe)
    load_delta(tmp_path / "d.safetensors").apply(fresh)
    assert all(torch.equal(p, edited[n]) for n, p in fresh.named_parameters())
    # a journal step, replayed: the same bits; reverting the in-memory delta: the base bits
    j = Journal(tmp_path / "j")
    j.append(base_fp, delta)
    assert j.steps[0]["rounds_used"] == len(rounds) and j.steps[0]["held"] == delta.meta["verification"]["held"]
    fresh = tiny_model("llama", bpe)
    Journal(tmp_path / "j").replay(fresh)
    assert all(torch.equal(p, edited[n]) for n, p in fresh.named_parameters())
    delta.revert(model)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())


def test_a_middle_round_checks_what_it_edited_and_the_report_checks_everything(bpe, corpus_file, monkeypatch):
    import memit.methods.rounds as rounds_module

    sizes = []

    def counted(model, tokenizer, requests, *a, **kw):
        sizes.append(len(requests))
        return check(model, tokenizer, requests, *a, **kw)

    monkeypatch.setattr(rounds_module, "check", counted)
    model = tiny_model("llama", bpe)
    delta = run("memit", model, bpe, REQS, _hp(corpus_file, rounds=3, middle_check="edited"), progress=False)
    rounds = delta.meta["rounds"]
    assert len(rounds) >= 2 and rounds[1]["checked"] == rounds[1]["n_edited"] < len(REQS)
    # round 1 and the report are checked on every request; round 2 (a middle one) on its own
    assert sizes == [len(REQS), rounds[1]["n_edited"], len(REQS)] and rounds[-1]["checked"] == len(REQS)
    now = check(model, bpe, REQS, PREFIXES)
    assert [r["holds"] for r in delta.meta["requests"]] == [s["holds"] for s in now]
    assert delta.meta["verification"]["held"] == sum(s["holds"] for s in now) == rounds[-1]["held_after"]
    with pytest.raises(ValueError, match="middle_check"):
        run("memit", model, bpe, REQS, _hp(corpus_file, rounds=3, middle_check="some"), progress=False)


def test_one_round_is_the_plain_edit(bpe, corpus_file):
    """Verification only reads the model: with rounds = 1 the edit is what it was before."""
    a, b = tiny_model("llama", bpe), tiny_model("llama", bpe)
    d1 = run("memit", a, bpe, REQS, _hp(corpus_file), progress=False)
    d0 = memit.edit(b, bpe, REQS, _hp(corpus_file), progress=False)
    assert all(torch.equal(d1.weights[n], d0.weights[n]) for n in d0.weights)
    assert d1.meta["verification"]["rounds_used"] == 1 and "holds" in d1.meta["requests"][0]


def test_cli_ends_with_the_count_and_writes_the_report(bpe, corpus_file, tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_model("llama", bpe).save_pretrained(model_dir)
    bpe.save_pretrained(model_dir)
    hp = _hp(corpus_file).to_dict()
    (tmp_path / "hp.json").write_text(json.dumps(hp))
    (tmp_path / "reqs.json").write_text(json.dumps([
        {"prompt": r.prompt, "subject": r.subject, "target_new": r.target_new, "target_true": r.target_true}
        for r in REQS]))
    args = ["edit", "--model", str(model_dir), "--hparams", str(tmp_path / "hp.json"), "--requests",
            str(tmp_path / "reqs.json"), "--quiet", "--rounds", "2", "--stop", "margin"]
    assert main([*args, "--delta", str(tmp_path / "e.safetensors")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads((tmp_path / "e.report.json").read_text())
    held = sum(r["holds"] for r in report["requests"])
    assert report["held"] == held and report["n_requests"] == 4
    assert last == ("4 of 4 facts hold (see e.report.json)" if held == 4 else
                    f"{held} of 4 facts hold; {4 - held} did not (see e.report.json)")
    assert load_delta(tmp_path / "e.safetensors").meta["verification"] == {
        k: report[k] for k in ("held", "failed", "rounds_used")}
    assert main([*args, "--delta", str(tmp_path / "e.safetensors")]) == 2  # the delta and its report are kept


def test_failure_reason_names_a_method_without_target_vectors_and_a_missing_margin(bpe):
    from memit.verify import failure_reason

    req = [memit.EditRequest("{} speaks", "Danielle", "French")]
    assert failure_reason(bpe, req, 0, {}, 1.0) == "the update did not make it hold"  # FT: no target vectors
    assert failure_reason(bpe, req, 0, {"stop": "cap", "margin": None}, 1.0) == \
        "its target vector stopped by cap, short of 1"
    assert failure_reason(bpe, req, 0, {"stop": "plateau", "margin": 0.25}, 1.0) == \
        "its target vector stopped by plateau at margin 0.25, short of 1"
