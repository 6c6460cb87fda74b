"""MEMIT (Meng et al., ICLR 2023): write many facts into a band of MLP output projections.

The edit is docs/algorithm.md §2, as a pipeline of small steps: validate, statistics, target
vectors at the last edited layer, then for each edited layer in order its keys, the residual
spread over the layers still to update, the solve (a Solver: methods/solver.py) and the write,
and finally the report. Every closed-form method runs this pipeline with its own Solver.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from memit import postnorm, weights
from memit.delta import Delta
from memit.diagnostics import max_key_overlap, text_change
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams, default_hparams
from memit.keys import Walk
from memit.lowrank import LowRank
from memit.methods.ridge import RidgeMatchNorm
from memit.methods.solver import MemitSolve, Solver
from memit.models.arch import Arch, as_math, dims, get_arch, n_layers
from memit.progress import tqdm
from memit.prompts import generate_prefixes
from memit.requests import EditRequest, RequestError, check_conflicts, validate, where_of
from memit.residual import typical_norm
from memit.stats import stats_for
from memit.targets import Targets, compute_targets
from memit.tokens import TokenizationError, encode_filled


class EditError(ValueError):
    pass


COND_WARN = 1e10  # beyond this the float64 solve loses more than ~6 of its 16 digits


def memit_solver(hp: MemitHyperParams, prior: dict[int, torch.Tensor] | None = None, name: str = "memit",
                 drift: dict[int, torch.Tensor] | None = None) -> MemitSolve:
    """MEMIT's own system: ridge, earlier keys and drift belong to the C₀ preservation term, so the
    ablations without it (``preservation``) drop them."""
    cov = hp.preservation == "cov"
    return MemitSolve(hp.ridge if cov else 0.0, prior if cov else None, name, drift if cov else None)


def edit(model, tokenizer, requests: list[EditRequest], hparams: MemitHyperParams | None = None, *,
         arch: Arch | dict | None = None, stats: dict[int, torch.Tensor] | None = None,
         targets: Targets | None = None, apply: bool = True, progress: bool = True,
         checkpoint: str | Path | None = None, solver: Solver | None = None,
         fingerprint: str | None = None) -> Delta:
    """Edit ``model`` so it states each request's ``target_new``; return the weight changes.

    With ``apply=True`` (default) the model is left edited and ``delta.revert(model)`` restores it
    bit-exactly; with ``apply=False`` the model is restored before returning. ``stats`` may hold
    precomputed C₀ per layer; otherwise they are loaded from the cache or computed. ``targets``
    may hold target vectors from an earlier edit of the same requests with the same last layer and
    prefixes (``delta.aux["targets"]``): sweeps over λ or the first layer then skip that phase.
    ``checkpoint`` names a directory where each request's target vector is saved as soon as it is
    found, under a key of model, request, last layer, prefixes and ``hp.target_dict()``: an
    interrupted long edit resumes there, and later edits that share requests and differ only in
    λ, the lower layers, the preservation term or the other requests skip their optimisation.
    ``solver`` is the method's per-layer system (MEMIT's own by default); its ``name`` names the
    method in the metadata. ``fingerprint`` may name the model when the caller already knows it
    (hashing the weights takes a second; ROME names each step of its sequence this way).
    """
    with weights.frozen(model):  # a user's model may ask for gradients, or be in training mode
        e = _setup(model, tokenizer, requests, hparams, arch, solver, fingerprint, progress)
        _statistics(e, stats)
        _targets(e, targets, checkpoint)
        try:
            for i, layer in enumerate(tqdm(e.hp.layers, desc="layers", disable=not progress)):
                _write_layer(e, i, layer)
            t = time.perf_counter()  # how much of the way to the targets the edited model went (bare prompts)
            reached = e.walk.current(model)
            e.resid_after = float((e.targets.z - reached).norm(dim=1).mean())
            e.timings["diagnostics"] += time.perf_counter() - t
        except BaseException:
            _restore(e)
            raise
        meta = _report(e)
        aux = {"targets": e.targets, "keys": e.keys, "spectra": e.solver.aux().get("spectra", {})}
        if apply:
            return Delta.written(model, e.originals, e.deltas, meta, e.factors, aux)
        _restore(e)
        return Delta(e.deltas, meta, e.factors, aux)


@dataclass
class _Edit:
    """One edit as it goes through the pipeline: the settings, then what each step found."""
    model: object
    tokenizer: object
    requests: list[EditRequest]
    arch: Arch
    hp: MemitHyperParams
    solver: Solver
    lam: float
    d_ff: int
    fingerprint: str
    progress: bool
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[int, torch.Tensor] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)
    targets: Targets | None = None
    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, LowRank] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    layer_info: list[dict] = field(default_factory=list)
    resid_after: float | None = None
    walk: Walk | None = None  # the prompts carried up the band (keys.py)


def _setup(model, tokenizer, requests, hparams, arch, solver, fingerprint, progress) -> _Edit:
    """Validate everything before any work: layers, requests, the preservation term."""
    if not isinstance(arch, Arch):
        arch = get_arch(model, arch)
    total = n_layers(model, arch)
    hp = hparams or default_hparams(model.config.model_type, total)
    check_layers(hp.layers, total)
    check_requests(tokenizer, requests, getattr(model.config, "max_position_embeddings", None))
    if hp.preservation not in ("cov", "identity", "none"):
        raise EditError(f"preservation must be cov, identity or none, not {hp.preservation!r}")
    if hp.diagnostics not in ("cheap", "full"):
        raise EditError(f"diagnostics must be cheap or full, not {hp.diagnostics!r}")
    _d_model, d_ff = dims(model, arch)
    lam = hp.lambda_for(d_ff) if hp.preservation != "none" else 0.0
    if hp.match_rel_norms is not None:
        if hp.preservation != "identity" or len(hp.match_rel_norms) != len(hp.layers):
            raise EditError("match_rel_norms needs preservation 'identity' and one value per edited layer")
        norms = {layer: rel * float(as_math(weights.read(model, arch.mlp_out_name(layer) + ".weight"), arch).float().norm())
                 for layer, rel in zip(hp.layers, hp.match_rel_norms)}
        solver = solver or RidgeMatchNorm(norms)
    return _Edit(model, tokenizer, requests, arch, hp, solver or memit_solver(hp), lam, d_ff,
                 fingerprint or model_fingerprint(model), progress)


def _statistics(e: _Edit, stats: dict[int, torch.Tensor] | None) -> None:
    t = time.perf_counter()
    if e.hp.preservation != "cov":  # the ablations of the preservation term: C₀ → I (ridge) or λ = 0
        stats = {layer: torch.eye(e.d_ff, dtype=torch.float64) for layer in e.hp.layers}
    elif stats is None or any(layer not in stats for layer in e.hp.layers):
        stats = stats_for(e.model, e.tokenizer, e.hp, progress=e.progress)
    e.stats = stats
    e.timings["stats"] = time.perf_counter() - t


def _targets(e: _Edit, targets: Targets | None, checkpoint) -> None:
    hp = e.hp
    t = time.perf_counter()
    e.prefixes = hp.prefixes if hp.prefixes is not None else generate_prefixes(
        e.model, e.tokenizer, hp.prefix_starts, hp.prefix_tokens, hp.seed)
    e.timings["prefixes"] = time.perf_counter() - t
    t = time.perf_counter()
    z_layer = hp.layers[-1]
    if targets is None:
        ref = None
        if hp.clamp_ref == "typical":
            ref = typical_norm(e.model, e.tokenizer, e.arch, z_layer, hp.stats_corpus)
        elif hp.clamp_ref != "fact":
            raise EditError(f"clamp_ref must be fact or typical, not {hp.clamp_ref!r}")
        settings = [e.fingerprint, z_layer, e.prefixes, hp.target_dict()] + ([ref] if ref is not None else [])
        if e.arch.post_mlp_norm and hp.post_norm_delta == "mlp":  # not the δ that earlier caches hold
            settings += ["mlp", hp.v_lr_post_norm]
        keys = [hashlib.sha256(json.dumps(settings + [dataclasses.astuple(r)], sort_keys=True, default=str).encode())
                .hexdigest() for r in e.requests]
        targets = compute_targets(e.model, e.tokenizer, e.arch, e.requests, z_layer, e.prefixes, hp, e.progress,
                                  store=checkpoint, keys=keys, ref_norm=ref)
    elif targets.z.shape[0] != len(e.requests):
        raise EditError(f"given target vectors are for {targets.z.shape[0]} requests, not {len(e.requests)}")
    e.timings["targets"] = time.perf_counter() - t
    if not torch.isfinite(targets.z).all():
        raise EditError(f"target vectors at layer {z_layer} are not finite; nothing was changed")
    e.targets = targets
    e.timings["keys"] = e.timings["solve"] = e.timings["diagnostics"] = 0.0


def _write_layer(e: _Edit, i: int, layer: int) -> None:
    """Keys, residual, solve and write at edited layer ``i`` (``layer``), then its diagnostics."""
    hp, arch, model, c0 = e.hp, e.arch, e.model, e.stats[layer]
    t = time.perf_counter()
    if e.walk is None:
        e.walk = Walk(model, e.tokenizer, arch, e.requests, hp.layers[-1], e.prefixes, hp.batch_tokens, hp.padding_side)
    keys, cur_z = e.walk.at(model, layer)
    for what, x in (("keys", keys), ("current outputs", cur_z), ("statistics C₀", c0)):
        if not torch.isfinite(x).all():
            raise EditError(f"layer {layer}: {what} contain NaN/Inf; the edit was refused and the model restored")
    e.keys[layer] = keys
    e.timings["keys"] += time.perf_counter() - t

    t = time.perf_counter()
    resid = (e.targets.z - cur_z).T / _spread(e, i)  # (d_model, n)
    name = arch.mlp_out_name(layer) + ".weight"
    weight = weights.read(model, name)  # wherever it lives, offloaded included
    dev = weights.execution_device(model, name)  # the layer's own device; the model is never gathered
    dev = dev if dev.type != "mps" else torch.device("cpu")  # MPS: no float64
    if arch.post_mlp_norm:  # Gemma 2/3: the change the norm after the MLP turns into resid
        y = as_math(weight, arch).to(dev).double() @ keys.to(dev).double()
        resid = postnorm.pre_norm_change(model.get_submodule(arch.post_mlp_norm_name(layer)), y, resid.to(dev).double())
    lr = e.solver.solve(layer, resid.to(dev), keys.to(dev), c0.to(dev), e.lam).stored_as(arch.conv1d)
    upd = lr.dense()
    if not torch.isfinite(upd).all():
        raise EditError(f"layer {layer}: the update is not finite (NaN/Inf); the model was restored")
    upd = upd.float()
    e.factors[name] = LowRank(lr.left.cpu(), lr.right.cpu(), lr.transposed)
    with torch.no_grad():
        e.originals[name] = weight.detach().clone()
        weights.write(model, name, (weight.float() + upd.to(weight.device)).to(weight.dtype))
    e.deltas[name] = upd.cpu()
    e.timings["solve"] += time.perf_counter() - t

    t = time.perf_counter()
    cond = e.solver.condition(layer, keys, c0, e.lam)
    if cond is not None and cond > COND_WARN:
        warnings.warn(f"layer {layer}: the system λC₀ + KKᵀ is poorly conditioned (cond {cond:.2e}); "
                      "consider a larger λ or more statistics tokens", stacklevel=3)
    extra = e.solver.layer_info(layer, keys, c0, e.lam, hp.diagnostics == "full")
    if hp.preservation == "cov":
        extra["text_change"] = text_change(upd.T if arch.conv1d else upd, as_math(e.originals[name], arch), c0)
    w0 = as_math(e.originals[name], arch).float()
    e.layer_info.append({"layer": layer, "resid_norm": float((e.targets.z - cur_z).norm(dim=1).mean()),
                         "delta_rel_norm": float(upd.norm() / w0.norm()), "cond": cond,
                         "max_key_overlap": max_key_overlap(keys), **extra})
    e.timings["diagnostics"] += time.perf_counter() - t


def _spread(e: _Edit, i: int) -> float:
    """Layer ``i`` writes 1/spread of the change still missing: the paper's even split, or, after a
    norm on the MLP output (Gemma 2/3), a share in proportion to the length ‖γ‖ of what each layer
    left can write, which grows tenfold and more along the band."""
    if not e.arch.post_mlp_norm:
        return len(e.hp.layers) - i
    r = postnorm.reach(e.model, [e.arch.post_mlp_norm_name(layer) for layer in e.hp.layers[i:]])
    return sum(r) / r[0]


def _restore(e: _Edit) -> None:
    for name, w in e.originals.items():
        weights.write(e.model, name, w)


def _report(e: _Edit) -> dict:
    """The delta's metadata: settings, per request how its target vector ended, per layer the
    diagnostics, and the time of each phase."""
    t, hp = e.targets, e.hp
    overlap = e.solver.aux().get("per_request_overlap", {})
    return {
        "method": e.solver.name,
        "model_type": e.model.config.model_type,
        "model_fingerprint": e.fingerprint,
        "layers": hp.layers,
        "lambda": e.lam,
        "hparams": hp.to_dict() | {"prefixes": e.prefixes},
        "n_requests": len(e.requests),
        "targets_from_cache": t.cached,
        "requests": [
            {"case_id": r.case_id, "subject": r.subject, "target_new": r.target_new,
             "loss": t.loss[j], "nll": t.nll[j], "steps": t.steps[j],
             "clamped": t.clamped[j], "converged": t.converged[j],
             "stop": t.stop[j] if t.stop else None, "margin": t.margin[j] if t.margin else None,
             "max_update_overlap": max((v[j] for v in overlap.values()), default=None)}
            for j, r in enumerate(e.requests)
        ],
        "layers_info": e.layer_info,
        "resid_after": e.resid_after,
        "timings": e.timings,
    }


def check_layers(layers: list[int], total: int) -> None:
    if not layers:
        raise EditError("no layers to edit")
    bad = [layer for layer in layers if not 0 <= layer < total]
    if bad:
        raise EditError(f"layers {bad} out of range: the model has blocks 0..{total - 1}")
    if sorted(set(layers)) != list(layers):
        raise EditError(f"layers must be distinct and increasing, got {layers}")


def check_requests(tokenizer, requests: list[EditRequest], max_len: int | None) -> None:
    if not requests:
        raise RequestError("no requests to edit")
    for i, r in enumerate(requests):
        where = where_of(i, r.case_id, "request")
        validate(r, where)
        try:
            enc = encode_filled(tokenizer, r.prompt, r.subject, r.target_new, where=where)
        except TokenizationError as e:
            raise RequestError(str(e)) from None
        if max_len and len(enc.ids) > max_len:
            raise RequestError(f"{where}: field 'prompt' is {len(enc.ids)} tokens, longer than the model's context ({max_len})")
    check_conflicts(requests)


