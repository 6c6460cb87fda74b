"""Data-parallel statistics: two gloo processes under torchrun give the C₀ of one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import USER_CACHE
from helpers import tiny_model
from memit.files import load_tensors
from memit.models.arch import get_arch
from memit.stats import second_moments


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cache: Path, args: list[str], fails: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, MEMIT_CACHE=str(cache), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "memit.cli", "stats", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 and not fails:  # a rank that aborts says why early in stderr; torchrun's summary comes last
        causes = [ln for ln in proc.stderr.splitlines() if any(w in ln for w in ("Error", "error", "what()", "terminate"))]
        pytest.fail("\n".join(causes[:20]) + "\n…\n" + proc.stderr[-1500:])
    return proc


def _check_same(cache: Path, single: dict) -> None:
    files = sorted((cache / "stats").glob("*.safetensors"))
    assert len(files) == len(single)
    for f in files:
        tensors, meta = load_tensors(f)
        ref = single[meta["layer"]]
        # per-batch products are float32 and the batches differ between runs: agreement to float32 precision
        torch.testing.assert_close(tensors["C0"], ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_two_gloo_processes_on_a_tiny_model(tmp_path, bpe, corpus_file):
    tiny_model("gpt2", bpe).save_pretrained(tmp_path / "m")
    bpe.save_pretrained(tmp_path / "m")
    _torchrun(tmp_path / "cache", ["--model", str(tmp_path / "m"), "--layers", "1,2", "--corpus", corpus_file,
                                   "--stats-tokens", "3000"])
    model = tiny_model("gpt2", bpe)
    single = second_moments(model, bpe, get_arch(model), [1, 2], corpus=corpus_file, max_tokens=3000, seq_len=256,
                            use_cache=False, progress=False)
    _check_same(tmp_path / "cache", single)


def test_two_processes_refuse_nan_statistics_as_one_does(tmp_path, bpe, corpus_file):
    model = tiny_model("gpt2", bpe)
    with torch.no_grad():
        model.transformer.wte.weight[5:] = float("inf")  # activations overflow on every text
    model.save_pretrained(tmp_path / "m")
    bpe.save_pretrained(tmp_path / "m")
    proc = _torchrun(tmp_path / "cache", ["--model", str(tmp_path / "m"), "--layers", "1,2", "--corpus", corpus_file,
                                          "--stats-tokens", "3000"], fails=True)
    assert proc.returncode != 0
    assert "memit: error: layer 1: the statistics contain NaN/Inf" in proc.stderr
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # nothing cached


@pytest.mark.slow
def test_two_gloo_processes_on_smollm2(tmp_path):
    import memit

    src = Path(USER_CACHE) / "models" / "smollm2-135m"
    if not (src / "model.safetensors").is_file():
        pytest.skip("SmolLM2 is not in the cache (the integration test fetches it)")
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "models" / "smollm2-135m").symlink_to(src)
    _torchrun(tmp_path / "cache", ["--layers", "3,4", "--stats-tokens", "4096"])
    model, tok = memit.load_model(str(src))
    single = second_moments(model, tok, get_arch(model), [3, 4], max_tokens=4096, seq_len=256, use_cache=False,
                            progress=False)
    _check_same(tmp_path / "cache", single)
