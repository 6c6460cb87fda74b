"""FT-L and FT-W: constrained fine-tuning of one layer's MLP output weights (the ROME and MEMIT
papers' fine-tuning baselines).

Adam minimises the teacher-forced NLL of each target_new after its prompt, with every weight of
that one matrix free. FT-L keeps each entry within ±``ft.norm_bound`` of its original value (an
L∞ ball, projected after every step); FT-W instead adds ``ft.weight_decay``·(W − W₀) to the
gradient, a decay of the change rather than of W itself (torch's Adam weight decay would pull W
toward zero).
"""

from __future__ import annotations

import time

import torch

from memit import weights
from memit.delta import Delta
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.methods.memit import EditError, check_requests
from memit.models.arch import as_math, get_arch, logits
from memit.progress import tqdm
from memit.requests import EditRequest, where_of
from memit.tokens import chunks, encode_filled, pad
from memit.weights import input_device


def _nll(model, arch, encs, pad_id: int) -> torch.Tensor:
    """Mean per-token NLL of each target (a vector, one entry per prompt), teacher forced."""
    batch = pad([e.ids for e in encs], pad_id).to(input_device(model))
    hidden = model.base_model(**batch.model_inputs())[0]
    rows, cols, tgt, owner = [], [], [], []
    for r, e in enumerate(encs):
        for q, t in zip(e.target_positions, e.ids[e.n_prompt:]):
            rows.append(r), cols.append(q), tgt.append(t), owner.append(r)
    lp = torch.log_softmax(logits(model, arch, hidden[rows, cols]).float(), -1)
    tok = -lp[torch.arange(len(tgt), device=lp.device), torch.tensor(tgt, device=lp.device)]
    own = torch.tensor(owner, device=lp.device)
    return torch.zeros(len(encs), device=lp.device).index_add(0, own, tok) / torch.bincount(own).float()


def edit(model, tokenizer, requests: list[EditRequest], hp: MemitHyperParams, *, progress: bool = True,
         weight_decay: bool = False, **_) -> Delta:
    """FT-L (or FT-W with ``weight_decay``) on ``hp.rome_layer()``; the model is left edited."""
    arch = get_arch(model)
    check_requests(tokenizer, requests, getattr(model.config, "max_position_embeddings", None))
    layer = hp.rome_layer()
    name = arch.mlp_out_name(layer) + ".weight"
    p = model.get_parameter(name)
    if p.device.type == "meta":
        raise EditError(f"{name} is offloaded; fine-tuning needs the layer in memory (use memit or rome)")
    fingerprint = model_fingerprint(model)
    w0 = p.detach().clone()
    encs = [encode_filled(tokenizer, r.prompt, r.subject, r.target_new, where=where_of(i, r.case_id, "request"))
            for i, r in enumerate(requests)]
    ranges = list(chunks([len(e.ids) for e in encs], hp.batch_tokens))
    pad_id = tokenizer.pad_token_id or 0
    t0 = time.perf_counter()
    opt = torch.optim.Adam([p], lr=hp.ft.lr)
    with weights.frozen(model, train=[p]):  # gradients for this weight alone
        try:
            bar = tqdm(range(hp.ft.steps), desc=f"FT-{'W' if weight_decay else 'L'}, layer {layer}", disable=not progress)
            for _step in bar:
                opt.zero_grad()
                total = 0.0
                for rng in ranges:
                    loss = _nll(model, arch, encs[rng.start: rng.stop], pad_id).sum() / len(encs)
                    loss.backward()
                    total += float(loss.detach())
                if weight_decay:
                    p.grad += hp.ft.weight_decay * (p.detach() - w0)
                opt.step()
                if not weight_decay:
                    with torch.no_grad():
                        p.copy_(torch.maximum(torch.minimum(p, w0 + hp.ft.norm_bound), w0 - hp.ft.norm_bound))
                bar.set_postfix(nll=f"{total:.3f}")
            with torch.no_grad():
                final = torch.cat([_nll(model, arch, encs[r.start: r.stop], pad_id) for r in ranges]).tolist()
        except BaseException:
            with torch.no_grad():
                p.copy_(w0)
            raise
    d = (p.detach().float() - w0.float()).cpu()
    with torch.no_grad():
        weights.write(model, name, (w0.float() + d.to(w0.device)).to(w0.dtype))  # exactly base + delta
    meta = {
        "method": "ft-w" if weight_decay else "ft", "model_type": model.config.model_type,
        "model_fingerprint": fingerprint, "layers": [layer], "lambda": None,
        "hparams": hp.to_dict(), "n_requests": len(requests),
        "requests": [{"case_id": r.case_id, "subject": r.subject, "target_new": r.target_new, "loss": nll, "nll": nll,
                      "steps": hp.ft.steps, "clamped": False, "converged": nll < hp.v_loss_threshold}
                     for r, nll in zip(requests, final)],
        "layers_info": [{"layer": layer, "resid_norm": None, "cond": None, "max_key_overlap": None,
                         "delta_rel_norm": float(as_math(d, arch).norm() / as_math(w0, arch).float().norm()),
                         "max_abs_change": float(d.abs().max())}],
        "timings": {"finetune": time.perf_counter() - t0},
    }
    return Delta.written(model, {name: w0}, {name: d}, meta)
