"""The paper's CounterFact and zsRE metrics (docs/algorithm.md §3).

Each target is scored by the mean per-token NLL of ``" " + target`` after the prompt, teacher
forced, with logits computed only at the target positions.
"""

from __future__ import annotations

import math
from statistics import harmonic_mean

import torch
from tqdm.auto import tqdm

from memit.models.arch import get_arch, logits
from memit.requests import Case
from memit.tokens import chunks, encode, pad
from memit.weights import input_device


@torch.no_grad()
def target_scores(model, tokenizer, pairs: list[tuple[str, str]], batch_tokens: int = 4096
                  ) -> list[tuple[float, list[bool]]]:
    """For each (prompt, target): mean per-token NLL, and per target token whether it is the argmax.

    A one-token target is predicted at the prompt's last position, which every row that starts
    with the same prompt tokens computes: such pairs are read from that row instead of running
    their own (target_new and target_true on one prompt then cost one row; on SmolLM2 most
    CounterFact targets are one token). Rows are batched shortest first: CounterFact's prompts run
    from 3 to 60+ tokens, and in file order most of each batch would be padding."""
    arch = get_arch(model)
    device = input_device(model)
    encs = [encode(tokenizer, p, t, where=f"prompt {p!r}") for p, t in pairs]
    guests: dict[int, list[int]] = {}  # row (index of the pair whose tokens it runs) -> pairs read from it
    first: dict[tuple[int, ...], int] = {}
    for i, e in enumerate(encs):
        key = tuple(e.ids[: e.n_prompt])
        if len(e.ids) - e.n_prompt == 1 and key in first:
            guests[first[key]].append(i)
        else:
            first.setdefault(key, i)
            guests[i] = [i]
    order = sorted(guests, key=lambda i: len(encs[i].ids))
    out: list[tuple[float, list[bool]] | None] = [None] * len(encs)
    ranges = list(chunks([len(encs[i].ids) for i in order], batch_tokens))
    for rng in tqdm(ranges, desc=f"scoring {len(pairs)} prompts", disable=len(ranges) < 5, leave=False):
        hosts = order[rng.start: rng.stop]
        batch = pad([encs[i].ids for i in hosts], tokenizer.pad_token_id or 0).to(device)
        hidden = model.base_model(**batch.model_inputs())[0]
        rows, cols, tgt, who = [], [], [], []
        for r, (h, s) in enumerate(zip(hosts, batch.shift)):
            for i in guests[h]:
                e = encs[i]
                for p, t in zip(e.target_positions, e.ids[e.n_prompt:]):
                    rows.append(r), cols.append(p + s), tgt.append(t), who.append(i)
        logp = torch.log_softmax(logits(model, arch, hidden[rows, cols]).float(), -1)
        tgt_t = torch.tensor(tgt, device=logp.device)
        nll = (-logp[torch.arange(len(tgt)), tgt_t]).tolist()
        hit = (logp.argmax(-1) == tgt_t).tolist()
        per: dict[int, tuple[list[float], list[bool]]] = {}
        for i, x, y in zip(who, nll, hit):
            a, b = per.setdefault(i, ([], []))
            a.append(x), b.append(y)
        for i, (a, b) in per.items():
            out[i] = (sum(a) / len(a), b)
    return out  # type: ignore[return-value]


def target_nll(model, tokenizer, pairs: list[tuple[str, str]], batch_tokens: int = 4096) -> list[float]:
    return [nll for nll, _ in target_scores(model, tokenizer, pairs, batch_tokens)]


def pair_probabilities(model, tokenizer, rows: list[tuple[str, str, str | None]]) -> list[tuple[float, float | None]]:
    """(P(new), P(true)) for each (prompt, target_new, target_true or None): exp of the mean
    per-token NLL, the figure the demo and the playground show a person; None where no true target."""
    pairs = [(p, t) for p, new, true in rows for t in (new, true or new)]
    nll = target_nll(model, tokenizer, pairs)
    return [(math.exp(-nll[2 * i]), math.exp(-nll[2 * i + 1]) if true else None) for i, (_, _, true) in enumerate(rows)]


def counterfact_case_scores(model, tokenizer, cases: list[Case], batch_tokens: int = 4096) -> list[dict]:
    """Per case: NLLs of target_new and target_true on rewrite, paraphrase and neighbour prompts."""
    pairs, index = [], []
    for ci, c in enumerate(cases):
        r = c.request
        if r.target_true is None:
            raise ValueError(f"case {ci}: CounterFact metrics need target_true")
        for kind, prompts in (("rewrite", [r.text]), ("paraphrase", c.paraphrase_prompts),
                              ("neighborhood", c.neighborhood_prompts)):
            for p in prompts:
                for which, t in (("new", r.target_new), ("true", r.target_true)):
                    pairs.append((p, t))
                    index.append((ci, kind, which))
    nlls = target_nll(model, tokenizer, pairs, batch_tokens)
    per = [{"case_id": c.request.case_id, "rewrite": [], "paraphrase": [], "neighborhood": []} for c in cases]
    for (ci, kind, which), nll in zip(index, nlls):
        if which == "new":
            per[ci][kind].append({"new": nll})
        else:
            per[ci][kind][-1]["true"] = nll
    return per


def _rates(items: list[dict], success_if_new: bool) -> tuple[list[float], list[float]]:
    succ, mag = [], []
    for it in items:
        better_new = it["new"] < it["true"]
        succ.append(float(better_new if success_if_new else not better_new))
        d = math.exp(-it["new"]) - math.exp(-it["true"])
        mag.append(d if success_if_new else -d)
    return succ, mag


def counterfact_summary(per_case: list[dict]) -> dict:
    """ES, PS, NS (success rates, %), EM, PM, NM (probability margins, %), Score (harmonic mean).

    Each rate is averaged over prompts within a case, then over cases, as in the paper.
    """
    out = {}
    for key, kind, new_wins in (("ES", "rewrite", True), ("PS", "paraphrase", True), ("NS", "neighborhood", False)):
        s_case, m_case = [], []
        for c in per_case:
            if c[kind]:
                s, m = _rates(c[kind], new_wins)
                s_case.append(sum(s) / len(s))
                m_case.append(sum(m) / len(m))
        out[key] = 100 * sum(s_case) / len(s_case) if s_case else float("nan")
        out[key + "_ci95"] = [100 * x for x in bootstrap_ci(s_case)]
        out[key.replace("S", "M")] = 100 * sum(m_case) / len(m_case) if m_case else float("nan")
    parts = [out[k] for k in ("ES", "PS", "NS")]
    out["Score"] = harmonic_mean(parts) if all(p > 0 and not math.isnan(p) for p in parts) else 0.0
    return out


def counterfact_strata(pre: list[dict], post: list[dict]) -> dict:
    """Edited ES/PS split by whether the unedited model preferred target_true on the rewrite prompt
    ("hard": it knew the true fact) or not ("easy"), and how many edits failed (ES 0 after)."""
    out = {"failed_edits": 0}
    groups: dict[str, list[tuple[dict, dict]]] = {"hard": [], "easy": []}
    for a, b in zip(pre, post):
        knew = all(it["true"] < it["new"] for it in a["rewrite"])
        groups["hard" if knew else "easy"].append((a, b))
        out["failed_edits"] += not all(it["new"] < it["true"] for it in b["rewrite"])
    for name, pairs in groups.items():
        summary = counterfact_summary([b for _, b in pairs]) if pairs else {}
        out[name] = {"n": len(pairs), **{k: summary.get(k) for k in ("ES", "ES_ci95", "PS", "PS_ci95")}}
    return out


ZSRE_KINDS = ("efficacy", "paraphrase", "specificity")


def zsre_case_scores(model, tokenizer, cases: list[Case], batch_tokens: int = 4096,
                     kinds: tuple[str, ...] = ZSRE_KINDS) -> list[dict]:
    """Token-level teacher-forced top-1 accuracy on the edit question, its rephrase, and the
    unrelated ``loc`` question (specificity); ``kinds`` picks which (only ``specificity`` to probe
    unrelated knowledge after other edits)."""
    pairs, index = [], []
    for ci, c in enumerate(cases):
        r = c.request
        if "efficacy" in kinds:
            pairs.append((r.text, r.target_new)), index.append((ci, "efficacy"))
        for p in c.paraphrase_prompts if "paraphrase" in kinds else []:
            pairs.append((p, r.target_new)), index.append((ci, "paraphrase"))
        if "specificity" in kinds and c.loc_prompt and c.loc_answer:
            pairs.append((c.loc_prompt, c.loc_answer)), index.append((ci, "specificity"))
    scores = target_scores(model, tokenizer, pairs, batch_tokens)
    per = [{"case_id": c.request.case_id} for c in cases]
    for (ci, kind), (_, hits) in zip(index, scores):
        per[ci].setdefault(kind, []).append(sum(hits) / len(hits))
    return per


def zsre_summary(per_case: list[dict]) -> dict:
    out = {}
    for kind in ZSRE_KINDS:
        vals = [sum(c[kind]) / len(c[kind]) for c in per_case if c.get(kind)]
        out[kind] = 100 * sum(vals) / len(vals) if vals else float("nan")
        out[kind + "_ci95"] = [100 * x for x in bootstrap_ci(vals)]
    return out


def known_fact_hits(model, tokenizer, facts: list[dict], batch_tokens: int = 4096) -> list[bool]:
    """For each fact of ``known_1000.json`` (prompt, attribute): whether every attribute token is the
    model's top-1 prediction, teacher forced."""
    scores = target_scores(model, tokenizer, [(f["prompt"], f["attribute"]) for f in facts], batch_tokens)
    return [all(hits) for _, hits in scores]


def retention_summary(before: list[bool], after: list[bool]) -> dict:
    """How many of the facts the unedited model knew (all attribute tokens top-1) it still knows:
    the review's test of whether mass editing damages unrelated knowledge."""
    known = [a for b, a in zip(before, after) if b]
    kept = [float(a) for a in known]
    return {"facts": len(before), "known_unedited": len(known),
            "accuracy_unedited": 100 * sum(before) / len(before) if before else float("nan"),
            "accuracy_edited": 100 * sum(after) / len(after) if after else float("nan"),
            "kept": 100 * sum(kept) / len(kept) if kept else None,  # None, not NaN: stays valid JSON
            "kept_ci95": [100 * x for x in bootstrap_ci(kept)] if kept else None}


def bootstrap_ci(values: list[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling facts with replacement."""
    if not values:
        return (float("nan"), float("nan"))
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(values, dtype=torch.float64)
    idx = torch.randint(len(x), (n_boot, len(x)), generator=g)
    means = x[idx].mean(1).sort().values
    lo = means[int((1 - level) / 2 * n_boot)]
    hi = means[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return float(lo), float(hi)
