"""MEMIT (Meng et al., ICLR 2023): write many facts into a band of MLP output projections.

The edit is docs/algorithm.md §2: target vectors at the last edited layer, then for each edited layer
in order its keys, the residual spread over the layers still to update, and the closed-form
update Δ = R Kᵀ (λC₀ + KKᵀ)⁻¹ solved in float64.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch

from memit import hooks, weights
from memit.delta import Delta
from memit.diagnostics import max_key_overlap, spectrum, text_change, update_overlap
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams, default_hparams
from memit.lowrank import LowRank
from memit.methods.ridge import RidgeMatchNorm
from memit.models.arch import Arch, as_math, dims, get_arch, n_layers
from memit.postnorm import pre_norm_change
from memit.progress import tqdm
from memit.requests import EditRequest, RequestError, check_conflicts, validate, where_of
from memit.stats import stats_for
from memit.targets import Targets, compute_targets, generate_prefixes
from memit.tokens import TokenizationError, chunks, encode_filled, pad
from memit.weights import input_device


class EditError(ValueError):
    pass


COND_WARN = 1e10  # beyond this the float64 solve loses more than ~6 of its 16 digits


def solve_update(resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
    """Δ = R Kᵀ (λC₀ + KKᵀ)⁻¹ in float64, by a solve (never an explicit inverse).

    ``resid`` is (d_model, n), ``keys`` (d_ff, n), ``c0`` (d_ff, d_ff); Δ is (d_model, d_ff), of
    rank n. The system is symmetric, so Δ = R · solve(A, K)ᵀ, kept as those two factors.
    """
    k = keys.double()
    if lam == 0:  # no preservation: the minimum-norm Δ with ΔK = R (least squares if K is not full rank)
        return LowRank(resid.double(), torch.linalg.pinv(k))
    a = lam * c0.double() + k @ k.T
    return LowRank(resid.double(), torch.linalg.solve(a, k).T)


def _memit_solve(layer: int, resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
    return solve_update(resid, keys, c0, lam)


# (layer, resid (d_model, n), keys (d_ff, n), C₀, λ) -> update (d_model, d_ff) as factors: how a
# method turns the shared targets and keys into a weight change.
Solver = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, float], LowRank]


@torch.no_grad()
def _at_subject_last(model, tokenizer, encs: list, points: list[tuple[str, str]], batch_tokens: int,
                     padding_side: str, group: int = 1) -> list[torch.Tensor]:
    """For each (module name, "input" | "output") in ``points``, that tensor at each prompt's last
    subject token (rows, width). The forward pass stops right after the last point's module, so
    nothing above it is computed; ``points`` go in the order the forward pass reaches them."""
    device = input_device(model)
    out: list[list[torch.Tensor]] = [[] for _ in points]
    for rng in chunks([len(e.ids) for e in encs], batch_tokens, group=group):
        part = encs[rng.start: rng.stop]
        batch = pad([e.ids for e in part], tokenizer.pad_token_id or 0, padding_side).to(device)
        rows = list(range(len(part)))  # plain lists index a tensor on whichever device its layer is
        cols = [e.subject_last + s for e, s in zip(part, batch.shift)]
        with ExitStack() as stack:
            seen = [stack.enter_context(hooks.record(model, [name], what=what, stop=i == len(points) - 1))
                    for i, (name, what) in enumerate(points)]
            hooks.run(model.base_model, **batch.model_inputs())
        for acc, got, (name, _) in zip(out, seen, points):
            acc.append(got[name][rows, cols].float().cpu())
    return [torch.cat(acc) for acc in out]


def current_outputs(model, tokenizer, arch: Arch, requests: list[EditRequest], z_layer: int, batch_tokens: int,
                    padding_side: str = "right") -> torch.Tensor:
    """The output of block ``z_layer`` at the subject's last token of each bare prompt (n, d_model)."""
    encs = [encode_filled(tokenizer, r.prompt, r.subject) for r in requests]
    return _at_subject_last(model, tokenizer, encs, [(arch.block_name(z_layer), "output")], batch_tokens,
                            padding_side)[0]


def compute_keys(model, tokenizer, arch: Arch, requests: list[EditRequest], layer: int, z_layer: int,
                 prefixes: list[str], batch_tokens: int, padding_side: str = "right"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys at ``layer`` averaged over the prefixed prompts (d_ff, n), and the current output of
    block ``z_layer`` at the subject's last token of the bare prompt (n, d_model).

    When ``z_layer`` is above ``layer``, two passes: the many prefixed prompts run only up to
    ``layer``'s MLP, and the bare prompts alone go on to block ``z_layer`` (on a band of six
    layers that saves about a fifth of the keys' time). Otherwise (ROME) one pass gives both."""
    per = 1 + len(prefixes)
    encs = [encode_filled(tokenizer, r.prompt, r.subject, prefix=p) for r in requests for p in ["", *prefixes]]
    key_point, z_point = (arch.mlp_out_name(layer), "input"), (arch.block_name(z_layer), "output")
    one_pass = z_layer == layer
    got = _at_subject_last(model, tokenizer, encs, [key_point, z_point] if one_pass else [key_point],
                           batch_tokens, padding_side, group=per)
    keys = got[0].view(-1, per, got[0].shape[-1]).mean(1)
    cur = got[1][::per] if one_pass else current_outputs(model, tokenizer, arch, requests, z_layer, batch_tokens,
                                                         padding_side)
    return keys.T, cur


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


def edit(model, tokenizer, requests: list[EditRequest], hparams: MemitHyperParams | None = None, *,
         arch: Arch | dict | None = None, stats: dict[int, torch.Tensor] | None = None,
         targets: Targets | None = None, apply: bool = True, progress: bool = True,
         checkpoint: str | Path | None = None, solver: Solver | None = None, method: str = "memit",
         fingerprint: str | None = None, text_stats: dict[int, torch.Tensor] | None = None) -> Delta:
    """Edit ``model`` so it states each request's ``target_new``; return the weight changes.

    With ``apply=True`` (default) the model is left edited and ``delta.revert(model)`` restores it
    bit-exactly; with ``apply=False`` the model is restored before returning. ``stats`` may hold
    precomputed C₀ per layer; otherwise they are loaded from the cache or computed. ``targets``
    may hold target vectors from an earlier edit of the same requests with the same last layer and
    prefixes (``delta.aux["targets"]``): sweeps over λ or the first layer then skip that phase.
    ``checkpoint`` names a directory where each request's target vector is saved as soon as it is
    found, under a key of model, request, last layer, prefixes and ``hp.target_dict()``: an
    interrupted long edit resumes there, and later edits that share requests and differ only in
    λ, the lower layers, the preservation term or the other requests skip their optimisation. ``solver`` replaces MEMIT's closed form (other methods
    share everything else); ``method`` names it in the metadata. ``fingerprint`` may give the
    model's fingerprint when the caller already knows it (hashing the weights takes a second).
    ``text_stats`` is the plain C₀ for the text-change diagnostic when ``stats`` holds more than
    that (MEMIT-seq adds the earlier batches' keys).
    """
    if not isinstance(arch, Arch):
        arch = get_arch(model, arch)
    total = n_layers(model, arch)
    hp = hparams or default_hparams(model.config.model_type, total)
    check_layers(hp.layers, total)
    check_requests(tokenizer, requests, getattr(model.config, "max_position_embeddings", None))
    _d_model, d_ff = dims(model, arch)
    lam = hp.lambda_for(d_ff) if hp.preservation != "none" else 0.0
    if hp.preservation not in ("cov", "identity", "none"):
        raise EditError(f"preservation must be cov, identity or none, not {hp.preservation!r}")
    if hp.match_rel_norms is not None:
        if hp.preservation != "identity" or len(hp.match_rel_norms) != len(hp.layers):
            raise EditError("match_rel_norms needs preservation 'identity' and one value per edited layer")
        norms = {layer: rel * float(as_math(weights.read(model, arch.mlp_out_name(layer) + ".weight"), arch).float().norm())
                 for layer, rel in zip(hp.layers, hp.match_rel_norms)}
        solver = solver or RidgeMatchNorm(norms)
    timings: dict[str, float] = {}
    fingerprint = fingerprint or model_fingerprint(model)

    t = time.perf_counter()
    if hp.preservation != "cov":  # the ablations of the preservation term: C₀ → I (ridge) or λ = 0
        stats = {layer: torch.eye(d_ff, dtype=torch.float64) for layer in hp.layers}
    elif stats is None or any(layer not in stats for layer in hp.layers):
        stats = stats_for(model, tokenizer, hp, progress=progress)
    timings["stats"] = time.perf_counter() - t
    if hp.ridge and hp.preservation == "cov" and solver is None:  # λ(C₀ + ridge·tr(C₀)/d_ff·I): λC₀ + λ_I·I
        plain = text_stats or stats
        stats = {layer: c + hp.ridge * float(plain[layer].trace()) / d_ff * torch.eye(d_ff, dtype=c.dtype)
                 if layer in hp.layers else c for layer, c in stats.items()}
        text_stats = plain

    t = time.perf_counter()
    prefixes = hp.prefixes if hp.prefixes is not None else generate_prefixes(
        model, tokenizer, hp.prefix_starts, hp.prefix_tokens, hp.seed)
    timings["prefixes"] = time.perf_counter() - t

    t = time.perf_counter()
    z_layer = hp.layers[-1]
    if targets is None:
        settings = [fingerprint, z_layer, prefixes, hp.target_dict()]
        keys = [hashlib.sha256(json.dumps(settings + [dataclasses.astuple(r)], sort_keys=True, default=str).encode())
                .hexdigest() for r in requests]
        targets = compute_targets(model, tokenizer, arch, requests, z_layer, prefixes, hp, progress,
                                  store=checkpoint, keys=keys)
    elif targets.z.shape[0] != len(requests):
        raise EditError(f"given target vectors are for {targets.z.shape[0]} requests, not {len(requests)}")
    timings["targets"] = time.perf_counter() - t
    if not torch.isfinite(targets.z).all():
        raise EditError(f"target vectors at layer {z_layer} are not finite; nothing was changed")

    deltas: dict[str, torch.Tensor] = {}
    factors: dict[str, LowRank] = {}
    all_keys: dict[int, torch.Tensor] = {}
    originals: dict[str, torch.Tensor] = {}
    layer_info = []
    spectra: dict[int, dict] = {}
    per_request_overlap: dict[int, list[float]] = {}
    timings["keys"] = timings["solve"] = timings["diagnostics"] = 0.0
    try:
        for i, layer in enumerate(tqdm(hp.layers, desc="layers", disable=not progress)):
            t = time.perf_counter()
            keys, cur_z = compute_keys(model, tokenizer, arch, requests, layer, z_layer, prefixes,
                                           hp.batch_tokens, hp.padding_side)
            for what, x in (("keys", keys), ("current outputs", cur_z), ("statistics C₀", stats[layer])):
                if not torch.isfinite(x).all():
                    raise EditError(f"layer {layer}: {what} contain NaN/Inf; the edit was refused and the model restored")
            all_keys[layer] = keys
            timings["keys"] += time.perf_counter() - t
            t = time.perf_counter()
            resid = (targets.z - cur_z).T / (len(hp.layers) - i)  # (d_model, n)
            name = arch.mlp_out_name(layer) + ".weight"
            weight = weights.read(model, name)  # wherever it lives, offloaded included
            dev = weights.execution_device(model, name)  # the layer's own device; the model is never gathered
            dev = dev if dev.type != "mps" else torch.device("cpu")  # MPS: no float64
            if arch.post_mlp_norm:  # Gemma 2/3: the change the norm after the MLP turns into resid
                y = as_math(weight, arch).to(dev).double() @ keys.to(dev).double()
                resid = pre_norm_change(model.get_submodule(arch.post_mlp_norm_name(layer)), y, resid.to(dev).double())
            lr = (solver or _memit_solve)(layer, resid.to(dev), keys.to(dev), stats[layer].to(dev), lam)
            lr = lr.stored_as(arch.conv1d)
            upd = lr.dense()
            if not torch.isfinite(upd).all():
                raise EditError(f"layer {layer}: the update is not finite (NaN/Inf); the model was restored")
            upd = upd.float()
            factors[name] = LowRank(lr.left.cpu(), lr.right.cpu(), lr.transposed)
            with torch.no_grad():
                originals[name] = weight.detach().clone()
                weights.write(model, name, (weight.float() + upd.to(weight.device)).to(weight.dtype))
            deltas[name] = upd.cpu()
            timings["solve"] += time.perf_counter() - t
            t = time.perf_counter()
            extra = {}
            if hasattr(solver, "condition"):  # the method's own system
                cond = solver.condition(layer, keys, stats[layer], lam)
            elif lam > 0:
                spec = spectrum(keys, stats[layer], lam)
                cond = spec["cond"] if spec else None
                overlap = update_overlap(keys, stats[layer], lam)
                if spec:
                    spectra[layer] = {"eig": spec.pop("eig"), "eig_kk": spec.pop("eig_kk")}
                    extra |= {"cond_kk": spec["cond_kk"], "rank_kk": spec["rank_kk"]}
                if overlap:
                    per_request_overlap[layer] = overlap.pop("per_request")
                    extra["update_overlap"] = overlap
            else:
                cond = None
            if hasattr(solver, "layer_info"):
                extra |= solver.layer_info(layer)
            if hp.preservation == "cov":
                extra["text_change"] = text_change(upd.T if arch.conv1d else upd, as_math(originals[name], arch),
                                                   (text_stats or stats)[layer])
            if cond is not None and cond > COND_WARN:
                warnings.warn(f"layer {layer}: the system λC₀ + KKᵀ is poorly conditioned (cond {cond:.2e}); "
                              "consider a larger λ or more statistics tokens", stacklevel=2)
            layer_info.append({
                "layer": layer,
                "resid_norm": float((targets.z - cur_z).norm(dim=1).mean()),
                "delta_rel_norm": float(upd.norm() / as_math(originals[name], arch).float().norm()),
                "cond": cond,
                "max_key_overlap": max_key_overlap(keys),
                **extra,
            })
            timings["diagnostics"] += time.perf_counter() - t
        t = time.perf_counter()  # how much of the way to the targets the edited model went (bare prompts)
        reached = current_outputs(model, tokenizer, arch, requests, z_layer, hp.batch_tokens, hp.padding_side)
        resid_after = float((targets.z - reached).norm(dim=1).mean())
        timings["diagnostics"] += time.perf_counter() - t
    except BaseException:
        for name, w in originals.items():
            weights.write(model, name, w)
        raise

    meta = {
        "method": method,
        "model_type": model.config.model_type,
        "model_fingerprint": fingerprint,
        "layers": hp.layers,
        "lambda": lam,
        "hparams": hp.to_dict() | {"prefixes": prefixes},
        "n_requests": len(requests),
        "targets_from_cache": targets.cached,
        "requests": [
            {"case_id": r.case_id, "subject": r.subject, "target_new": r.target_new,
             "loss": targets.loss[j], "nll": targets.nll[j], "steps": targets.steps[j],
             "clamped": targets.clamped[j], "converged": targets.converged[j],
             "stop": targets.stop[j] if targets.stop else None, "margin": targets.margin[j] if targets.margin else None,
             "max_update_overlap": max((v[j] for v in per_request_overlap.values()), default=None)}
            for j, r in enumerate(requests)
        ],
        "layers_info": layer_info,
        "resid_after": resid_after,
        "timings": timings,
    }
    aux = {"targets": targets, "keys": all_keys, "spectra": spectra}
    if apply:
        return Delta.written(model, originals, deltas, meta, factors, aux)
    for name, w in originals.items():
        weights.write(model, name, w)
    return Delta(deltas, meta, factors, aux)
