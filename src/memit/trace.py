"""Causal tracing (docs/algorithm.md §4): which hidden states carry a fact the model knows.

The subject's token embeddings are corrupted with Gaussian noise (σ = 3 × the embeddings' std);
then, one (token, layer) at a time, the clean hidden state is restored (or only the MLP output, or
only the attention output, over a window of layers), and the recovered probability of the
model's own answer is the indirect effect. Many restorations run as rows of one batch; the same
noise is used for every restoration of a fact, so the comparisons are paired.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from memit import hooks
from memit.models.arch import Arch
from memit.tokens import encode_filled
from memit.weights import input_device

CATEGORIES = ["first subject token", "middle subject tokens", "last subject token",
              "first subsequent token", "further tokens", "last token"]
KINDS = ["hidden", "mlp", "attn"]


def embedding_std(model, tokenizer, subjects: list[str]) -> float:
    emb = model.get_input_embeddings()
    ids = [i for s in subjects for i in tokenizer(s, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        return float(emb(torch.tensor(ids, device=emb.weight.device)).float().std())


@torch.no_grad()
def trace_fact(model, tokenizer, arch: Arch, template: str, subject: str, n_layers: int, noise: float,
               answer: int | None = None, samples: int = 3, window: int = 10, seed: int = 0,
               batch_rows: int = 256) -> dict | None:
    """Indirect effects (kind → tensor tokens × layers) for one fact. ``answer`` is the token
    whose probability is traced; if given and not the clean run's top-1, returns None."""
    device = input_device(model)
    enc = encode_filled(tokenizer, template, subject)
    ids = torch.tensor([enc.ids], device=device)
    start = template.index("{}")
    offsets = tokenizer(template.replace("{}", subject, 1), return_offsets_mapping=True)["offset_mapping"]
    s0 = next(i for i, (a, b) in enumerate(offsets) if b > start and b > a)
    s1, n_tok = enc.subject_last, len(enc.ids)

    names = {k: [arch.part_name(k, i) for i in range(n_layers)] for k in KINDS}
    with hooks.record(model, names["hidden"]) as clean_h, hooks.record(model, names["mlp"]) as clean_m, \
            hooks.record(model, names["attn"]) as clean_a:
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    top = int(probs.argmax())
    if answer is not None and top != answer:
        return None
    answer = top
    clean = {"hidden": clean_h, "mlp": clean_m, "attn": clean_a}
    gen = torch.Generator().manual_seed(seed)
    d_model = model.get_input_embeddings().weight.shape[1]
    noise_t = (torch.randn(samples, s1 - s0 + 1, d_model, generator=gen) * noise).to(device)
    emb_name = next(n for n, m in model.named_modules() if m is model.get_input_embeddings())

    def corrupt(out):
        out = out.clone()
        out[:, s0: s1 + 1] += noise_t.repeat(out.shape[0] // samples, 1, 1).to(out.dtype)
        return out

    def run(restores: list[tuple[str, int, int]]) -> torch.Tensor:
        """P(answer) per restoration (kind, token, layer), averaged over the noise samples;
        kind None is the corrupted run with nothing restored."""
        plan: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        for r, (kind, tok, layer) in enumerate(restores):
            if kind is None:
                continue
            span = [layer] if kind == "hidden" else range(max(0, layer - window // 2),
                                                            min(n_layers, layer + window - window // 2))
            for lay in span:
                name = arch.part_name(kind, lay)
                plan.setdefault(name, (kind, []))[1].extend((r * samples + k, tok) for k in range(samples))
        with hooks.edit_output(model, emb_name, corrupt), _restore(model, plan, clean):
            logits = model(input_ids=ids.expand(len(restores) * samples, -1)).logits[:, -1].float()
        return torch.softmax(logits, -1)[:, answer].view(len(restores), samples).mean(1)

    p_corrupt = float(run([(None, 0, 0)])[0])
    effects = {}
    per_batch = max(1, batch_rows // samples)
    for kind in KINDS:
        todo = [(kind, t, layer) for t in range(n_tok) for layer in range(n_layers)]
        vals = [run(todo[i: i + per_batch]) for i in range(0, len(todo), per_batch)]
        effects[kind] = (torch.cat(vals).view(n_tok, n_layers) - p_corrupt).cpu()
    return {"effects": effects, "p_clean": float(probs[answer]), "p_corrupt": p_corrupt, "answer": answer,
            "subject_range": (s0, s1), "n_tokens": n_tok}


class _restore:
    """Hooks that put the clean output back at planned (row, token) places of each module."""

    def __init__(self, model, plan, clean):
        self.model, self.plan, self.clean, self.handles = model, plan, clean, []

    def __enter__(self):
        for name, (kind, places) in self.plan.items():
            src = self.clean[kind][name][0]
            rows = torch.tensor([r for r, _ in places])
            toks = torch.tensor([t for _, t in places])

            def hook(module, args, output, rows=rows, toks=toks, src=src):
                out = (output[0] if isinstance(output, tuple) else output).clone()
                out[rows, toks] = src[toks].to(out.dtype)
                return (out, *output[1:]) if isinstance(output, tuple) else out

            self.handles.append(self.model.get_submodule(name).register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def categorise(result: dict) -> dict[str, torch.Tensor]:
    """Per kind: (6 categories × layers) averages of one fact's effects; NaN where a category is empty."""
    s0, s1 = result["subject_range"]
    n = result["n_tokens"]
    groups = [[s0], list(range(s0 + 1, s1)), [s1], [s1 + 1] if s1 + 1 < n - 1 else [],
              list(range(s1 + 2, n - 1)), [n - 1]]
    out = {}
    for kind, eff in result["effects"].items():
        rows = [eff[g].mean(0) if g else torch.full((eff.shape[1],), float("nan")) for g in groups]
        out[kind] = torch.stack(rows)
    return out


def suggest_band(mlp_effect_last_subject: torch.Tensor, width: int) -> list[int]:
    """The ``width`` consecutive layers with the largest summed MLP effect at the last subject token."""
    e = torch.nan_to_num(mlp_effect_last_subject)
    sums = [float(e[i: i + width].sum()) for i in range(len(e) - width + 1)]
    best = max(range(len(sums)), key=sums.__getitem__)
    return list(range(best, best + width))


def trace_many(model, tokenizer, arch: Arch, facts: list[dict], n_layers: int, samples: int = 3,
               window: int = 10, seed: int = 0, progress: bool = True) -> dict:
    """Average categorised effects over facts the model gets right (its top-1 is the answer's first token)."""
    noise = 3 * embedding_std(model, tokenizer, [f["subject"] for f in facts])
    sums = {k: torch.zeros(len(CATEGORIES), n_layers) for k in KINDS}
    counts = {k: torch.zeros(len(CATEGORIES), n_layers) for k in KINDS}
    used, skipped = [], 0
    for f in tqdm(facts, desc="causal tracing", disable=not progress):
        first = tokenizer(" " + f["attribute"].strip(), add_special_tokens=False)["input_ids"][0]
        template = f["prompt"].replace(f["subject"], "{}", 1) if "prompt" in f else f["template"]
        res = trace_fact(model, tokenizer, arch, template, f["subject"], n_layers, noise, first, samples,
                         window, seed)
        if res is None:
            skipped += 1
            continue
        for kind, cat in categorise(res).items():
            ok = ~torch.isnan(cat)
            sums[kind][ok] += cat[ok]
            counts[kind][ok] += 1
        used.append({"known_id": f.get("known_id"), "p_clean": res["p_clean"], "p_corrupt": res["p_corrupt"]})
    avg = {k: (sums[k] / counts[k].clamp(min=1)) for k in KINDS}
    return {"avg": avg, "used": used, "skipped": skipped, "noise": noise}


def plot_heatmaps(avg: dict[str, torch.Tensor], path, title: str) -> None:
    from memit.eval.plots import pyplot, save

    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    names = {"hidden": "hidden state (single layer)", "mlp": "MLP output (window)", "attn": "attention output (window)"}
    for ax, kind, cmap in zip(axes, KINDS, ["Purples", "Greens", "Reds"]):
        im = ax.imshow(avg[kind].numpy(), aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_yticks(range(len(CATEGORIES)), CATEGORIES, fontsize=8)
        ax.set_xlabel("layer")
        ax.set_title(f"restoring {names[kind]}", fontsize=10)
        fig.colorbar(im, ax=ax, label="indirect effect on P(answer)")
    fig.suptitle(title, fontsize=10)
    save(fig, path)
