"""Multi-hop questions after an edit (MQuAKE, Zhong et al. 2023).

Each MQuAKE case is a chain of facts ("Hey Jude" was performed by → … → the official language of
that country) and edits to some of them; its three multi-hop questions ask for the end of the
chain, whose answer the edits change. A model that stores the edited facts but cannot chain them
answers the single hops with the new facts and the multi-hop question with the old answer: the
gap between single-hop edit success and multi-hop accuracy is what this measures.

Every answer is generated (eval/generated.py). Questions go in as "Q: … A:" in plain text, and as
the bare question in a user turn of the chat template. A case's multi-hop answer counts as new
(or old) when any of its three questions is answered so, as in MQuAKE; the mean over the
questions is reported beside it. Single hops are the edited facts' own cloze prompts (generated)
and their teacher-forced efficacy (target_new more likely than target_true).

Two protocols: ``per-case`` edits each case's facts in one batch and restores the model before
the next case; ``all`` edits the facts of every chosen case in one batch. In ``all``, a fact
that two cases edit alike is edited once; one that they edit to different targets keeps the
first case's target, and the result counts the dropped ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from memit.eval.generated import answers as generate_answers
from memit.eval.generated import contains, exact_match, has_chat_template
from memit.eval.metrics import bootstrap_ci, target_nll
from memit.files import write_json
from memit.hparams import MemitHyperParams
from memit.methods import run
from memit.requests import EditRequest, RequestError

PLAIN_QUESTION = "Q: {question}\nA:"
CHAT_QUESTION = "{prompt}"


@dataclass(frozen=True)
class MquakeCase:
    case_id: int
    requests: tuple[EditRequest, ...]
    questions: tuple[str, ...]
    new_answers: tuple[str, ...]  # the new answer and its aliases
    old_answers: tuple[str, ...]


def load_mquake(path: str | Path, n: int | None = None) -> list[MquakeCase]:
    """MQuAKE-CF records (``requested_rewrite``, ``questions``, ``answer``/``new_answer`` and their
    aliases); a record without them is a one-line error naming it."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RequestError(f"{path}: cannot read MQuAKE records ({e})") from None
    if not isinstance(records, list):
        raise RequestError(f"{path}: MQuAKE records must be a JSON list")
    out = []
    for i, rec in enumerate(records[:n] if n else records):
        where = f"{path}: record {i}"
        try:
            reqs = tuple(EditRequest(r["prompt"], r["subject"], r["target_new"]["str"], r["target_true"]["str"],
                                     f"{rec['case_id']}.{j}") for j, r in enumerate(rec["requested_rewrite"]))
            case = MquakeCase(rec["case_id"], reqs, tuple(rec["questions"]),
                              (rec["new_answer"], *rec.get("new_answer_alias", [])),
                              (rec["answer"], *rec.get("answer_alias", [])))
        except (KeyError, TypeError) as e:
            raise RequestError(f"{where}: not in the MQuAKE schema (missing {e})") from None
        if any(r.prompt.count("{}") != 1 for r in reqs):
            raise RequestError(f"{where}: a requested_rewrite prompt must contain '{{}}' exactly once")
        out.append(case)
    return out


def batch_requests(cases: list[MquakeCase]) -> tuple[list[EditRequest], int]:
    """The facts of ``cases`` as one batch: duplicates once, conflicts resolved to the first
    target; and how many requests were dropped as conflicts."""
    seen: dict[tuple[str, str], str] = {}
    reqs, conflicts = [], 0
    for c in cases:
        for r in c.requests:
            key = (r.prompt, r.subject)
            if key not in seen:
                seen[key] = r.target_new
                reqs.append(r)
            elif seen[key] != r.target_new:
                conflicts += 1
    return reqs, conflicts


def forms_for(tokenizer) -> tuple[str, ...]:
    return ("plain", "chat") if has_chat_template(tokenizer) else ("plain",)


def score_cases(model, tokenizer, cases: list[MquakeCase]) -> list[dict]:
    """Per case: for each form, the multi-hop answers matched against new and old answers, and the
    single-hop (edited facts') answers against target_new; the teacher-forced single-hop efficacy."""
    per = [{"case_id": c.case_id} for c in cases]
    forms = forms_for(tokenizer)
    for form in forms:
        qs = [q if form == "chat" else PLAIN_QUESTION.format(question=q) for c in cases for q in c.questions]
        hops = [r.text for c in cases for r in c.requests]
        got_q = iter(generate_answers(model, tokenizer, qs, form, turn=CHAT_QUESTION))
        got_h = iter(generate_answers(model, tokenizer, hops, form))
        match = exact_match if form == "plain" else contains
        for row, c in zip(per, cases):
            texts = [next(got_q) for _ in c.questions]
            row[form] = {"answers": texts,
                         "new": [match(t, c.new_answers) for t in texts],
                         "old": [match(t, c.old_answers) for t in texts],
                         "single_hop": [match(next(got_h), [r.target_new]) for r in c.requests]}
    pairs = [(r.text, t) for c in cases for r in c.requests for t in (r.target_new, r.target_true)]
    nll = iter(target_nll(model, tokenizer, pairs))
    for row, c in zip(per, cases):
        row["single_hop_tf"] = [next(nll) < next(nll) for _ in c.requests]
    return per


def summary(per: list[dict]) -> dict:
    """Rates (%) over cases with bootstrap intervals: multi-hop new/old answer (any of the three
    questions, and the mean over them) per form, single-hop generated per form, single-hop teacher forced."""
    def rate(vals: list[float]) -> dict:
        return {"rate": 100 * sum(vals) / len(vals), "ci95": [100 * v for v in bootstrap_ci(vals)]} if vals else None

    out: dict = {"cases": len(per), "single_hop_tf": rate([sum(r["single_hop_tf"]) / len(r["single_hop_tf"])
                                                           for r in per])}
    for form in ("plain", "chat"):
        rows = [r[form] for r in per if form in r]
        if not rows:
            continue
        out[form] = {
            "multi_hop_new_any": rate([float(any(r["new"])) for r in rows]),
            "multi_hop_new_mean": rate([sum(r["new"]) / len(r["new"]) for r in rows]),
            "multi_hop_old_any": rate([float(any(r["old"])) for r in rows]),
            "single_hop": rate([sum(r["single_hop"]) / len(r["single_hop"]) for r in rows]),
        }
    return out


def run_mquake(model, tokenizer, cases: list[MquakeCase], hp: MemitHyperParams, method: str, mode: str,
               out_file: Path, *, progress: bool = True, extra: dict | None = None) -> dict:
    """Score the unedited model, edit by ``mode`` (``per-case`` or ``all``), score, restore; write
    ``out_file``. Per case, a result is kept as soon as it is scored: a rerun goes on from there."""
    from memit.eval.run import machine

    out_file = Path(out_file)
    result = json.loads(out_file.read_text()) if out_file.is_file() else {
        "dataset": "mquake", "method": method, "mode": mode, "n": len(cases), "case_ids": [c.case_id for c in cases],
        "hparams": hp.to_dict(), "machine": machine(), **(extra or {})}
    if "unedited" not in result:
        per = score_cases(model, tokenizer, cases)
        result.update(unedited=summary(per), per_case_unedited=per)
        write_json(out_file, result)
    t0 = time.perf_counter()
    if mode == "all":
        if "edited" not in result:
            reqs, conflicts = batch_requests(cases)
            delta = run(method, model, tokenizer, reqs, hp, progress=progress)
            try:
                per = score_cases(model, tokenizer, cases)
            finally:
                delta.revert(model)
            v = delta.meta.get("verification") or {}
            result.update(edited=summary(per), per_case_edited=per, requests=len(reqs), conflicts_dropped=conflicts,
                          held=v.get("held"), edit_wall_s=time.perf_counter() - t0)
    elif mode == "per-case":
        done = result.setdefault("per_case_edited", [])
        for c in tqdm(cases[len(done):], desc="MQuAKE cases, one edit each", disable=not progress,
                      initial=len(done), total=len(cases)):
            delta = run(method, model, tokenizer, list(c.requests), hp, progress=False)
            try:
                row = score_cases(model, tokenizer, [c])[0]
            finally:
                delta.revert(model)
            row["held"] = (delta.meta.get("verification") or {}).get("held")
            done.append(row)
            write_json(out_file, result)
        result["edited"] = summary(done)
        result["edit_wall_s"] = result.get("edit_wall_s", 0) + time.perf_counter() - t0
    else:
        raise ValueError(f"mode must be per-case or all, not {mode!r}")
    write_json(out_file, result)
    return result
