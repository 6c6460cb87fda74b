"""The target-vector optimisation written the plain way, as the paper's code is structured:
one request at a time, every step a full forward pass over all positions and layers with
full-vocabulary logits, torch's Adam. Used to check the fast path (`targets.py`) and as the
baseline of `benchmarks/speed.py`; not used for editing. With a norm after the MLP and
``post_norm_delta`` "mlp", δ (in units of the bare prompt's rms) is added to the MLP's output
before that norm instead of to the block's output.
"""

from __future__ import annotations

import torch

from memit import hooks
from memit.hparams import MemitHyperParams
from memit.models.arch import Arch
from memit.prompts import request_rows
from memit.requests import EditRequest
from memit.targets import Targets
from memit.tokens import pad
from memit.weights import input_device


def reference_targets(model, tokenizer, arch: Arch, requests: list[EditRequest], layer: int,
                      prefixes: list[str], hp: MemitHyperParams) -> Targets:
    out = Targets([], [], [], [], [], [], [])
    for enc in request_rows(tokenizer, requests, prefixes):
        z, h, loss, nll, steps, clamped = _one(model, tokenizer, arch, enc, layer, hp)
        out.z.append(z), out.h.append(h), out.loss.append(loss), out.nll.append(nll), out.steps.append(steps)
        out.clamped.append(clamped)
        out.converged.append(loss < hp.v_loss_threshold)
    out.z, out.h = torch.stack(out.z), torch.stack(out.h)
    return out


def _one(model, tokenizer, arch: Arch, enc, layer: int, hp: MemitHyperParams):
    device = input_device(model)
    batch = pad([e.ids for e in enc], tokenizer.pad_token_id or 0).to(device)
    rows, subj = torch.arange(len(enc)), torch.tensor([e.subject_last for e in enc])
    d_model = model.get_output_embeddings().weight.shape[1]
    pre = arch.post_mlp_norm is not None and hp.post_norm_delta == "mlp"
    delta = torch.zeros(d_model, device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr_post_norm if pre else hp.v_lr)
    h, y0, unit, kl_init = None, None, None, None

    def add(o):
        nonlocal h
        if h is None:
            h = o[0, subj[0]].detach().float()
        return o if pre else o.index_put((rows, subj), o[rows, subj] + delta)

    def add_y(o):
        nonlocal y0, unit
        if y0 is None:
            y0 = o[0, subj[0]].detach().float()
            unit = y0.pow(2).mean().sqrt()
        return o.index_put((rows, subj), o[rows, subj] + delta * unit)

    for step in range(hp.v_num_grad_steps):
        with hooks.edit_output(model, arch.block_name(layer), add), \
                hooks.edit_output(model, arch.mlp_out_name(layer), add_y if pre else lambda o: o):
            lp = torch.log_softmax(model(**batch.model_inputs()).logits.float(), -1)
        nll = torch.stack([-lp[r, e.target_positions, e.ids[e.n_prompt:]].mean()
                           for r, e in enumerate(enc[:-1])]).mean()
        kl_lp = lp[len(enc) - 1, subj[-1]]
        if kl_init is None:
            kl_init = kl_lp.detach()
        kl = (kl_init.exp() * (kl_init - kl_lp)).sum()
        decay = delta.norm() / d_model ** 0.5 / h.norm() if pre else delta.norm() / h.norm() ** 2
        total = nll + hp.kl_factor * kl + hp.v_weight_decay * decay
        if total.item() < hp.v_loss_threshold or step == hp.v_num_grad_steps - 1:
            break
        opt.zero_grad()
        total.backward()
        opt.step()
        with torch.no_grad():
            limit = hp.clamp_norm_factor * (d_model ** 0.5 if pre else h.norm())
            if delta.norm() > limit:
                delta.mul_(limit / delta.norm())
    limit = hp.clamp_norm_factor * (d_model ** 0.5 if pre else h.norm())
    clamped = bool(delta.norm() >= limit * (1 - 1e-6))
    d = delta.detach()
    if pre:
        with torch.no_grad():
            norm = model.get_submodule(arch.post_mlp_norm_name(layer))
            d = norm(y0 + d * unit) - norm(y0)
    return (h + d).cpu(), h.cpu(), total.item(), nll.item(), step + 1, clamped
