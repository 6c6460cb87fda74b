"""Content fingerprints of weights and token streams.

A statistics cache is only valid for the exact weights and text it was computed from, so both
are hashed by content, not by name: a fine-tuned or already-edited model with the same name
gets its own statistics.
"""

from __future__ import annotations

import hashlib

import torch

from memit.models.arch import Arch
from memit.weights import named_weights


def _update(h, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.view(-1).view(torch.uint8).numpy().tobytes())


def model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, p in named_weights(model):
        h.update(name.encode())
        _update(h, p)
    return h.hexdigest()


def layer_fingerprints(model: torch.nn.Module, arch: Arch, upto: int) -> list[str]:
    """For each block i ≤ upto: a hash of everything C₀ at block i can depend on
    (all weights outside the blocks, and blocks 0..i)."""
    h = hashlib.blake2b(digest_size=16)
    prefix = arch.blocks + "."
    per_block: dict[int, list] = {}
    for name, p in named_weights(model):
        if name.startswith(prefix):
            per_block.setdefault(int(name[len(prefix):].split(".")[0]), []).append((name, p))
        else:
            h.update(name.encode())
            _update(h, p)
    out = []
    for i in range(upto + 1):
        for name, p in per_block.get(i, []):
            h.update(name.encode())
            _update(h, p)
        out.append(h.copy().hexdigest())
    return out


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        _update(h, t)
    return h.hexdigest()
