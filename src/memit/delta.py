"""The result of an edit: a set of weight changes that can be applied, reverted, saved, loaded.

Changes are stored in float32 in each weight's own storage orientation, keyed by parameter
name. Applying computes ``(W.float() + ΔW).to(W.dtype)``, the same operation the edit did, so a
saved delta reproduces the edited weights exactly. An edit made in several rounds stores its
changes in float64 (methods/rounds.py): then the sum is taken in float64, which lands on the
edited weights' bits. Reverting restores the weights that
``apply`` replaced (kept in memory), which is bit-exact; a delta loaded in another process
without a preceding ``apply`` can only subtract, which is exact only up to rounding.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from memit import weights
from memit.files import load_tensors, save_tensors
from memit.fingerprint import model_fingerprint


class DeltaError(ValueError):
    pass


@dataclass
class Delta:
    weights: dict[str, torch.Tensor]  # parameter name -> ΔW (float32 or float64, storage orientation)
    meta: dict = field(default_factory=dict)
    # In-memory by-products of the edit (target vectors, keys per layer); never saved.
    aux: dict = field(default_factory=dict, repr=False)
    _originals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _applied: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def _check(self, model: torch.nn.Module) -> None:
        for name, d in self.weights.items():
            try:
                p = model.get_parameter(name)
            except AttributeError:
                raise DeltaError(f"the model has no parameter {name!r}; this delta is for another model") from None
            if tuple(p.shape) != tuple(d.shape):
                raise DeltaError(f"{name}: delta shape {tuple(d.shape)} does not match weight {tuple(p.shape)}")

    @torch.no_grad()
    def apply(self, model: torch.nn.Module, *, check_fingerprint: bool = False) -> None:
        self._check(model)
        expected = self.meta.get("model_fingerprint") if check_fingerprint else None
        if expected and model_fingerprint(model) != expected:
            raise DeltaError("this delta was made for different weights (model fingerprint differs)")
        for name, d in self.weights.items():
            p = weights.read(model, name)
            self._originals[name] = p.detach().clone()
            weights.write(model, name, (p.float() + d.to(p.device)).to(p.dtype))
            self._applied[name] = weights.read(model, name).detach().clone()

    @torch.no_grad()
    def revert(self, model: torch.nn.Module) -> None:
        self._check(model)
        for name, d in self.weights.items():
            p = weights.read(model, name)
            if name in self._originals and torch.equal(p, self._applied[name]):
                weights.write(model, name, self._originals.pop(name))
                self._applied.pop(name)
            else:
                warnings.warn(f"{name}: reverting by subtraction (exact only up to rounding): "
                              "the weights were not changed by this Delta object's apply()")
                weights.write(model, name, (p.float() - d.to(p.device)).to(p.dtype))

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Apply for the duration of a ``with`` block, then restore the weights exactly."""
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        path = Path(path)
        if path.exists() and not overwrite:
            raise DeltaError(f"{path} exists; refusing to overwrite it")
        save_tensors(path, self.weights, self.meta)

    def norms(self) -> dict[str, float]:
        return {k: float(v.norm()) for k, v in self.weights.items()}


def load_delta(path: str | Path) -> Delta:
    tensors, meta = load_tensors(path)
    return Delta({k: v if v.dtype == torch.float64 else v.float() for k, v in tensors.items()}, meta)
