"""Target vectors z_i: what block l_L should output at the subject's last token so that the
model emits target_new (MEMIT_SPEC §2.1).

All requests are optimised together: their prompts share forward/backward passes, each request
has its own δ_i and its own Adam state and leaves the batch once its loss is below threshold.
Logits are computed only at the positions the loss reads, never over the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from memit import hooks
from memit.hparams import MemitHyperParams
from memit.models.arch import Arch, logits
from memit.requests import EditRequest
from memit.tokens import Encoded, chunks, encode_filled, pad

KL_PROMPT = "{} is a"


@dataclass
class Targets:
    z: torch.Tensor  # (n, d_model) float32: h + δ
    h: torch.Tensor  # (n, d_model) float32: block output before the edit
    loss: list[float]
    nll: list[float]
    steps: list[int]
    clamped: list[bool]
    converged: list[bool]


@torch.no_grad()
def generate_prefixes(model, tokenizer, starts: list[str], n_tokens: int, seed: int, top_k: int = 5) -> list[str]:
    """Short context prefixes sampled from the model (top-k, seeded): the paper's recipe,
    made deterministic. Each ends in ". " so the prompt starts a new sentence."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    out = []
    for start in starts:
        ids = tokenizer(start, add_special_tokens=True)["input_ids"]
        n_start = len(ids)
        while len(ids) < n_start - 1 + n_tokens:
            x = torch.tensor([ids], device=device)
            logit = model(input_ids=x).logits[0, -1].float().cpu()
            top = logit.topk(top_k)
            probs = torch.softmax(top.values, -1)
            ids.append(int(top.indices[torch.multinomial(probs, 1, generator=gen)]))
        text = tokenizer.decode(ids, skip_special_tokens=True)
        out.append(text.replace("{", " ").replace("}", " ").strip() + ". ")
    return out


def _rows(tokenizer, requests: list[EditRequest], prefixes: list[str]) -> list[list[Encoded]]:
    """For each request: its prompt behind each prefix ("" first) with the target, then the KL prompt."""
    rows = []
    for i, r in enumerate(requests):
        where = f"request {i}" + (f" (case_id {r.case_id})" if r.case_id is not None else "")
        enc = [encode_filled(tokenizer, r.prompt, r.subject, r.target_new, prefix=p, where=where)
               for p in ["", *prefixes]]
        enc.append(encode_filled(tokenizer, KL_PROMPT, r.subject, where=where))
        rows.append(enc)
    return rows


def compute_targets(model, tokenizer, arch: Arch, requests: list[EditRequest], layer: int,
                    prefixes: list[str], hp: MemitHyperParams, progress: bool = True) -> Targets:
    n = len(requests)
    device = next(model.parameters()).device
    d_model = model.get_output_embeddings().weight.shape[1]
    rows = _rows(tokenizer, requests, prefixes)
    per_req = len(rows[0])
    block = arch.block_name(layer)

    delta = torch.zeros(n, d_model, device=device, requires_grad=True)
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)
    h = torch.zeros(n, d_model, device=device)
    kl_init = [None] * n
    done = [False] * n
    loss_out, nll_out, steps = [0.0] * n, [0.0] * n, [0] * n
    clamped = [False] * n
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    bar = tqdm(total=hp.v_num_grad_steps, desc=f"target vectors ({n} requests)", disable=not progress)
    for step in range(hp.v_num_grad_steps):
        active = [i for i in range(n) if not done[i]]
        if not active:
            break
        delta.grad = None
        lengths = [len(e.ids) for i in active for e in rows[i]]
        for rng in chunks(lengths, hp.batch_tokens, group=per_req):
            reqs = active[rng.start // per_req: (rng.stop + per_req - 1) // per_req]
            total, nll = _chunk_loss(model, tokenizer, arch, block, rows, reqs, delta, h, kl_init, step, hp)
            stop = total.detach() < hp.v_loss_threshold
            for j, i in enumerate(reqs):
                loss_out[i], nll_out[i], steps[i] = float(total[j].detach()), float(nll[j]), step
                done[i] = bool(stop[j]) or step == hp.v_num_grad_steps - 1
            if not all(done[i] for i in reqs):
                total[~stop].sum().backward()  # requests are independent: one backward for all
        # Adam on the rows still optimising, then the norm clamp.
        live = [i for i in active if not done[i]]
        if live:
            with torch.no_grad():
                idx = torch.tensor(live, device=device)
                g = delta.grad[idx]
                m[idx] = beta1 * m[idx] + (1 - beta1) * g
                v[idx] = beta2 * v[idx] + (1 - beta2) * g * g
                t = step + 1
                denom = (v[idx] / (1 - beta2 ** t)).sqrt() + eps
                delta[idx] -= hp.v_lr * (m[idx] / (1 - beta1 ** t)) / denom
                limit = hp.clamp_norm_factor * h[idx].norm(dim=1)
                norm = delta[idx].norm(dim=1)
                over = norm > limit
                delta[idx] = torch.where(over[:, None], delta[idx] * (limit / norm)[:, None], delta[idx])
                for j, i in enumerate(live):
                    clamped[i] = bool(over[j])
        bar.update(1)
        bar.set_postfix(active=len(live), loss=f"{sum(loss_out) / n:.3f}")
    bar.close()
    converged = [loss_out[i] < hp.v_loss_threshold for i in range(n)]
    d = delta.detach()
    return Targets((h + d).float().cpu(), h.float().cpu(), loss_out, nll_out, [s + 1 for s in steps],
                   clamped, converged)


def _chunk_loss(model, tokenizer, arch, block, rows, reqs, delta, h, kl_init, step, hp):
    """Per-request (total loss, NLL) for the requests ``reqs``, from one forward pass."""
    device = delta.device
    per_req = len(rows[0])
    encs = [e for i in reqs for e in rows[i]]
    batch = pad([e.ids for e in encs], tokenizer.pad_token_id or 0, hp.padding_side).to(device)
    row_req = torch.tensor([j for j in range(len(reqs)) for _ in range(per_req)], device=device)
    cols = torch.tensor([e.subject_last + s for e, s in zip(encs, batch.shift)], device=device)
    ridx = torch.arange(len(encs), device=device)
    req_idx = torch.tensor(reqs, device=device)

    def add_delta(out):
        if step == 0:
            bare = ridx[::per_req]
            h[req_idx] = out[bare, cols[bare]].detach().float()
        return out.index_put((ridx, cols), out[ridx, cols] + delta[req_idx][row_req].to(out.dtype))

    with hooks.edit_output(model, block, add_delta):
        hidden = model.base_model(**batch.model_inputs())[0]

    # Positions read by the loss: target predictions of rewriting rows, subject of KL rows.
    pos_r, pos_c, tgt, owner = [], [], [], []
    for r, (e, s) in enumerate(zip(encs, batch.shift)):
        if r % per_req == per_req - 1:
            continue
        for p, t in zip(e.target_positions, e.ids[e.n_prompt:]):
            pos_r.append(r), pos_c.append(p + s), tgt.append(t), owner.append(r // per_req)
    kl_rows = ridx[per_req - 1:: per_req]
    logp = torch.log_softmax(logits(model, arch, hidden[pos_r, pos_c]).float(), -1)
    tok_nll = -logp[torch.arange(len(tgt)), torch.tensor(tgt, device=device)]
    owner_t = torch.tensor(owner, device=device)
    nll = torch.zeros(len(reqs), device=device).index_add(0, owner_t, tok_nll)
    nll = nll / torch.bincount(owner_t, minlength=len(reqs)).float()

    kl_logp = torch.log_softmax(logits(model, arch, hidden[kl_rows, cols[kl_rows]]).float(), -1)
    if step == 0:
        for j, i in enumerate(reqs):
            kl_init[i] = kl_logp[j].detach()
    init = torch.stack([kl_init[i] for i in reqs])
    kl = (init.exp() * (init - kl_logp)).sum(-1)

    hn = h[req_idx]
    decay = hp.v_weight_decay * delta[req_idx].norm(dim=1) / hn.norm(dim=1) ** 2
    total = nll + hp.kl_factor * kl + decay
    return total, nll.detach()
