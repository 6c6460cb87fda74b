"""The playground (memit serve) on a tiny model: its API's answers to bad input and to a busy
model, cancel and failure leaving the weights as they were, loopback-only binding, and the whole
page driven in headless Chromium: facts in, edit, held, probe, download, revert."""

import json
import threading
import urllib.error
import urllib.request
import zipfile

import pytest
import torch

import memit.serve.session as session_mod
from browser import chromium, download, edit_and_wait, enter_facts, free_port, probe, serving, wait_for
from helpers import tiny_model
from memit.cli import main
from memit.hparams import MemitHyperParams
from memit.serve import BindError, bind_address, make_server
from memit.serve.session import Session

FACTS = [{"subject": "The Eiffel Tower", "prompt": "The Eiffel Tower is located in the city of", "target_new": "Rome",
          "target_true": "Paris"},
         {"subject": "Toko Yasuda", "prompt": "Everyone knows Toko Yasuda plays the", "target_new": "piano",
          "target_true": "guitar"}]


def _session(bpe, corpus_file, tmp_path):
    # a large clamp and a small λ: a random tiny model needs them for its facts to hold
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=25, v_lr=1.0, prefixes=["Because of it. "], rounds=3,
                          stop="margin", stop_margin=1.0, clamp_norm_factor=8.0, lam=1.0, stats_corpus=corpus_file,
                          stats_tokens=1024, stats_seq_len=32)
    return Session(tiny_model("llama", bpe), bpe, hp, name="tiny", workdir=tmp_path / "session", progress_bars=False)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(model, saved) -> bool:
    return all(torch.equal(p, saved[n]) for n, p in model.named_parameters())


def _call(url: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Gate:
    """Holds every edit in the worker thread until released, so that the test sees it running."""

    def __init__(self, monkeypatch, fail: bool = False):
        self.entered, self.release, real = threading.Event(), threading.Event(), session_mod.run

        def gated(*a, **k):
            self.entered.set()
            assert self.release.wait(60)
            delta = real(*a, **k)
            if fail:
                raise RuntimeError("the edit broke after writing its weights")
            return delta
        monkeypatch.setattr(session_mod, "run", gated)


def test_api_answers_bad_input_with_one_line(bpe, corpus_file, tmp_path, capsys):
    session = _session(bpe, corpus_file, tmp_path)
    with serving(session, max_upload=4096) as url:
        assert _call(url, "/api/info")[1]["model"] == "tiny"
        status, out = _call(url, "/api/edit", raw=b"{not json")
        assert status == 400 and out["error"].startswith("request body is not valid JSON")
        status, out = _call(url, "/api/check", {"text": "[{\"prompt\": ", "name": "facts.json"})
        assert status == 400 and out["errors"][0]["error"].startswith("facts.json: not valid JSON (line 1")
        status, out = _call(url, "/api/check", {"text": "hello", "name": "facts.txt"})
        assert status == 400 and "neither JSON nor JSONL" in out["errors"][0]["error"]
        unknown = [FACTS[0], {"question": "Who?", "answer": "me"}]
        status, out = _call(url, "/api/edit", {"text": json.dumps(unknown)})
        assert status == 400 and [e["record"] for e in out["errors"]] == [1]
        (tmp_path / "unknown.json").write_text(json.dumps(unknown))  # the CLI says the same of the same record
        assert main(["edit", "--model", "/nowhere", "--requests", str(tmp_path / "unknown.json"), "--delta",
                     str(tmp_path / "d.safetensors")]) == 2
        assert capsys.readouterr().err.strip() == f"memit: error: {out['errors'][0]['error']}"
        status, out = _call(url, "/api/edit", {"text": json.dumps([FACTS[0], dict(FACTS[0], target_new="Oslo")])})
        assert status == 400 and "conflicts with record 0" in out["error"]
        status, out = _call(url, "/api/check", {"text": json.dumps(FACTS * 40)})  # over the 4096-byte limit
        assert status == 413 and "larger than the 4,096-byte limit" in out["error"]
        status, out = _call(url, "/api/check", {"text": json.dumps(FACTS)})
        assert status == 200 and [f["target_new"] for f in out["facts"]] == ["Rome", "piano"]
        for path, body in (("/api/revert", {}), ("/api/probe", {"prompt": " "}), ("/api/probe", {"prompt": "a", "k": 0})):
            status, out = _call(url, path, body)
            assert status == 400 and "\n" not in out["error"]
        assert _call(url, "/api/download/delta")[0] == 400  # nothing edited yet
        assert _call(url, "/api/download/weights")[0] == 400
        for e in [out["error"]]:
            assert "\n" not in e


def test_one_edit_at_a_time_and_cancel_restores(bpe, corpus_file, tmp_path, monkeypatch):
    session = _session(bpe, corpus_file, tmp_path)
    before = _weights(session.model)
    gate = Gate(monkeypatch)
    with serving(session) as url:
        status, out = _call(url, "/api/edit", {"text": json.dumps(FACTS)})
        assert status == 202 and out["job"]["state"] == "running"
        assert gate.entered.wait(30)
        for path, body in (("/api/edit", {"text": json.dumps(FACTS)}), ("/api/probe", {"prompt": "Paris is"}),
                           ("/api/revert", {}), ("/api/download/model", None)):
            status, out = _call(url, path, body)
            assert status == 409 and out["error"].startswith("busy: an edit of 2 facts is running"), path
        assert _call(url, "/api/cancel", {})[1] == {"cancelling": True}
        gate.release.set()
        job = session.wait(60)
        assert job.state == "cancelled" and not session.history
        assert _same(session.model, before)  # nothing of the edit is left
        assert _call(url, "/api/info")[1]["job"]["state"] == "cancelled"


def test_a_failed_edit_leaves_the_model_as_it_was(bpe, corpus_file, tmp_path, monkeypatch):
    session = _session(bpe, corpus_file, tmp_path)
    before = _weights(session.model)
    gate = Gate(monkeypatch, fail=True)
    gate.release.set()
    session.start_edit(session_mod.parse(json.dumps(FACTS))[0])
    job = session.wait(60)
    assert job.state == "failed" and "broke after writing" in job.error
    assert _same(session.model, before) and not session.journal.steps


def test_loopback_only_unless_host_is_given(bpe, corpus_file, tmp_path, capsys):
    assert bind_address(None, explicit=False) == "127.0.0.1"
    assert bind_address("::1", explicit=False) == "::1" and bind_address("localhost", explicit=False) == "localhost"
    with pytest.raises(BindError, match="refusing to listen on 0.0.0.0: only loopback without --host"):
        bind_address("0.0.0.0", explicit=False)
    assert bind_address("0.0.0.0", explicit=True) == "0.0.0.0"
    with pytest.raises(BindError):
        make_server(_session(bpe, corpus_file, tmp_path), "192.168.1.7")
    with serving(_session(bpe, corpus_file, tmp_path)) as url:  # the port is taken: one line, exit 2
        port = url.rsplit(":", 1)[1]
        assert main(["serve", "--model", "/nowhere", "--port", port]) == 2
        err = capsys.readouterr().err
        assert err == f"memit: error: port {port} on 127.0.0.1 is in use; pass --port with another\n"
    assert free_port() > 0


def test_the_page_edits_probes_downloads_and_reverts(bpe, corpus_file, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By

    import memit
    import memit.lora

    session = _session(bpe, corpus_file, tmp_path)
    unedited = _weights(session.model)
    with serving(session) as url, chromium(tmp_path) as driver:
        enter_facts(driver, url, FACTS)
        assert edit_and_wait(driver, 120) == "2 of 2 facts hold."
        cells = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#results tbody td:nth-child(4)")]
        assert cells == ["held", "held"]
        assert driver.find_elements(By.CSS_SELECTOR, "#layer-plot rect")  # ‖ΔW‖/‖W‖ per layer, drawn
        before, after = probe(driver, "The Eiffel Tower is located in the city of")
        assert before.startswith("The Eiffel Tower is located in the city of ⟶")
        expected = session.probe("The Eiffel Tower is located in the city of")
        assert after.endswith(expected["after"]["text"].strip()) and before.endswith(expected["before"]["text"].strip())
        file = download(driver, tmp_path, "dl-delta", "delta.safetensors")
        delta = memit.load_delta(file)
        made = session.history[0]["delta"]
        assert all(torch.equal(delta.weights[n].double(), made.weights[n].double()) for n in made.weights)
        edited = {n: session.model.get_parameter(n).detach().clone() for n in made.weights}
        for what, inside in (("adapter", "adapter_config.json"), ("model", "config.json")):
            with urllib.request.urlopen(f"{url}/api/download/{what}", timeout=120) as r:
                (tmp_path / f"{what}.zip").write_bytes(r.read())
            with zipfile.ZipFile(tmp_path / f"{what}.zip") as z:
                z.extractall(tmp_path / what)
            assert (tmp_path / what / inside).is_file()
        lora = memit.lora.load_lora(tmp_path / "adapter")  # the adapter is the same change
        assert all(torch.allclose(lora.weights[n].float(), made.weights[n].float(), atol=1e-6) for n in made.weights)
        driver.find_element(By.ID, "revert").click()
        wait_for(lambda: "no edits yet" in driver.find_element(By.ID, "history").text, what="the revert")
        assert _same(session.model, unedited)  # bit-exact
        delta.apply(session.model)  # the downloaded file reproduces the edit
        assert all(torch.equal(session.model.get_parameter(n), w) for n, w in edited.items())
        delta.revert(session.model)


def test_closing_the_page_mid_edit_finishes_the_edit(bpe, corpus_file, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By

    session = _session(bpe, corpus_file, tmp_path)
    unedited = _weights(session.model)
    gate = Gate(monkeypatch)
    with serving(session) as url, chromium(tmp_path) as driver:
        enter_facts(driver, url, FACTS)
        driver.find_element(By.ID, "edit").click()
        assert gate.entered.wait(30)
        wait_for(lambda: driver.find_element(By.ID, "status").text == "editing", what="the busy badge")
        driver.get("about:blank")  # the page is gone while the edit runs
        gate.release.set()
        job = session.wait(120)
        assert job.state == "done" and len(session.journal.steps) == 1
        made = session.history[0]["delta"]
        for n, d in made.weights.items():  # all of it: the weights are the unedited ones plus the whole change
            w0 = made.original(n)
            assert torch.equal(w0, unedited[n]) and torch.equal(session.model.get_parameter(n), (w0.float() + d).to(w0.dtype))
        enter_facts(driver, url, [])  # reopened: the page shows the finished edit
        wait_for(lambda: "facts hold" in driver.find_element(By.ID, "summary").text, what="the result after reopening")
