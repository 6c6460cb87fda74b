"""Integration on the real SmolLM2-135M: five facts it knows, edited in one batch."""

import math
import os

import pytest
import torch

import memit
from conftest import USER_CACHE, real_model
from memit.demo import demo_cases
from memit.eval.metrics import target_nll
from memit.hparams import preset_for


@pytest.fixture(scope="module")
def smollm2():
    return real_model("smollm2-135m")


def _probs(model, tok, pairs):
    return [math.exp(-x) for x in target_nll(model, tok, pairs)]


@pytest.mark.slow
def test_five_known_facts_in_one_batch(smollm2):
    model, tok = smollm2
    cases = demo_cases()
    reqs = [c.request for c in cases]
    hp = preset_for("smollm2-135m")
    hp.stats_tokens = 20_000  # small budget: keeps `make test` short; quality is checked, not tuned, here

    def probe():
        rw = [(r.text, t) for r in reqs for t in (r.target_new, r.target_true)]
        para = [(c.paraphrase_prompts[0], t) for c, r in zip(cases, reqs) for t in (r.target_new, r.target_true)]
        neigh = [(c.neighborhood_prompts[0], r.target_true) for c, r in zip(cases, reqs)]
        return _probs(model, tok, rw), _probs(model, tok, para), _probs(model, tok, neigh)

    ids = tok([r.text for r in reqs], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits0 = model(**ids).logits.clone()
    rw0, para0, neigh0 = probe()
    assert all(rw0[2 * i + 1] > rw0[2 * i] for i in range(len(reqs)))  # the model knows the true facts

    delta = memit.edit(model, tok, reqs, hp, progress=False)
    rw1, para1, neigh1 = probe()
    for i, r in enumerate(reqs):
        assert rw1[2 * i] > rw1[2 * i + 1], f"{r.subject}: P(new) {rw1[2 * i]:.3f} ≤ P(true) {rw1[2 * i + 1]:.3f}"
    margin0 = sum(para0[2 * i] - para0[2 * i + 1] for i in range(len(reqs))) / len(reqs)
    margin1 = sum(para1[2 * i] - para1[2 * i + 1] for i in range(len(reqs))) / len(reqs)
    assert margin1 > margin0  # paraphrases move toward the new target on average
    change = sum(abs(a - b) for a, b in zip(neigh0, neigh1)) / len(reqs)
    assert change < 0.05, f"neighbour P(true) moved by {change:.3f} on average"

    delta.revert(model)
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, logits0)  # revert restores the logits exactly


@pytest.mark.slow
def test_demo_edit_leaves_as_a_peft_adapter_and_as_a_gguf(smollm2, tmp_path, monkeypatch):
    import peft

    from memit.gguf_out import write_gguf
    from memit.lora import save_lora
    from memit.models.loading import smollm2_gguf

    model, tok = smollm2
    reqs = [c.request for c in demo_cases()]
    hp = preset_for("smollm2-135m")
    hp.stats_tokens = 20_000
    ids = tok([r.text for r in reqs], return_tensors="pt", padding=True)
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    delta = memit.edit(model, tok, reqs, hp, progress=False)
    try:
        with torch.no_grad():
            merged = model(**ids).logits
        edited = {n: model.get_parameter(n).detach().clone() for n in delta.weights}
        save_lora(delta, tmp_path / "lora", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
        monkeypatch.setenv("MEMIT_CACHE", USER_CACHE)
        base, _ = memit.load_model("smollm2-135m")
        with torch.no_grad():
            got = peft.PeftModel.from_pretrained(base, str(tmp_path / "lora")).eval()(**ids).logits
        assert (got - merged).abs().max() < 1e-4  # the adapter is the edit

        report = write_gguf(smollm2_gguf(), tmp_path / "edited.gguf", edited)
        assert {t["written"] for t in report} == {"Q4_1"} and len(report) == len(delta.weights)
        back, _ = memit.load_model(str(tmp_path / "edited.gguf"))
        for name, p in back.named_parameters():
            if name in edited:  # requantised: the file's change carries the edit (its projection on ΔW)
                d = edited[name] - originals[name]
                carried = float(((p - originals[name]) * d).sum() / d.square().sum())
                # Q4_1 rounding keeps only part of a small edit (less with the ridge default's smaller
                # ΔW); a tensor that rounding had erased would carry about 0 (the others are bit-equal)
                assert 0.03 < carried < 1.5, (name, carried)
            else:
                assert torch.equal(p, originals[name]), name
    finally:
        delta.revert(model)


@pytest.mark.slow
def test_cli_writes_a_gguf_and_checks_the_facts_in_it(smollm2, tmp_path, monkeypatch, capsys):
    import json
    from importlib import resources

    from memit.cli import main

    monkeypatch.setenv("MEMIT_CACHE", USER_CACHE)  # the bundled model and its GGUF live there
    (tmp_path / "hp.json").write_text(json.dumps({"preset": "smollm2-135m", "stats_tokens": 20_000}))
    with resources.as_file(resources.files("memit") / "data" / "demo_facts.json") as facts:
        args = ["edit", "--model", "smollm2-135m", "--hparams", str(tmp_path / "hp.json"), "--requests", str(facts),
                "--quiet", "--out", str(tmp_path / "edited.gguf")]
        assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "edited.report.json").read_text())
    assert "Q4_1 → Q4_1" in out and f"{report['gguf']['held']} of 5 facts hold in the GGUF" in out
    assert len(report["gguf"]["tensors"]) == 6 and (tmp_path / "edited.gguf").stat().st_size > 50e6
    assert main(args) == 2  # never replaced without --force


@pytest.mark.slow
def test_the_playground_edits_smollm2_in_a_real_browser(smollm2, tmp_path):
    """The browser run of test_serve.py on the real model. With MEMIT_SCREENSHOT=FILE it also
    saves the page after the edit there (docs/playground.png is made so)."""
    from selenium.webdriver.common.by import By

    from browser import chromium, download, edit_and_wait, enter_facts, probe, serving, wait_for
    from memit.serve.session import Session

    model, tok = smollm2
    hp = preset_for("smollm2-135m")
    hp.stats_tokens = 20_000
    session = Session(model, tok, hp, name="smollm2-135m", workdir=tmp_path / "session", progress_bars=False)
    unedited = {n: p.detach().clone() for n, p in model.named_parameters()}
    facts = [{"subject": c.request.subject, "prompt": c.request.text, "target_new": c.request.target_new,
              "target_true": c.request.target_true} for c in demo_cases()[:2]]
    try:
        with serving(session) as url, chromium(tmp_path) as driver:
            enter_facts(driver, url, facts)
            assert edit_and_wait(driver) == "2 of 2 facts hold."
            before, after = probe(driver, "The Eiffel Tower is located in the city of")
            assert "⟶ Paris" in before and "⟶ Rome" in after
            if os.environ.get("MEMIT_SCREENSHOT"):
                driver.save_screenshot(os.environ["MEMIT_SCREENSHOT"])
            delta = memit.load_delta(download(driver, tmp_path, "dl-delta", "delta.safetensors"))
            assert set(delta.weights) == set(session.history[0]["delta"].weights)
            driver.find_element(By.ID, "revert").click()
            wait_for(lambda: "no edits yet" in driver.find_element(By.ID, "history").text, what="the revert")
    finally:
        while session.history:
            session.revert()
    assert all(torch.equal(p, unedited[n]) for n, p in model.named_parameters())
