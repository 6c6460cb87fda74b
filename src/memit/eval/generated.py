"""Scores from generated text: what a user of the edited model reads.

The paper's scores are teacher forced: the target's tokens are fed in and we ask whether
target_new beats target_true. That leaks the answer's content and its length ("The Mirage of
Model Editing", ACL 2025). Here the model answers each prompt greedily, the answer is cut where a
reader would stop reading, and it is matched against the targets as text. These scores sit beside
the teacher-forced ones and never replace them.

How an answer is cut: leading whitespace is dropped, then the text ends at the end of its first
line, at its first sentence end (``.``, ``!`` or ``?`` before a space or the end, except after
an abbreviation such as "St." or "U.S."), at end-of-sequence, or at the token budget.

How text is matched, both sides alike: Unicode NFKC, case-folded, every punctuation character
replaced by a space, the articles "a", "an" and "the" dropped, whitespace collapsed. "Exact"
means the answer starts with the target's words; "contains" means the target's words appear in
it as whole words. A target that normalises to nothing never matches.

The chat form asks the same prompt as one user turn in the tokenizer's chat template
(``CHAT_TURN``), as a user of an instruct model would; such answers often restate the prompt
("The Eiffel Tower is in Rome."), so "contains" is the figure to read there.

At N = 1,000 a form is tens of thousands of answers and takes most of an hour on a CPU, so with
``resume`` the answers are kept on disk as each chunk finishes, under a key of the model's weights,
the form, the budget, the turn and this code: a run that was cut off goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from memit.eval import fluency
from memit.eval.fluency import sample
from memit.eval.metrics import bootstrap_ci
from memit.requests import Case

FORMS = ("plain", "chat")
BUDGET = {"plain": 16, "chat": 32}  # new tokens; chat answers restate the question first
CHAT_TURN = "Complete the sentence: {prompt}"
KINDS = ("rewrite", "paraphrase", "neighborhood")
MATCHES = ("new_exact", "new_contains", "true_exact", "true_contains")
_ARTICLES = frozenset({"a", "an", "the"})
_END = re.compile(r"[.!?](?=\s|$)")
_ABBREV = re.compile(r"(?:^|\s)(?:[A-Z][a-z]?|(?:[A-Za-z]\.)+[A-Za-z])$")  # "St", "Dr", "U.S", "D.C"


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def _targets(targets: str | Sequence[str]) -> list[str]:
    return [t for t in (normalise(x) for x in ([targets] if isinstance(targets, str) else targets)) if t]


def exact_match(answer: str, targets: str | Sequence[str]) -> bool:
    """The answer starts with one of the targets, at a word boundary."""
    a = normalise(answer)
    return any(a == t or a.startswith(t + " ") for t in _targets(targets))


def contains(answer: str, targets: str | Sequence[str]) -> bool:
    """One of the targets appears in the answer as whole words."""
    a = f" {normalise(answer)} "
    return any(f" {t} " in a for t in _targets(targets))


def first_answer(text: str) -> str:
    """The part of a continuation a reader takes as its answer (the module docstring's rule)."""
    text = text.lstrip().split("\n", 1)[0]
    for m in _END.finditer(text):
        if m.group() != "." or not _ABBREV.search(text[: m.start()]):
            return text[: m.end()]
    return text


def settled(text: str) -> bool:
    """Whether ``first_answer`` of ``text`` is final: it already ends before the text does, so no
    token generated after it can change the answer (a sentence end needs the space after it)."""
    return len(first_answer(text)) < len(text.lstrip())


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer, prompt: str, form: str, turn: str = CHAT_TURN) -> list[int]:
    """Token ids of ``prompt`` as plain text, or as one user turn (``turn`` around it) of the chat
    template followed by the start of the assistant's turn."""
    if form == "plain":
        return tokenizer(prompt)["input_ids"]
    if form != "chat":
        raise ValueError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    text = tokenizer.apply_chat_template([{"role": "user", "content": turn.format(prompt=prompt)}],
                                         add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def answers(model, tokenizer, prompts: list[str], form: str = "plain", max_new_tokens: int | None = None,
            batch_size: int = 64, turn: str = CHAT_TURN, store: Path | None = None, chunk: int = 512) -> list[str]:
    """The greedy answer to each prompt, cut by ``first_answer``. Each distinct prompt is generated
    once (CounterFact's neighbourhood prompts repeat across cases), shortest first so that a
    batch holds little padding, and only until its answer is ``settled``. With ``store`` (a JSON
    lines file) the answers found there are not generated again, and new ones are appended to it
    ``chunk`` prompts at a time."""
    budget = max_new_tokens or BUDGET[form]
    got = _stored(store)
    unique = [p for p in dict.fromkeys(prompts) if p not in got]
    ids = {p: prompt_ids(tokenizer, p, form, turn) for p in unique}
    order = sorted(unique, key=lambda p: len(ids[p]))
    step = chunk if store else max(len(order), 1)
    if store and order:
        _close_last_line(store)
    for i in range(0, len(order), step):
        part = order[i: i + step]
        texts = sample(model, tokenizer, [ids[p] for p in part], max_new_tokens=budget, top_k=1,
                       batch_size=batch_size, desc=f"answering {len(order)} prompts ({form}, from {i})",
                       done=lambda new: settled(tokenizer.decode(new, skip_special_tokens=True)))
        new = {p: first_answer(t) for p, t in zip(part, texts)}
        got |= new
        if store:
            with store.open("a") as f:
                f.writelines(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in new.items())
    return [got[p] for p in prompts]


def answer_store(directory: Path, model_fp: str, form: str, turn: str = CHAT_TURN) -> Path:
    """Where ``answers`` keeps one model's answers in one form: the key holds the weights, the
    form, its budget, the chat turn and the source of the decoding and cutting code."""
    source = Path(fluency.__file__).read_bytes() + Path(__file__).read_bytes()
    key = json.dumps([model_fp, form, BUDGET[form], turn, hashlib.sha256(source).hexdigest()])
    return directory / f"{form}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.jsonl"


def _close_last_line(store: Path) -> None:
    """Make sure ``store`` exists and ends in a newline, so that a line cut off by an interruption
    stays a line of its own (which ``_stored`` skips) instead of swallowing the next one."""
    store.parent.mkdir(parents=True, exist_ok=True)
    with store.open("a+b") as f:
        if f.seek(0, 2) and (f.seek(-1, 2), f.read(1))[1] != b"\n":
            f.write(b"\n")


def _stored(store: Path | None) -> dict[str, str]:
    """The answers kept in ``store``; a last line cut off by an interruption is left out."""
    out: dict[str, str] = {}
    if store is None or not store.is_file():
        return out
    for line in store.read_text().splitlines():
        try:
            row = json.loads(line)
            out[row["prompt"]] = row["answer"]
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _match(answer: str, new: Sequence[str], true: Sequence[str]) -> dict:
    return {"new_exact": exact_match(answer, new), "new_contains": contains(answer, new),
            "true_exact": exact_match(answer, true), "true_contains": contains(answer, true)}


def counterfact_generated(model, tokenizer, cases: list[Case], forms: Sequence[str] = FORMS,
                          resume: Path | None = None) -> dict:
    """Per form and case: for every rewrite, paraphrase and neighbourhood prompt, whether the
    greedy answer starts with / contains target_new and target_true, and the rewrite answers
    themselves. A form the tokenizer cannot give (chat without a template) is None. ``resume``: a
    directory where the answers are kept as they come (``answer_store``)."""
    fp = None
    if resume is not None:
        from memit.fingerprint import model_fingerprint

        fp = model_fingerprint(model)
    prompts = [p for c in cases for kind in _prompts(c).values() for p in kind]
    out: dict[str, list[dict] | None] = {}
    for form in forms:
        if form == "chat" and not has_chat_template(tokenizer):
            out[form] = None
            continue
        store = answer_store(resume, fp, form) if resume is not None else None
        got = iter(answers(model, tokenizer, prompts, form, store=store))
        per = []
        for c in cases:
            r, row = c.request, {"case_id": c.request.case_id}
            for kind, ps in _prompts(c).items():
                texts = [next(got) for _ in ps]
                row[kind] = [_match(t, [r.target_new], [r.target_true] if r.target_true else []) for t in texts]
                if kind == "rewrite":
                    row["rewrite_answers"] = texts
            per.append(row)
        out[form] = per
    return out


def _prompts(c: Case) -> dict[str, list[str]]:
    return {"rewrite": [c.request.text], "paraphrase": list(c.paraphrase_prompts),
            "neighborhood": list(c.neighborhood_prompts)}


def generated_summary(per_form: dict) -> dict:
    """Rates (%) per form, prompt kind and match, averaged over a case's prompts and then over cases
    (as the teacher-forced rates are), with bootstrap intervals; and the headline figures:
    ``gen_ES/PS`` (plain, answer starts with target_new), ``gen_NS`` (plain, neighbourhood answer
    still starts with target_true) and ``chat_ES/PS/NS`` (the same in chat, by "contains")."""
    out: dict = {"forms": {}}
    for form, per in per_form.items():
        if per is None:
            out["forms"][form] = None
            continue
        rates: dict = {}
        for kind in KINDS:
            rates[kind] = {}
            for m in MATCHES:
                vals = [sum(x[m] for x in c[kind]) / len(c[kind]) for c in per if c[kind]]
                rates[kind][m] = 100 * sum(vals) / len(vals) if vals else None
                rates[kind][m + "_ci95"] = [100 * v for v in bootstrap_ci(vals)] if vals else None
        out["forms"][form] = rates
        prefix, how = ("gen", "exact") if form == "plain" else ("chat", "contains")
        for key, kind, which in (("ES", "rewrite", "new"), ("PS", "paraphrase", "new"), ("NS", "neighborhood", "true")):
            out[f"{prefix}_{key}"] = rates[kind][f"{which}_{how}"]
    return out
