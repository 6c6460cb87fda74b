"""The command line on a tiny model saved to disk: success paths, and bad input → exit 2."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CORPUS, benchmark_script, tiny_model
from memit.cli import main


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, bpe):
    root = tmp_path_factory.mktemp("cli")
    model_dir = root / "model"
    tiny_model("llama", bpe).save_pretrained(model_dir)
    bpe.save_pretrained(model_dir)
    (root / "corpus.txt").write_text("\n".join(CORPUS * 3))
    (root / "hp.json").write_text(json.dumps({"layers": [1, 2], "lam": 0.5, "prefixes": ["I said. "],
                                              "stats_corpus": str(root / "corpus.txt"), "stats_tokens": 2000,
                                              "stats_seq_len": 32, "v_num_grad_steps": 3}))
    (root / "reqs.json").write_text(json.dumps([
        {"prompt": "{} is located in the city of", "subject": "The Eiffel Tower", "target_new": "Rome"},
        {"prompt": "{} plays the", "subject": "Toko Yasuda", "target_new": "piano"}]))
    return root, model_dir


def test_edit_apply_generate(setup, capsys):
    root, model_dir = setup
    before = _digest(model_dir)
    base = ["--model", str(model_dir), "--hparams", str(root / "hp.json"), "--requests", str(root / "reqs.json")]
    assert main(["edit", *base, "--out", str(root / "edited"), "--delta", str(root / "d.safetensors"),
                 "--quiet"]) == 0
    assert (root / "edited" / "model.safetensors").is_file() and (root / "edited" / "memit_edit.json").is_file()
    assert "edited 2 facts" in capsys.readouterr().out
    assert _digest(model_dir) == before  # the input model is never written
    assert main(["apply", "--model", str(model_dir), "--delta", str(root / "d.safetensors"),
                 "--out", str(root / "applied")]) == 0
    a, b = _digest(root / "edited"), _digest(root / "applied")
    assert a["model.safetensors"] == b["model.safetensors"]  # apply reproduces the edit exactly
    assert main(["generate", "--model", str(root / "edited"), "--max-new-tokens", "3", "Paris is"]) == 0


@pytest.mark.parametrize("extra,needle", [
    (["--layers", "1,9"], "out of range"),
    (["--layers", "a,b"], "comma-separated"),
    (["--requests", "/nonexistent.json"], "no such file"),
])
def test_bad_input_exits_2_with_one_line(setup, capsys, extra, needle):
    root, model_dir = setup
    args = ["edit", "--model", str(model_dir), "--hparams", str(root / "hp.json"), "--requests",
            str(root / "reqs.json"), "--delta", str(root / "never.safetensors"), "--quiet", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (root / "never.safetensors").exists()


def test_out_is_never_overwritten_without_force(setup, capsys):
    root, model_dir = setup
    existing = root / "mine"
    existing.mkdir()
    (existing / "precious.txt").write_text("keep me")
    args = ["edit", "--model", str(model_dir), "--hparams", str(root / "hp.json"), "--requests",
            str(root / "reqs.json"), "--out", str(existing)]
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert (existing / "precious.txt").read_text() == "keep me"
    assert main(["edit", "--model", str(model_dir), "--requests", str(root / "reqs.json"),
                 "--out", str(model_dir), "--force"]) == 2
    assert "never writes into the input model" in capsys.readouterr().err


def test_bad_model_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--model", str(tmp_path / "empty"), "hi"]) == 2
    assert "config.json" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["memit.cli", "memit"])
def test_console_script_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    for cmd in ("edit", "apply", "stats", "generate", "demo", "examples:"):
        assert cmd in out.stdout


def test_journal_edit_and_revert_on_the_command_line(setup, capsys):
    root, model_dir = setup
    base = ["--model", str(model_dir), "--hparams", str(root / "hp.json"), "--requests", str(root / "reqs.json"),
            "--quiet", "--journal", str(root / "journal")]
    assert main(["edit", *base, "--method", "alphaedit", "--n", "1"]) == 0
    assert main(["edit", *base, "--method", "memit-seq", "--offset", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 2 recorded (memit-seq, 1 requests)" in out and "max key |cos|" in out
    assert main(["revert", "--model", str(model_dir), "--journal", str(root / "journal"), "--to", "1",
                 "--out", str(root / "at1")]) == 0
    assert "now ends at step 1" in capsys.readouterr().out
    assert main(["edit", *base[:6], "--method", "rome", "--delta", str(root / "rome.safetensors"), "--quiet"]) == 0
    assert main(["revert", "--model", str(model_dir), "--journal", str(root / "journal"), "--to", "7"]) == 2
    assert "step 7 does not exist" in capsys.readouterr().err


def test_eval_one_batch_and_sequential(setup, capsys):
    root, model_dir = setup
    recs = [{"case_id": i, "prompt": p, "subject": s, "target_new": t, "ground_truth": g, "rephrase_prompt": r,
             "locality_prompt": lp, "locality_ground_truth": lg}
            for i, (p, s, t, g, r, lp, lg) in enumerate([
                ("{} is located in", "The Eiffel Tower", "Rome", "Paris", "The Eiffel Tower stands in",
                 "The Louvre is in", "Paris"),
                ("Toko Yasuda, the", "Toko Yasuda", "piano", "guitar", "Toko Yasuda is incredible at",
                 "John Lennon performs on the", "guitar")])]
    (root / "cf.json").write_text(json.dumps(recs))
    (root / "known.json").write_text(json.dumps([{"subject": "Danielle", "prompt": "Danielle speaks",
                                                  "attribute": "French"}]))
    base = ["eval", "--model", str(model_dir), "--hparams", str(root / "hp.json"), "--dataset", "counterfact",
            "--data", str(root / "cf.json"), "--out", str(root / "res"), "--no-fluency", "--quiet"]
    assert main([*base, "--n", "2", "--retention", str(root / "known.json"), "--preservation", "identity",
                 "--perplexity", str(root / "corpus.txt"), "--perplexity-tokens", "64"]) == 0
    point = json.loads((root / "res" / "counterfact_memit_n2.json").read_text())
    assert point["hparams"]["preservation"] == "identity" and point["retention"]["facts"] == 1
    assert point["unedited"]["perplexity"] != point["edited"]["perplexity"]  # both measured, the edit changed it
    gen = point["edited"]["generated"]  # generated answers by default, beside the teacher-forced scores
    assert 0 <= gen["gen_ES"] <= 100 and gen["forms"]["chat"] is None  # this tokenizer has no chat template
    assert len(point["generated_per_case"]["edited"]["plain"]) == 2
    out = capsys.readouterr().out
    assert "generated (plain, answer starts with the target): ES" in out and "no chat template" in out
    ref = root / "res" / "counterfact_memit_n2.json"
    assert main([*base, "--n", "2", "--match-norm", str(ref), "--out", str(root / "ridge"), "--generate", "none"]) == 0
    ridge = json.loads((root / "ridge" / "counterfact_memit_n2.json").read_text())
    assert "generated" not in ridge["edited"] and "generated_per_case" not in ridge
    assert main([*base, "--n", "1", "--generate", "chat", "--out", str(root / "chat")]) == 2
    err = capsys.readouterr().err
    assert "has no chat template; use --generate plain" in err and err.count("\n") == 1
    assert not (root / "chat").exists()
    assert ridge["hparams"]["match_rel_norms"] == [x["delta_rel_norm"] for x in point["layers_info"]]
    assert all("lambda" in x for x in ridge["layers_info"])
    assert main([*base, "--n", "2", "--match-norm", str(root / "cf.json"), "--out", str(root / "bad")]) == 2
    assert "--match-norm" in capsys.readouterr().err
    seq_args = [*base, "--n", "2", "--batch-size", "1", "--method", "alphaedit", "--retention", str(root / "known.json")]
    assert main([*seq_args, "--score-every", "0"]) == 2
    assert "--score-every 0: give a whole number" in capsys.readouterr().err
    assert main([*seq_args, "--max-batches", "1"]) == 0
    assert "1 of 2 batches of 1 done" in capsys.readouterr().out
    assert main(seq_args) == 0
    seq = json.loads((root / "res" / "counterfact_alphaedit_n2_seq1.json").read_text())
    assert [p["edits"] for p in seq["points"]] == [0, 1, 2]
    assert ["generated" in p for p in seq["points"]] == [True, False, True]  # the endpoints
    assert [p["retention"]["facts"] for p in seq["points"]] == [1, 1, 1]
    assert (root / "res" / "counterfact_sequential.png").is_file()
    assert "2 of 2 batches of 1 done" in capsys.readouterr().out
    assert main([*seq_args, "--sequential-stats", "base"]) == 0  # another sequence, beside the first
    based = json.loads((root / "res" / "counterfact_alphaedit_n2_seq1_basestats.json").read_text())
    assert based["hparams"]["sequential_stats"] == "base" and len(based["points"]) == 3


# One CounterFact record in EasyEdit's schema, for the eval paths.
ONE_RECORD = [{"case_id": 0, "prompt": "{} is located in", "subject": "The Eiffel Tower", "target_new": "Rome",
               "ground_truth": "Paris", "rephrase_prompt": "The Eiffel Tower stands in",
               "locality_prompt": "The Louvre is in", "locality_ground_truth": "Paris"}]


def test_an_exported_adapter_is_applied_and_scored_like_the_delta(setup, capsys):
    root, model_dir = setup
    (root / "one.json").write_text(json.dumps(ONE_RECORD))
    base = ["--model", str(model_dir), "--hparams", str(root / "hp.json")]
    assert main(["edit", *base, "--requests", str(root / "one.json"), "--delta", str(root / "one.safetensors"),
                 "--quiet"]) == 0
    assert main(["export", "lora", "--delta", str(root / "one.safetensors"), "--out", str(root / "one-lora")]) == 0
    ev = ["eval", *base, "--dataset", "counterfact", "--data", str(root / "one.json"), "--n", "1", "--no-fluency",
          "--quiet", "--out", str(root / "scored")]
    assert main([*ev, "--delta", str(root / "one.safetensors")]) == 0
    assert main([*ev, "--delta", str(root / "one-lora")]) == 0
    d = json.loads((root / "scored" / "counterfact_memit_n1_delta-one.json").read_text())
    a = json.loads((root / "scored" / "counterfact_memit_n1_delta-one-lora.json").read_text())
    assert a["delta_source"] == str(root / "one-lora") and a["edited"]["ES"] == d["edited"]["ES"]
    got, want = a["per_case"]["edited"][0]["rewrite"][0], d["per_case"]["edited"][0]["rewrite"][0]
    assert got == pytest.approx(want, abs=1e-4)  # the adapter scores as the delta does
    assert main(["apply", "--model", str(model_dir), "--delta", str(root / "one-lora"), "--out", str(root / "m")]) == 0
    assert main([*ev, "--delta", str(root / "nothing-here")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_saved_delta_is_scored_again_without_editing(setup, capsys):
    root, model_dir = setup
    (root / "kept.json").write_text(json.dumps(ONE_RECORD))
    ev = ["eval", "--model", str(model_dir), "--hparams", str(root / "hp.json"), "--dataset", "counterfact",
          "--data", str(root / "kept.json"), "--n", "1", "--no-fluency", "--generate", "none", "--quiet"]
    assert main([*ev, "--out", str(root / "first"), "--save-delta", str(root / "deltas")]) == 0
    saved = root / "deltas" / "counterfact_memit_n1.safetensors"
    first = json.loads((root / "first" / "counterfact_memit_n1.json").read_text())
    assert first["delta_file"] == str(saved)
    assert main([*ev, "--out", str(root / "again"), "--delta", str(saved)]) == 0
    again = json.loads((root / "again" / "counterfact_memit_n1_delta-counterfact_memit_n1.json").read_text())
    assert again["per_case"]["edited"] == first["per_case"]["edited"]  # the same edit, not a new one
    assert again["timings"] == first["timings"]
    before = saved.read_bytes()
    assert main([*ev, "--out", str(root / "third"), "--save-delta", str(root / "deltas")]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and err.count("\n") == 1 and saved.read_bytes() == before  # never overwritten
    assert not (root / "third" / "counterfact_memit_n1.json").exists()  # refused before editing
    assert main([*ev, "--out", str(root / "s"), "--delta", str(saved), "--save-delta", str(root / "d2")]) == 2
    assert "already saved" in capsys.readouterr().err and not (root / "d2").exists()


def test_gguf_out_needs_a_gguf_model_and_says_so_before_editing(setup, capsys):
    root, model_dir = setup
    base = ["--model", str(model_dir), "--hparams", str(root / "hp.json")]
    assert main(["edit", *base, "--requests", str(root / "reqs.json"), "--out", str(root / "e.gguf"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not a .gguf file" in err and err.count("\n") == 1 and not (root / "e.gguf").exists()
    assert main(["apply", "--model", str(model_dir), "--delta", str(root / "d.safetensors"),
                 "--out", str(root / "a.gguf")]) == 2
    assert "is not a .gguf file" in capsys.readouterr().err


def test_a_committed_baseline_seeds_the_score_cache(setup, capsys, monkeypatch, tmp_path):
    """benchmarks/seed_baseline.py puts a result's unedited scores where ``memit eval`` looks: a
    fresh cache then scores only the edited model, with the same baseline, and names its source."""
    import memit.eval.run as run_mod

    root, model_dir = setup
    (root / "seed.json").write_text(json.dumps(ONE_RECORD))
    ev = ["eval", "--model", str(model_dir), "--hparams", str(root / "hp.json"), "--dataset", "counterfact",
          "--data", str(root / "seed.json"), "--n", "1", "--no-fluency", "--generate", "plain", "--quiet"]
    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "first"))
    assert main([*ev, "--out", str(tmp_path / "a")]) == 0
    first = tmp_path / "a" / "counterfact_memit_n1.json"
    seed = benchmark_script("seed_baseline")
    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "fresh"))
    seed.main([str(first), "--model", str(model_dir), "--data", str(root / "seed.json")])
    assert "unedited scores of 1 records" in capsys.readouterr().out
    scored = []
    real = run_mod.score
    monkeypatch.setattr(run_mod, "score", lambda *a, **k: (scored.append(1), real(*a, **k))[1])
    assert main([*ev, "--out", str(tmp_path / "b")]) == 0
    a, b = json.loads(first.read_text()), json.loads((tmp_path / "b" / "counterfact_memit_n1.json").read_text())
    assert len(scored) == 1  # the edited model only
    assert b["unedited"] == a["unedited"] and b["generated_per_case"]["unedited"] == a["generated_per_case"]["unedited"]
    assert b["unedited_source"] == {"file": str(first), "commit": a["machine"]["commit"]}
    assert "unedited_source" not in a
    other = [dict(ONE_RECORD[0], case_id=7)]
    (root / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit) as exit_:
        seed.main([str(first), "--model", str(model_dir), "--data", str(root / "other.json")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "are not the result's case_ids" in err and err.count("\n") == 1
