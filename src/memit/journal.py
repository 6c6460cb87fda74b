"""An edit journal: a model edited across many runs, and any earlier step restored exactly.

A journal is a directory::

    journal.json            base model fingerprint, and one entry per step
    step-0001.safetensors   that step's Delta (saved like any delta)
    step-0001.keys.safetensors   its keys per layer (d_ff × n), from which the running
                                 K_pK_pᵀ that MEMIT-seq and AlphaEdit need is rebuilt

Replaying applies the deltas of steps 1..k in order to the base model with the same arithmetic
the edits used, so the weights after step k are reproduced bit for bit. Reverting to step k
moves the later steps into ``undone-<time>/`` inside the journal: nothing is deleted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from memit.delta import Delta, load_delta
from memit.files import load_tensors, save_tensors, write_json
from memit.fingerprint import model_fingerprint


class JournalError(ValueError):
    pass


class Journal:
    def __init__(self, path: str | Path):
        self.dir = Path(path)
        self.file = self.dir / "journal.json"
        if self.file.is_file():
            try:
                self.data = json.loads(self.file.read_text())
            except json.JSONDecodeError as e:
                raise JournalError(f"{self.file}: not readable ({e})") from None
        else:
            self.data = {"base_fingerprint": None, "steps": []}

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]

    def _write(self) -> None:
        write_json(self.file, self.data)

    def _check_k(self, k: int | None) -> int:
        k = len(self.steps) if k is None else k
        if not 0 <= k <= len(self.steps):
            raise JournalError(f"step {k} does not exist; the journal {self.dir} has steps 0..{len(self.steps)}")
        return k

    def replay(self, model, upto: int | None = None) -> list[Delta]:
        """Apply steps 1..upto (default all) to ``model``, which must be the journal's base model."""
        k = self._check_k(upto)
        base = self.data["base_fingerprint"]
        if base and model_fingerprint(model) != base:
            raise JournalError(f"{self.dir} was started from different weights (model fingerprint differs)")
        deltas = []
        for step in self.steps[:k]:
            d = load_delta(self.dir / step["delta"])
            d.apply(model)
            deltas.append(d)
        return deltas

    def walk(self, model, upto: int | None = None) -> Iterator[int]:
        """Yield k = 0..upto with ``model`` (the base model) as steps 1..k left it, one step applied
        at a time, as the edits were; when the iteration ends, however it ends, the base weights
        are back bit-exactly. For measuring every step without reloading the model."""
        applied = []
        try:
            yield 0
            for step in self.steps[: self._check_k(upto)]:
                applied.append(load_delta(self.dir / step["delta"]))
                applied[-1].apply(model)
                yield len(applied)
        finally:
            for d in reversed(applied):
                d.revert(model)

    def prior(self, upto: int | None = None) -> dict[int, torch.Tensor]:
        """Σ K Kᵀ per layer (float64) over the keys of steps 1..upto, summed in step order."""
        out: dict[int, torch.Tensor] = {}
        for step in self.steps[: self._check_k(upto)]:
            for name, k in load_tensors(self.dir / step["keys"])[0].items():
                layer = int(name)
                kk = k.double() @ k.double().T
                out[layer] = out[layer] + kk if layer in out else kk
        return out

    def append(self, base_model_fingerprint: str, delta: Delta) -> int:
        """Record ``delta`` (made on the model as replayed to the last step) as the next step."""
        if self.data["base_fingerprint"] is None:
            self.data["base_fingerprint"] = base_model_fingerprint
        elif self.data["base_fingerprint"] != base_model_fingerprint:
            raise JournalError(f"{self.dir} was started from different weights (model fingerprint differs)")
        n = len(self.steps) + 1
        name = f"step-{n:04d}"
        delta.save(self.dir / f"{name}.safetensors")
        keys = {str(layer): k for layer, k in delta.aux.get("keys", {}).items()}
        save_tensors(self.dir / f"{name}.keys.safetensors", keys, {"step": n})
        self.steps.append({"delta": f"{name}.safetensors", "keys": f"{name}.keys.safetensors",
                           "method": delta.meta.get("method"), "n_requests": delta.meta.get("n_requests"),
                           "layers": delta.meta.get("layers"), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           **delta.meta.get("verification", {})})  # held, failed, rounds_used
        self._write()
        return n

    def revert_to(self, k: int) -> Path | None:
        """Keep steps 1..k; move the later ones' files into ``undone-<time>/``, which is returned."""
        k = self._check_k(k)
        later = self.steps[k:]
        if not later:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        undone, i = self.dir / f"undone-{stamp}", 1
        while undone.exists():
            i += 1
            undone = self.dir / f"undone-{stamp}-{i}"
        undone.mkdir()
        for step in later:
            for f in (step["delta"], step["keys"]):
                os.replace(self.dir / f, undone / f)
        (undone / "steps.json").write_text(json.dumps(later, indent=1))
        del self.steps[k:]
        self._write()
        return undone
