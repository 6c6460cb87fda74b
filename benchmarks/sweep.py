"""A resumable sweep over settings of the SmolLM2 preset, shared by the tuning scripts: on SmolLM2,
or with ``--model`` on another model, where the SmolLM2 preset is the starting point.

Each configuration edits one batch of the first N counterfact-train facts, is scored (ES/PS/NS and
perplexity on wikitext-2 *validation*, never the test text the results pages report), reverted,
and written to the sweep's JSON at once with the machine and commit it ran on: a rerun skips what
is done, so a sweep can be stopped and resumed, across machines, without mixing up whose figures
are whose.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import memit
from memit.eval.metrics import counterfact_case_scores, counterfact_summary, known_fact_hits, retention_summary
from memit.eval.perplexity import perplexity
from memit.eval.run import machine
from memit.hparams import preset_for
from memit.methods import run
from memit.stopping import stop_summary

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
DATA = SHARED / "counterfact/easyedit/counterfact-train.json"
VALID = SHARED / "wikitext-2-raw/wiki.valid.raw"
KNOWN = SHARED / "known_1000.json"

# name → (method, settings changed from the SmolLM2 preset)
Configs = dict[str, tuple[str, dict]]


def main(doc: str, configs: Configs, plot: Callable[[dict, Path], Path], table: Callable[[dict], str],
         out: str, model: str = "smollm2-135m", **measure_kw) -> None:
    """The command line every tuning script shares: run what is missing, then plot and tabulate."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default=out)
    ap.add_argument("--only", nargs="+", choices=list(configs), metavar="NAME",
                    help=f"run only these configurations (of {', '.join(configs)})")
    ap.add_argument("--report", action="store_true", help="only redraw the plot and print the table")
    ap.add_argument("--model", default=model, help="the model to tune on (its name is in the result file's)")
    args = ap.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / (f"tune_n{args.n}.json" if args.model == "smollm2-135m" else f"tune_{args.model}_n{args.n}.json")
    results = json.loads(file.read_text()) if file.exists() else {"runs": {}}
    if not args.report:
        chosen = {k: configs[k] for k in args.only} if args.only else configs
        measure(chosen, results, args.n, file, model=args.model, **measure_kw)
    plot(results, file.with_suffix(".png"))
    print(table(results))


def measure(configs: Configs, results: dict, n: int, file: Path, *,
            prepare: Callable[[object, object, dict], None] | None = None, checkpoint: Path | None = None,
            retention: bool = False, model: str = "smollm2-135m") -> None:
    """Run every configuration not in ``results`` yet, writing the file after each.

    ``prepare(model, tok, results)`` adds what the sweep needs once (AlphaEdit's C₀ spectrum);
    ``checkpoint`` shares target vectors between configurations that cannot change them;
    ``retention`` also scores the known facts (known_1000.json) about subjects not edited."""
    todo = [name for name in configs if name not in results["runs"]]
    if not todo:
        return
    name, (model, tok) = model, memit.load_model(model)
    cases = memit.load_cases(str(DATA), n=n)
    reqs = [c.request for c in cases]
    if "unedited" not in results:
        results["unedited"] = score(model, tok, cases)
        results.update(n=n, data=str(DATA), perplexity_text=str(VALID), machine=machine(), model=name)
    known = None
    if retention:  # known facts about other subjects: how many the edit leaves known
        subjects = {r.subject for r in reqs}
        known = [f for f in json.loads(KNOWN.read_text()) if f["subject"] not in subjects]
        if "known_unedited" not in results:
            results["known_unedited"] = known_fact_hits(model, tok, known)
    if prepare:
        prepare(model, tok, results)
    file.write_text(json.dumps(results, indent=1))
    for name in todo:
        method, changes = configs[name]
        hp = preset_for("smollm2-135m").with_changes(changes)
        t = time.perf_counter()
        delta = run(method, model, tok, reqs, hp, checkpoint=checkpoint)
        post = score(model, tok, cases)
        if known is not None:
            post["known_kept"] = retention_summary(results["known_unedited"], known_fact_hits(model, tok, known))["kept"]
        delta.revert(model)
        reqs_meta = delta.meta["requests"]
        results["runs"][name] = {"method": method, "changes": changes, "edited": post, "wall_s": time.perf_counter() - t,
                                 "layers_info": delta.meta["layers_info"], "machine": machine(),
                                 "timings": delta.meta["timings"], "verification": delta.meta.get("verification"),
                                 **stop_summary(reqs_meta)}
        print(name, {k: round(post[k], 2) for k in ("ES", "PS", "NS", "Score", "perplexity")}, flush=True)
        file.write_text(json.dumps(results, indent=1))


def score(model, tok, cases: list) -> dict:
    out = counterfact_summary(counterfact_case_scores(model, tok, cases))
    out["perplexity"] = perplexity(model, tok, str(VALID))
    return out
