"""Editing over time, measured: batches of B edits one after another; after each batch, the scores
of every edit made so far, perplexity on held-out text and, if given, how many unrelated known facts
the model still knows (docs/algorithm.md §2, sequential; the AlphaEdit comparison; the review's retention test).

Each batch is a step of an edit journal next to the result file, so a rerun replays the finished
batches exactly and goes on; the result file is rewritten after every batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from memit.eval.metrics import known_fact_hits, retention_summary
from memit.eval.perplexity import perplexity
from memit.eval.results import SCHEMA
from memit.files import write_json
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.journal import Journal, JournalError
from memit.methods import METHODS, run
from memit.methods.sequential import edited_weights, sequence_stats
from memit.models.loading import cache_dir
from memit.requests import Case


def journaled_runs(folders: list[str | Path]) -> Iterator[tuple[Journal, dict, int]]:
    """Each sequential run in ``folders`` that still has its journal beside it: (journal, result,
    steps the result has scored). Measurements made afterwards stop at the scored steps, so they
    describe the same edits as the scores even while the run is still going; a run with no batch
    scored yet has nothing to measure and is left out."""
    for jdir in sorted(j for folder in folders for j in Path(folder).glob("*.journal")):
        run = json.loads(jdir.with_suffix(".json").read_text())
        if len(run["points"]) > 1:
            yield Journal(jdir), run, len(run["points"]) - 1


def _scores(model, tokenizer, cases: list[Case], dataset: str, edits: int, generate: tuple[str, ...] = ()) -> dict:
    """Scores of all ``cases``; those of the unedited model come from the shared baseline cache,
    so the methods compared on the same records score it once."""
    from memit.eval.run import score, unedited_score

    scorer = unedited_score if edits == 0 else score
    return scorer(model, tokenizer, cases, dataset, fluency=False, generate=generate)["summary"]


def run_sequence(model, tokenizer, cases: list[Case], dataset: str, method: str, hp: MemitHyperParams,
                 batch_size: int, out_file: Path, *, ppl_corpus: str | None = None, ppl_tokens: int = 20_000,
                 progress: bool = True, extra: dict | None = None, known_facts: list[dict] | None = None,
                 max_batches: int | None = None, generate: tuple[str, ...] = (), score_every: int = 1) -> dict:
    """Edit ``cases`` in consecutive batches with ``method``; the model is restored at the end.

    With ``known_facts`` (records of ``known_1000.json``), every point also says how many of those
    the unedited model knew it still knows. Facts about any subject the run edits are left out, so
    every point is scored on the same facts. ``max_batches`` stops after that many newly edited
    batches; a later call goes on from there. ``generate`` adds the generated-answer scores
    (eval/generated.py) to the unedited point and the last one: the endpoints, since answering every
    prompt of every edit so far after each batch would cost more than the edits. ``score_every``
    scores every k-th batch (and the last) instead of each: scoring all edits so far after every
    batch costs more than the edits themselves on a CPU, quadratically in the run's length.
    """
    from memit.eval.run import machine

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(out_file.with_name(out_file.stem + ".journal"))
    base = model_fingerprint(model)
    if out_file.is_file():
        result = json.loads(out_file.read_text())
    else:
        result = {"schema": SCHEMA, "dataset": dataset, "method": method, "n": len(cases), "batch_size": batch_size,
                  "case_ids": [c.request.case_id for c in cases], "hparams": hp.to_dict(), "machine": machine(),
                  "ppl_corpus": ppl_corpus, "ppl_tokens": ppl_tokens, **(extra or {}), "points": []}
    subjects = {c.request.subject for c in cases}
    known = [f for f in known_facts or [] if f["subject"] not in subjects]
    if not result["points"]:  # the unedited model, on every record of the run
        result["points"].append(_point(model, tokenizer, cases, 0, dataset, ppl_corpus, ppl_tokens, generate))
        if known:
            result["known_unedited"] = known_fact_hits(model, tokenizer, known)
            result["points"][0]["retention"] = retention_summary(result["known_unedited"], result["known_unedited"])
        write_json(out_file, result)
    if known and "known_unedited" not in result:
        raise JournalError(f"{out_file} was started without known facts; resume it without them or start a new file")
    started = result["hparams"].get("sequential_stats", "current")
    if started != hp.sequential_stats:
        raise JournalError(f"{out_file} was started with sequential_stats {started!r}, not {hp.sequential_stats!r}")
    scored = -(-result["points"][-1]["edits"] // batch_size)
    if scored > len(journal.steps):  # scores of edits the journal no longer holds
        raise JournalError(f"{out_file} has {scored} batches scored but its journal "
                           f"{journal.dir} holds {len(journal.steps)}: the journal was lost or moved; restore it, "
                           "or start a new result file (the scores there would describe other edits)")
    stats = sequence_stats(model, tokenizer, hp, progress)  # before the replay: the unedited model's
    originals = edited_weights(model, hp) if METHODS[method].anchored else None  # likewise
    applied = journal.replay(model)
    try:
        _batches(_Sequence(model, tokenizer, cases, dataset, method, hp, batch_size, out_file, journal, base, result,
                           applied, stats, known, ppl_corpus, ppl_tokens, progress, max_batches, generate, score_every,
                           originals))
    finally:
        for delta in reversed(applied):  # bit-exact, last edit first
            delta.revert(model)
    return result


def _point(model, tokenizer, cases: list[Case], edits: int, dataset: str, ppl_corpus: str | None,
           ppl_tokens: int, generate: tuple[str, ...] = ()) -> dict:
    """Scores on ``cases`` (and perplexity) of the model as it is after ``edits`` edits."""
    point = {"edits": edits, **_scores(model, tokenizer, cases, dataset, edits, generate)}
    if ppl_corpus:
        point["perplexity"] = perplexity(model, tokenizer, ppl_corpus, ppl_tokens)
    return point


@dataclass
class _Sequence:
    """What one sequence run edits and scores, in one record instead of a long argument list."""
    model: object
    tokenizer: object
    cases: list[Case]
    dataset: str
    method: str
    hp: MemitHyperParams
    batch_size: int
    out_file: Path
    journal: Journal
    base: str  # the unedited model's fingerprint
    result: dict
    applied: list  # the Deltas on the model, in order
    stats: dict | None
    known: list[dict]
    ppl_corpus: str | None
    ppl_tokens: int
    progress: bool
    max_batches: int | None
    generate: tuple[str, ...]
    score_every: int
    originals: dict | None  # the edited weights before the first batch, for anchored methods


def _batches(seq: _Sequence) -> None:
    """Batch b is edited unless the journal already holds it, then scored (when it is a k-th batch
    or the last) unless the result file already has its point (a crash between the two leaves an
    edited but unscored batch)."""
    s, result = seq, seq.result
    edited, last = 0, -(-len(s.cases) // s.batch_size) - 1
    for b in range(last + 1):
        edit_s = None
        if b >= len(s.journal.steps):
            if s.max_batches is not None and edited >= s.max_batches:
                return
            edited += 1
            batch = s.cases[b * s.batch_size: (b + 1) * s.batch_size]
            t = time.perf_counter()
            delta = run(s.method, s.model, s.tokenizer, [c.request for c in batch], s.hp, prior=s.journal.prior(),
                        progress=s.progress, checkpoint=cache_dir() / "targets", stats=s.stats,  # a cut batch resumes
                        base=s.originals)
            s.applied.append(delta)
            s.journal.append(s.base, delta)
            edit_s = time.perf_counter() - t
            result.setdefault("batch_edit_s", {})[str(b)] = edit_s
            write_json(s.out_file, result)
        so_far = s.cases[: (b + 1) * s.batch_size]
        if ((b + 1) % s.score_every == 0 or b == last) and result["points"][-1]["edits"] < len(so_far):
            point = _point(s.model, s.tokenizer, so_far, len(so_far), s.dataset, s.ppl_corpus, s.ppl_tokens,
                           s.generate if b == last else ())
            point["edit_s"] = edit_s  # this batch's edit; batch_edit_s has every batch's
            if s.known:
                point["retention"] = retention_summary(result["known_unedited"],
                                                       known_fact_hits(s.model, s.tokenizer, s.known))
            result["points"].append(point)
            write_json(s.out_file, result)
            if s.progress:
                keys = [k for k, v in point.items() if isinstance(v, float) and k != "edit_s"]
                kept = (point.get("retention") or {}).get("kept")
                kept = f"  known facts kept {kept:.1f}" if kept is not None else ""
                print(f"{s.method}: {point['edits']} edits: " + "  ".join(f"{k} {point[k]:.1f}" for k in keys) + kept)
