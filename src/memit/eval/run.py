"""The paper's batch protocol: edit N records as one batch, evaluate every record, restore.

The unedited model is scored on the same records, so every figure has its baseline beside it.
A finished point is written at once as JSON; a rerun with the same settings skips it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import random
import re
import subprocess
import time
from pathlib import Path

import torch

from memit.delta import Delta
from memit.eval import fluency as fluency_module
from memit.eval import generated as generated_module
from memit.eval import metrics as metrics_module
from memit.eval.fluency import ngram_entropy, sample
from memit.eval.generated import counterfact_generated, generated_summary
from memit.eval.metrics import (
    counterfact_case_scores,
    counterfact_strata,
    counterfact_summary,
    known_fact_hits,
    retention_summary,
    zsre_case_scores,
    zsre_summary,
)
from memit.eval.perplexity import perplexity
from memit.eval.results import SCHEMA
from memit.files import write_json
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.methods import run
from memit.models.loading import cache_dir
from memit.requests import Case
from memit.stopping import stop_summary


def machine() -> dict:
    """Where a result was made. A copy of the code without its git history (as sent to a GPU machine)
    names its commit in ``MEMIT_COMMIT``; anything but a full hash is recorded as unknown."""
    commit = os.environ.get("MEMIT_COMMIT")
    if not commit:
        try:
            here = Path(__file__).resolve().parent
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                    check=False).stdout.strip()
        except OSError:
            pass
    commit = commit if commit and re.fullmatch(r"[0-9a-f]{40}", commit) else None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "commit": commit}


def select(cases: list[Case], n: int, offset: int = 0, sample_mode: str = "first", seed: int = 0) -> list[Case]:
    if sample_mode == "random":
        return random.Random(seed).sample(cases, min(n, len(cases)))
    return cases[offset: offset + n]


def score(model, tokenizer, cases: list[Case], dataset: str, fluency: bool, seed: int = 0,
          generate: tuple[str, ...] = ()) -> dict:
    """Teacher-forced scores, plus those of generated answers in each form of ``generate``
    (``plain``, ``chat``; eval/generated.py) for CounterFact."""
    if dataset == "zsre":
        per = zsre_case_scores(model, tokenizer, cases)
        return {"summary": zsre_summary(per), "cases": per}
    per = counterfact_case_scores(model, tokenizer, cases)
    summary = counterfact_summary(per)
    generated = None
    if generate:
        generated = counterfact_generated(model, tokenizer, cases, generate, resume=cache_dir() / "answers")
        summary["generated"] = generated_summary(generated)
    if fluency:
        prompts = [p for c in cases for p in (c.generation_prompts or c.paraphrase_prompts[:1] or (c.request.text,))]
        texts = sample(model, tokenizer, prompts, seed=seed)
        summary["GE"] = 100 * sum(ngram_entropy(t) for t in texts) / len(texts)
        summary["GE_prompts"] = "generation_prompts" if cases[0].generation_prompts else "rephrase prompt"
    return {"summary": summary, "cases": per, **({"generated": generated} if generated else {})}


def unedited_cache_file(model, cases: list[Case], dataset: str, fluency: bool, seed: int = 0,
                        generate: tuple[str, ...] = ()) -> Path:
    """Where ``unedited_score`` keeps its result. The key holds the weights, the records, the
    settings and the source of the scoring code, so a change to any of them computes it afresh."""
    modules = (metrics_module, fluency_module) + ((generated_module,) if generate else ())
    source = b"".join(Path(m.__file__).read_bytes() for m in modules)
    key = json.dumps([model_fingerprint(model), dataset, fluency, seed, hashlib.sha256(source).hexdigest(),
                      [dataclasses.asdict(c) for c in cases]] + ([list(generate)] if generate else []), default=str)
    return cache_dir() / "scores" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def unedited_score(model, tokenizer, cases: list[Case], dataset: str, fluency: bool, seed: int = 0,
                   generate: tuple[str, ...] = ()) -> dict:
    """``score`` of a model that no edit has touched, cached on disk: every N, band, λ and method run
    on the same records shares one baseline pass (at N = 1000 that pass takes half an hour here).
    A cached baseline taken from a committed result (benchmarks/seed_baseline.py) names that file
    under ``source``, and the new result says so."""
    file = unedited_cache_file(model, cases, dataset, fluency, seed, generate)
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        pass
    result = score(model, tokenizer, cases, dataset, fluency, seed, generate)
    write_json(file, result)
    return result


def run_point(model, tokenizer, cases: list[Case], dataset: str, hp: MemitHyperParams, out_file: Path, *,
              fluency: bool = True, seed: int = 0, progress: bool = True, extra: dict | None = None,
              method: str = "memit", known_facts: list[dict] | None = None, ppl_corpus: str | None = None,
              ppl_tokens: int = 20_000, delta: Delta | None = None, generate: tuple[str, ...] = (),
              save_delta: Path | None = None) -> dict:
    """Score unedited, edit all ``cases`` in one batch, score again, restore; write ``out_file``.

    With ``delta`` (a saved delta, or a LoRA adapter read by lora.py), that change is scored
    instead of an edit made here: what a truncated adapter costs, for instance. ``save_delta``
    keeps the edit made here, before it is scored, so that a new score (a new generation rule, a
    new column on a page) needs no new edit: at N = 1,000 ROME's edit takes hours.

    With ``known_facts`` (records of ``known_1000.json``), also how many of them the model still
    knows after the edit; facts about an edited subject are left out. With ``ppl_corpus``, also
    perplexity on that text before and after (general ability, as in the sequential runs).
    """
    where = machine()  # now: the commit that runs, not the one checked out when a long run ends
    t0 = time.perf_counter()
    pre = unedited_score(model, tokenizer, cases, dataset, fluency, seed, generate)
    edited_subjects = {c.request.subject for c in cases}
    known = [f for f in known_facts or [] if f["subject"] not in edited_subjects]
    known_pre = known_fact_hits(model, tokenizer, known) if known else None
    if ppl_corpus:
        pre["summary"] = pre["summary"] | {"perplexity": perplexity(model, tokenizer, ppl_corpus, ppl_tokens)}
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    if delta is None:
        ckpt = cache_dir() / "targets"  # resumes a long run; reused by runs that differ only in λ, band start …
        ckpt.mkdir(parents=True, exist_ok=True)
        delta = run(method, model, tokenizer, [c.request for c in cases], hp, progress=progress, checkpoint=ckpt)
    else:
        delta.apply(model)
    t_edit = time.perf_counter() - t0
    if save_delta:  # before scoring, so a failure there loses no edit; outside the edit's time
        save_delta.parent.mkdir(parents=True, exist_ok=True)
        delta.save(save_delta)
    t0 = time.perf_counter()
    try:
        post = score(model, tokenizer, cases, dataset, fluency, seed, generate)
        known_post = known_fact_hits(model, tokenizer, known) if known else None
        if ppl_corpus:
            post["summary"]["perplexity"] = perplexity(model, tokenizer, ppl_corpus, ppl_tokens)
    finally:
        delta.revert(model)
    t_eval += time.perf_counter() - t0  # scoring before and after; the unedited half is often cached
    result = {
        "schema": SCHEMA, "dataset": dataset, "n": len(cases), "method": delta.meta.get("method"),
        "case_ids": [c.request.case_id for c in cases],
        "unedited": pre["summary"], "edited": post["summary"],
        "edit_wall_s": t_edit, "eval_wall_s": t_eval, **_edit_fields(delta),
        "machine": where, **(extra or {}), **({"delta_file": str(save_delta)} if save_delta else {}),
        **({"unedited_source": pre["source"]} if "source" in pre else {}),
        **({"ppl_corpus": ppl_corpus, "ppl_tokens": ppl_tokens} if ppl_corpus else {}),
        **({"retention": retention_summary(known_pre, known_post)} if known else {}),
        **({"strata": counterfact_strata(pre["cases"], post["cases"])} if dataset == "counterfact" else {}),
        "per_case": {"unedited": pre["cases"], "edited": post["cases"]},
        **({"generated_per_case": {"unedited": pre.get("generated"), "edited": post.get("generated")}}
           if generate and dataset == "counterfact" else {}),
    }
    write_json(out_file, result)
    return result


def _edit_fields(delta: Delta) -> dict:
    """What the edit itself reported; a delta from elsewhere (an adapter) carries only its source."""
    if "requests" not in delta.meta:
        return {"delta_source": delta.meta.get("source")}
    reqs = delta.meta["requests"]
    return {
        "timings": delta.meta["timings"],
        "targets": {"converged": sum(r["converged"] for r in reqs), "clamped": sum(r["clamped"] for r in reqs),
                    "mean_nll": sum(r["nll"] for r in reqs) / len(reqs), **stop_summary(reqs)},
        "verification": delta.meta.get("verification"), "rounds": delta.meta.get("rounds"),
        "targets_from_cache": delta.meta.get("targets_from_cache"),
        "layers_info": delta.meta["layers_info"], "lambda": delta.meta["lambda"], "hparams": delta.meta["hparams"],
        "resid_after": delta.meta.get("resid_after"),
        "per_request": [{k: r.get(k) for k in ("nll", "steps", "clamped", "converged", "max_update_overlap", "stop",
                                               "margin", "steps_total", "holds", "round", "reason")}
                        for r in reqs],
        "spectra": delta.aux.get("spectra"),  # eigenvalues of λC₀ + KKᵀ and of KKᵀ per layer
    }
