"""Target vectors z_i: what block l_L should output at the subject's last token so that the
model emits target_new (docs/algorithm.md §2.1).

Requests are optimised together in chunks of prompt rows (chunk.py: each step runs only the
blocks above l_L), each with its own δ, Adam state and early stop (finished ones leave the
batch).

When a request stops is ``hp.stop`` (stopping.py); which rows it is optimised on, prompts.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from memit import postnorm
from memit.chunk import Chunk
from memit.files import CorruptFileError, load_tensors, save_tensors
from memit.hparams import MemitHyperParams
from memit.models.arch import Arch
from memit.progress import tqdm
from memit.prompts import request_rows
from memit.requests import EditRequest
from memit.stopping import stop_reason
from memit.tokens import chunks


@dataclass
class Targets:
    z: torch.Tensor  # (n, d_model) float32: h + δ
    h: torch.Tensor  # (n, d_model) float32: block output before the edit
    loss: list[float]
    nll: list[float]
    steps: list[int]
    clamped: list[bool]
    converged: list[bool]
    # Why each request stopped: "margin", "plateau", "loss" or "cap"; and its final margin (nats,
    # the smallest over its target tokens and prompt rows; negative: some token is not top-1).
    stop: list[str] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    cached: int = 0  # how many were read from the checkpoint, not optimised here (their time is not in this edit)


def compute_targets(model, tokenizer, arch: Arch, requests: list[EditRequest], layer: int,
                    prefixes: list[str], hp: MemitHyperParams, progress: bool = True,
                    store: str | Path | None = None, keys: list[str] | None = None,
                    ref_norm: float | None = None) -> Targets:
    """Target vectors for all requests.

    With ``store`` (a directory) and ``keys`` (one per request: a fingerprint of the model, the
    request, the layer, the prefixes and the settings), each request's result is saved there as
    soon as its chunk finishes, and a request found there is not optimised again. Requests are
    optimised independently (own δ, Adam state and early stop), so this is the same result up
    to float summation order: an interrupted run resumes, and runs that share requests (the first
    100 records inside the first 1,000, another λ or first layer) share their optimisation.
    ``ref_norm`` (with ``hp.clamp_ref`` "typical") is the norm the clamp is a share of.
    """
    if hp.post_norm_delta not in ("mlp", "residual"):
        raise ValueError(f"post_norm_delta must be mlp or residual, not {hp.post_norm_delta!r}")
    pre_norm = arch.post_mlp_norm is not None and hp.post_norm_delta == "mlp"
    if pre_norm and ref_norm is not None:
        raise ValueError("clamp_ref 'typical' bounds a residual δ; with post_norm_delta 'mlp' δ moves the MLP output")
    if (hp.clamp_ref == "typical") != (ref_norm is not None):
        raise ValueError(f"clamp_ref {hp.clamp_ref!r} wants ref_norm {'given' if hp.clamp_ref == 'typical' else 'None'}")
    n = len(requests)
    d_model = model.get_output_embeddings().weight.shape[1]
    z, h = torch.zeros(n, d_model), torch.zeros(n, d_model)
    res = [_Result() for _ in range(n)]  # per request, filled in as each one finishes
    todo = []
    for i in range(n):
        found = _load(store, keys[i]) if store else None
        if found is None:
            todo.append(i)
        else:
            z[i], h[i], meta = found
            res[i] = _Result(**{k: meta.get(k, v) for k, v in asdict(res[i]).items()})
            if "stop" not in meta:  # stored before stop reasons were recorded: the paper's rule ran
                res[i].stop = "loss" if res[i].loss < hp.v_loss_threshold else "cap"
    rows = request_rows(tokenizer, [requests[i] for i in todo], prefixes) if todo else []
    per_req = len(rows[0]) if rows else 1
    # Requests with similar suffix lengths share a chunk, so little of each step is padding.
    order = sorted(range(len(todo)), key=lambda j: (max(len(e.ids) - e.subject_last for e in rows[j]),
                                                    max(e.subject_last for e in rows[j])))
    flat = [e for j in order for e in rows[j]]
    ranges = list(chunks([len(e.ids) for e in flat], hp.batch_tokens, group=per_req)) if flat else []
    bar = tqdm(total=len(ranges) * hp.v_num_grad_steps, unit="step", disable=not progress,
               desc=f"target vectors ({len(todo)} requests, layer {layer}" + (f"; {n - len(todo)} stored)" if store else ")"))
    for rng in ranges:
        reqs = [todo[order[j]] for j in range(rng.start // per_req, rng.stop // per_req)]
        with torch.no_grad():
            chunk = Chunk(model, arch, layer, flat[rng.start: rng.stop], per_req, tokenizer.pad_token_id or 0,
                          pre_norm=pre_norm)
        z[reqs], h[reqs] = _optimise(model, arch, chunk, [res[i] for i in reqs], hp, bar, ref_norm)
        for i in reqs if store else []:
            save_tensors(Path(store) / f"{keys[i][:32]}.safetensors", {"z": z[i], "h": h[i]},
                         {"key": keys[i]} | asdict(res[i]))
    bar.close()
    return Targets(z, h, [r.loss for r in res], [r.nll for r in res], [r.steps for r in res],
                   [r.clamped for r in res], [r.loss < hp.v_loss_threshold for r in res], [r.stop for r in res],
                   [r.margin for r in res], n - len(todo))


@dataclass
class _Result:
    """How one request's optimisation ended, or stands while it runs."""
    loss: float = 0.0
    nll: float = 0.0
    steps: int = 0
    clamped: bool = False
    stop: str | None = "cap"
    margin: float = float("nan")


def _load(store: str | Path, key: str) -> tuple | None:
    """(z, h, metadata) of a stored request, or None when absent or damaged."""
    file = Path(store) / f"{key[:32]}.safetensors"
    if not file.is_file():
        return None
    try:
        tensors, meta = load_tensors(file)
    except CorruptFileError:
        return None
    if meta.get("key") != key:
        return None
    return tensors["z"], tensors["h"], meta


def _optimise(model, arch, chunk: Chunk, results: list[_Result], hp, bar, ref_norm: float | None = None):
    """Adam on one δ per request of the chunk (docs/algorithm.md §2.1); returns (z, h) for them.
    ``results`` (one per request of the chunk) get each one's loss, NLL, steps, clamp, stop
    reason and margin as it goes."""
    if hp.stop not in ("paper", "margin"):
        raise ValueError(f"stop must be paper or margin, not {hp.stop!r}")
    if hp.v_init not in ("zero", "gradient"):
        raise ValueError(f"v_init must be zero or gradient, not {hp.v_init!r}")
    k = len(results)
    device = chunk.ids.device
    d_model = model.get_output_embeddings().weight.shape[1]
    delta = torch.zeros(k, d_model, device=device, requires_grad=True)
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)
    h = chunk.h.detach().float().to(device)  # bare prompt, before any δ
    pre = chunk.y is not None  # δ in units of rms(y) on the MLP output y before the norm (see Chunk)
    y0 = chunk.y.detach().float().to(device) if pre else None
    unit = y0.pow(2).mean(1, keepdim=True).sqrt() if pre else None
    lr = hp.v_lr_post_norm if pre else hp.v_lr
    # the clamp as one number for all: √d for δ on y in rms units (c·√d is c·‖y‖), or the typical norm
    fixed = d_model ** 0.5 if pre else ref_norm
    kl_init = None
    live = list(range(k))
    history: list[list[float]] = [[] for _ in range(k)]  # margin per step, for the plateau stop
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(hp.v_num_grad_steps):
        idx = torch.tensor(live, device=device)

        def add(out, row_req, y, idx=idx):
            d = delta[idx][row_req.to(delta.device)]
            if pre:
                d = postnorm.output_change(chunk.norm, y.float(), d.to(y.device) * unit[idx][row_req.to(device)].to(y.device))
            return out + d.to(out.device, out.dtype)

        tok_nll, kl_lp, margin = chunk.forward(model, arch, live, add)
        if kl_init is None:
            kl_init = kl_lp.detach()
        init = kl_init[idx]
        kl = (init.exp() * (init - kl_lp)).sum(-1)
        # ‖δ‖ relative to what it moves, over ‖h‖ (the paper's ‖δ‖ / ‖h‖²)
        hn = h[idx].norm(dim=1)
        decay = hp.v_weight_decay * (delta[idx].norm(dim=1) / d_model ** 0.5 / hn if pre else
                                     delta[idx].norm(dim=1) / hn ** 2)
        total = tok_nll + hp.kl_factor * kl + decay
        last = step == hp.v_num_grad_steps - 1
        going = []
        for j, i in enumerate(live):
            r = results[i]
            r.loss, r.nll, r.steps, r.margin = float(total[j].detach()), float(tok_nll[j].detach()), step + 1, float(margin[j])
            history[i].append(r.margin)
            r.stop = stop_reason(hp, r.loss, history[i], r.clamped, last)
            going.append(r.stop is None)
        bar.update(1)
        bar.set_postfix(live=f"{len(live)}/{k}", loss=f"{float(total.detach().mean()):.3f}")
        if not any(going):
            bar.update(hp.v_num_grad_steps - 1 - step)
            break
        delta.grad = None
        total[torch.tensor(going, device=device)].sum().backward()  # requests are independent
        live = [i for i, g in zip(live, going) if g]
        idx = torch.tensor(live, device=device)
        with torch.no_grad():
            g = delta.grad[idx]
            m[idx] = beta1 * m[idx] + (1 - beta1) * g
            v[idx] = beta2 * v[idx] + (1 - beta2) * g * g
            t = step + 1
            ref = h[idx].norm(dim=1) if fixed is None else torch.full((len(live),), fixed, device=device)
            limit = hp.clamp_norm_factor * ref
            if step == 0 and hp.v_init == "gradient":  # one normalised gradient step, to a share of the clamp
                upd = -hp.v_init_scale * limit[:, None] * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
            else:
                upd = delta[idx] - lr * (m[idx] / (1 - beta1 ** t)) / ((v[idx] / (1 - beta2 ** t)).sqrt() + eps)
            norm = upd.norm(dim=1)
            over = norm > limit
            delta[idx] = torch.where(over[:, None], upd * (limit / norm)[:, None], upd)
            for j, i in enumerate(live):
                results[i].clamped = bool(over[j])
    d = delta.detach()
    if pre:
        with torch.no_grad():
            d = postnorm.output_change(chunk.norm, y0, d * unit)
    return (h + d).float().cpu(), h.float().cpu()

