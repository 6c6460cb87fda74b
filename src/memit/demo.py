"""The demo: the bundled model, a handful of bundled facts edited at once, before and after."""

from __future__ import annotations

from importlib import resources

import torch

from memit.eval.metrics import pair_probabilities
from memit.hparams import MemitHyperParams
from memit.methods import run
from memit.requests import Case, load_cases
from memit.weights import input_device


def demo_cases() -> list[Case]:
    with resources.as_file(resources.files("memit") / "data" / "demo_facts.json") as p:
        return load_cases(p)


@torch.no_grad()
def greedy(model, tokenizer, prompt: str, max_new_tokens: int = 12) -> str:
    enc = tokenizer(prompt, return_tensors="pt").to(input_device(model))
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return " ".join(text.split())  # one line: newlines would break the table


def probe(model, tokenizer, cases: list[Case]) -> list[dict]:
    """P(new) and P(true) (exp of the mean per-token NLL) on rewrite, paraphrase, neighbour."""
    rows, asked = [], []
    for c in cases:
        r = c.request
        for kind, prompt in (("rewrite", r.text), ("paraphrase", c.paraphrase_prompts[0]),
                             ("neighbour", c.neighborhood_prompts[0])):
            rows.append({"subject": r.subject, "kind": kind, "prompt": prompt})
            asked.append((prompt, r.target_new, r.target_true))
    for row, (p_new, p_true) in zip(rows, pair_probabilities(model, tokenizer, asked)):
        row["p_new"], row["p_true"] = p_new, p_true
    return rows


def run_demo(model, tokenizer, hparams: MemitHyperParams, progress: bool = True) -> dict:
    cases = demo_cases()
    requests = [c.request for c in cases]
    before = probe(model, tokenizer, cases)
    gen_before = [greedy(model, tokenizer, r.text) for r in requests]
    delta = run("memit", model, tokenizer, requests, hparams, progress=progress)  # verified, as `memit edit` is
    after = probe(model, tokenizer, cases)
    gen_after = [greedy(model, tokenizer, r.text) for r in requests]
    delta.revert(model)

    print(f"\nEdited {len(requests)} facts at once on layers {hparams.layers} "
          f"(λ = {delta.meta['lambda']:.0f}). P = exp(−mean token NLL).\n")
    print(f"{'subject':18} {'prompt':10} {'new':>9} {'P(new) before→after':>21} {'P(true) before→after':>22}  ok")
    flipped = kept = 0
    for b, a, c in zip(before, after, [c for c in cases for _ in range(3)]):
        if b["kind"] == "neighbour":
            ok = a["p_true"] > a["p_new"]
            kept += ok
        else:
            ok = a["p_new"] > a["p_true"]
            flipped += ok and b["kind"] == "rewrite"
        print(f"{b['subject'][:18]:18} {b['kind']:10} {c.request.target_new[:9]:>9} "
              f"{b['p_new']:9.3f} → {a['p_new']:.3f} {b['p_true']:10.3f} → {a['p_true']:.3f}   {'✓' if ok else '✗'}")
    print("\nGreedy continuations of the rewrite prompt:")
    for r, g0, g1 in zip(requests, gen_before, gen_after):
        print(f"  {r.text}\n    before: {g0}\n    after:  {g1}")
    t, v = delta.meta["timings"], delta.meta.get("verification") or {}
    if v:
        print(f"\n{v['held']} of {len(cases)} facts hold on their rewrite and prefixed prompts after "
              f"{v['rounds_used']} round(s) of verification.")
    print(f"\nFlipped {flipped}/{len(cases)} facts; neighbours kept {kept}/{len(cases)}. "
          f"Time: statistics {t['stats']:.0f} s, target vectors {t['targets']:.0f} s, "
          f"keys {t['keys']:.1f} s, solve {t['solve']:.1f} s. The model was restored afterwards.")
    return {"before": before, "after": after, "generations_before": gen_before,
            "generations_after": gen_after, "flipped": flipped, "neighbours_kept": kept,
            "timings": t, "lambda": delta.meta["lambda"], "verification": v}
