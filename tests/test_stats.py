"""C₀: float64 sums, cached by content fingerprints, recomputed when anything changes."""

import json

import pytest
import torch

from helpers import tiny_model
from memit import hooks
from memit.models.arch import get_arch
from memit.stats import CorpusError, iter_texts, second_moments, stats_path, token_windows


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
