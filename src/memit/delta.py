"""The result of an edit: a set of weight changes that can be applied, reverted, saved, loaded.

Changes are stored in float32 in each weight's own storage orientation, keyed by parameter
name. Applying computes ``(W.float() + ΔW).to(W.dtype)``, the same operation the edit did, so a
saved delta reproduces the edited weights exactly. An edit made in several rounds stores its
changes in float64 (methods/rounds.py): then the sum is taken in float64, which lands on the
edited weights' bits. Reverting restores the weights that
``apply`` replaced (kept in memory), which is bit-exact; a delta loaded in another process
without a preceding ``apply`` can only subtract, which is exact only up to rounding.

Where a change was made as factors (lowrank.py), the Delta keeps them beside the dense change,
and a saved file holds whichever of the two is smaller: the factors of an edit of a few facts are
a small fraction of the dense matrix. Loading rebuilds the dense change by the same product the
edit applied, so both forms reproduce the edited weights to the bit.
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
from memit.lowrank import LowRank

FACTORED = "factored"  # meta key: {name: {"dtype": ..., "transposed": ...}} for weights saved as factors


class DeltaError(ValueError):
    pass


@dataclass
class Delta:
    weights: dict[str, torch.Tensor]  # parameter name -> ΔW (float32 or float64, storage orientation)
    meta: dict = field(default_factory=dict)
    # The same changes as factors, where the method made them so: weights[n] == factors[n].dense()
    # cast to weights[n]'s dtype, exactly.
    factors: dict[str, LowRank] = field(default_factory=dict)
    # In-memory by-products of the edit (target vectors, keys per layer); never saved.
    aux: dict = field(default_factory=dict, repr=False)
    _originals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _applied: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def written(cls, model: torch.nn.Module, originals: dict[str, torch.Tensor], changes: dict[str, torch.Tensor],
                meta: dict, factors: dict[str, LowRank] | None = None, aux: dict | None = None) -> Delta:
        """The Delta of a change an edit has already written into ``model``; ``originals`` are the
        weights before it. It reverts exactly, as if it had been ``apply``-ed."""
        out = cls(changes, meta, factors or {}, aux or {})
        out._originals = dict(originals)
        out._applied = {n: weights.read(model, n).detach().clone() for n in changes}
        return out

    def original(self, name: str) -> torch.Tensor:
        """The weight ``name`` as it was before this Delta was applied or written."""
        return self._originals[name]

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
        """Each weight as its factors where they are smaller than the dense change, else dense."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise DeltaError(f"{path} exists; refusing to overwrite it")
        tensors, factored = {}, {}
        for name, d in self.weights.items():
            f = self.factors.get(name)
            if f is not None and f.nbytes() < d.numel() * d.element_size():
                tensors[f"{name}:left"], tensors[f"{name}:right"] = f.left.double(), f.right.double()
                factored[name] = {"dtype": str(d.dtype).removeprefix("torch."), "transposed": f.transposed}
            else:
                tensors[name] = d
        meta = {k: v for k, v in self.meta.items() if k != FACTORED} | ({FACTORED: factored} if factored else {})
        save_tensors(path, tensors, meta)

    def norms(self) -> dict[str, float]:
        return {k: float(v.norm()) for k, v in self.weights.items()}


def load_delta(path: str | Path) -> Delta:
    """A saved Delta, dense or factored (or both, weight by weight)."""
    tensors, meta = load_tensors(path)
    factored = meta.pop(FACTORED, {})
    changes, factors = {}, {}
    for name, info in factored.items():
        try:
            f = LowRank(tensors.pop(f"{name}:left"), tensors.pop(f"{name}:right"), bool(info["transposed"]))
        except KeyError:
            raise DeltaError(f"{path}: the factors of {name} are missing") from None
        factors[name] = f
        changes[name] = f.dense().to(getattr(torch, info["dtype"]))
    changes |= {k: v if v.dtype == torch.float64 else v.float() for k, v in tensors.items()}
    return Delta(changes, meta, factors=factors)
