"""Safe files: safetensors only (no pickle), written atomically, with a checksum.

A file is written to a temporary name beside its target and renamed into place, so a crash
never leaves a half-written file under the real name; the checksum in its metadata catches a
file damaged later. Nothing here ever overwrites a file the caller did not ask to replace.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from memit.fingerprint import tensor_fingerprint


class CorruptFileError(ValueError):
    pass


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    names = sorted(tensors)
    return tensor_fingerprint(*(torch.tensor(list(n.encode()), dtype=torch.uint8) for n in names),
                              *(tensors[n] for n in names))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {"memit": json.dumps(meta, sort_keys=True), "checksum": _checksum(tensors)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically (temporary file beside it, then renamed), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        Path(tmp).write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a file written by :func:`save_tensors`; damage raises."""
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFileError(f"{path}: not a readable safetensors file ({e})") from None
    if "memit" not in metadata or "checksum" not in metadata:
        raise CorruptFileError(f"{path}: not a memit file (metadata missing)")
    if _checksum(tensors) != metadata["checksum"]:
        raise CorruptFileError(f"{path}: checksum mismatch, the file is damaged")
    return tensors, json.loads(metadata["memit"])
