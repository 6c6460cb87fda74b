"""C₀: float64 sums, cached by content fingerprints, recomputed when anything changes."""

import itertools
import json

import pytest
import torch

from helpers import tiny_model
from memit import hooks
from memit.corpus import CorpusError, iter_texts, token_windows
from memit.models.arch import get_arch
from memit.stats import second_moments, stats_path


def test_c0_is_the_mean_outer_product(bpe, corpus_file):
    model = tiny_model("gpt2", bpe)
    arch = get_arch(model)
    windows = token_windows(bpe, corpus_file, 16, 64)
    with hooks.record(model, [arch.mlp_out_name(1)], what="input") as seen:
        model(input_ids=windows)
    k = seen[arch.mlp_out_name(1)].reshape(-1, 128).double()
    expected = k.T @ k / k.shape[0]
    c0 = second_moments(model, bpe, arch, [1], corpus=corpus_file, max_tokens=64, seq_len=16, batch_tokens=32,
                        use_cache=False, progress=False)[1]
    assert c0.dtype == torch.float64
    torch.testing.assert_close(c0, expected, rtol=1e-5, atol=1e-7)


def test_cache_is_reused_and_invalidated(bpe, corpus_file, tmp_path):
    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    kw = {"corpus": corpus_file, "max_tokens": 128, "seq_len": 32, "progress": False}
    first = second_moments(model, bpe, arch, [1, 2], **kw)
    files = sorted(p.name for p in stats_path("x", 0, "y").parent.glob("*.safetensors"))
    assert len(files) >= 2
    calls = []
    h = model.get_submodule(arch.block_name(0)).register_forward_hook(lambda *a: calls.append(1))
    again = second_moments(model, bpe, arch, [1, 2], **kw)
    assert not calls and torch.equal(again[1], first[1])  # from the cache: no forward pass
    # another corpus → recomputed
    other = tmp_path / "other.txt"
    other.write_text("A completely different text about rivers and mountains. " * 40)
    second_moments(model, bpe, arch, [1], **{**kw, "corpus": str(other)})
    assert calls
    # different weights in an earlier block → recomputed; a later block does not matter
    calls.clear()
    with torch.no_grad():
        model.get_submodule(arch.block_name(3)).mlp.down_proj.weight.add_(1.0)
    second_moments(model, bpe, arch, [1], **kw)
    assert not calls
    with torch.no_grad():
        model.get_submodule(arch.block_name(0)).mlp.down_proj.weight.add_(1.0)
    changed = second_moments(model, bpe, arch, [1], **kw)
    h.remove()
    assert calls and not torch.equal(changed[1], first[1])


def test_corrupt_cache_is_recomputed(bpe, corpus_file, capsys):
    model = tiny_model("qwen2", bpe)
    arch = get_arch(model)
    kw = {"corpus": corpus_file, "max_tokens": 96, "seq_len": 32, "progress": False}
    first = second_moments(model, bpe, arch, [1], **kw)
    path = max(stats_path("x", 0, "y").parent.glob("*-L1-*.safetensors"), key=lambda p: p.stat().st_mtime)
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF
    path.write_bytes(bytes(raw))
    again = second_moments(model, bpe, arch, [1], **kw)
    assert "recomputing" in capsys.readouterr().out
    torch.testing.assert_close(again[1], first[1])


def test_corpus_formats(tmp_path):
    (tmp_path / "wiki").mkdir()
    (tmp_path / "wiki" / "wiki_00").write_text(
        '<doc id="1" url="u" title="A">\nA\nText one.\n</doc>\n<doc id="2" url="u" title="B">\nB\nText two.\n</doc>\n')
    assert [d.split("\n")[-1] for d in iter_texts(str(tmp_path / "wiki"))] == ["Text one.", "Text two."]
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"text": "world"}) + "\n")
    assert list(iter_texts(str(tmp_path / "c.jsonl"))) == ["hello", "world"]
    assert next(iter_texts(None)).startswith("= Homarus gammarus =")  # the bundled WikiText-2 excerpt
    with pytest.raises(CorpusError, match="not found"):
        list(iter_texts(str(tmp_path / "missing")))
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    with pytest.raises(CorpusError, match="line 1"):
        list(iter_texts(str(tmp_path / "bad.jsonl")))


def test_interrupted_statistics_resume_to_the_same_c0(bpe, corpus_file, monkeypatch):
    import memit.stats as stats_mod

    model = tiny_model("gpt_neox", bpe)
    arch = get_arch(model)
    kw = {"corpus": corpus_file, "max_tokens": 320, "seq_len": 32, "batch_tokens": 64, "progress": False}
    whole = second_moments(model, bpe, arch, [1, 2], use_cache=False, **kw)
    real, calls = stats_mod.hooks.run, []

    def ctrl_c_on_third_batch(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(stats_mod.hooks, "run", ctrl_c_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        second_moments(model, bpe, arch, [1, 2], **kw)
    assert list(stats_path("x", 0, "y").parent.glob("*.partial.safetensors"))
    calls.clear()
    monkeypatch.setattr(stats_mod.hooks, "run", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = second_moments(model, bpe, arch, [1, 2], **kw)
    assert len(calls) == 3  # 5 batches in all, 2 were done before the interruption
    assert torch.equal(resumed[1], whole[1]) and torch.equal(resumed[2], whole[2])
    assert not list(stats_path("x", 0, "y").parent.glob("*.partial.safetensors"))


SCRIPT = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from memit.models.arch import get_arch
from memit.stats import second_moments
m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])
c = second_moments(m, t, get_arch(m), [1, 2], corpus=sys.argv[2], max_tokens=2048, seq_len=32, progress=False)
from safetensors.torch import save_file
save_file({str(k): v for k, v in c.items()}, sys.argv[3])
"""


def test_two_processes_share_one_cache(bpe, corpus_file, tmp_path):
    import os
    import subprocess
    import sys

    tiny_model("llama", bpe).save_pretrained(tmp_path / "m")
    bpe.save_pretrained(tmp_path / "m")
    env = dict(os.environ, MEMIT_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "m"), corpus_file,
                               str(tmp_path / f"c{i}.pt")], env=env) for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / f"c{i}.pt") for i in range(2))
    assert torch.equal(a["1"], b["1"]) and torch.equal(a["2"], b["2"])
    files = sorted(p.name for p in (tmp_path / "cache" / "stats").iterdir())
    assert sum(f.endswith(".safetensors") for f in files) == 2 and not any(".tmp" in f for f in files)


def test_drift_per_quarter_is_the_change_of_the_running_estimate(bpe, corpus_file):
    from memit.stats import accumulate, stats_info

    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    windows = token_windows(bpe, corpus_file, 16, 256)  # 16 windows, 4 per batch: a mark after each batch
    *_, drift = accumulate(model, arch, [1], windows, 64, progress=False)
    running = []
    for i in range(0, 16, 4):
        part = accumulate(model, arch, [1], windows[: i + 4], 64, progress=False)
        running.append(part[0][1] / part[1])
    expected = [float((b - a).norm() / b.norm()) for a, b in itertools.pairwise(running)]
    assert [d[:2] for d in drift[1]] == [[64, 128], [128, 192], [192, 256]]
    assert [d[2] for d in drift[1]] == pytest.approx(expected, rel=1e-4)
    # the cached statistics keep it, and ``memit stats`` reads it back
    kw = {"corpus": corpus_file, "max_tokens": 256, "seq_len": 16}
    second_moments(model, bpe, arch, [1], batch_tokens=64, progress=False, **kw)
    kept = stats_info(model, bpe, arch, [1], **kw)[1]["drift"]
    assert [d[:2] for d in kept] == [d[:2] for d in drift[1]]
    assert [d[2] for d in kept] == pytest.approx([d[2] for d in drift[1]], rel=1e-5)
