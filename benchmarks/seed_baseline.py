"""Put the unedited scores of a committed result into the score cache, so that a new point on the
same records and model skips its baseline pass.

At N = 1,000 with generated answers the unedited pass takes as long as the edit, and every session
here starts on a fresh machine with an empty cache. A committed result already holds that pass,
record by record (``per_case`` and ``generated_per_case``). This script checks that it was made by
the scoring code checked out now (the last commit that changed eval/metrics.py, fluency.py or
generated.py must be an ancestor of the result's commit) and on the same records, then writes it
under the key ``memit eval`` will look for. The new result names the file under
``unedited_source``.

    python benchmarks/seed_baseline.py benchmarks/results/generated/counterfact_memit_n1000.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import memit
from memit.eval.run import select, unedited_cache_file
from memit.files import write_json

ROOT = Path(__file__).resolve().parent.parent
SCORING = ["src/memit/eval/metrics.py", "src/memit/eval/fluency.py", "src/memit/eval/generated.py"]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def fail(message: str) -> None:
    print(f"seed_baseline: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", help="a committed memit eval result with per-record unedited scores")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", help="the records (default: the result's own 'data', from the repository root)")
    args = ap.parse_args(argv)
    try:
        r = json.loads(Path(args.result).read_text())
    except (OSError, ValueError) as e:
        fail(f"{args.result}: not a readable result ({e})")
    commit = (r.get("machine") or {}).get("commit")
    if not commit or "per_case" not in r:
        fail(f"{args.result}: needs machine.commit and per_case")
    last = git("log", "-1", "--format=%H", "--", *SCORING).stdout.strip()
    if not last:
        fail(f"{ROOT} is not a git checkout: the scoring code's history cannot be checked")
    if git("merge-base", "--is-ancestor", last, commit).returncode != 0:
        fail(f"{args.result}: made at {commit[:10]}, before the scoring code changed at {last[:10]}")
    forms = tuple(f for f in ("plain", "chat") if f in ((r["unedited"].get("generated") or {}).get("forms") or {}))
    fluency = "GE" in r["unedited"]
    data = Path(args.data or ROOT / r["data"])
    cases = select(memit.load_cases(data, check_batch=False), r["n"], 0, r.get("sample", "first"))
    if [c.request.case_id for c in cases] != r["case_ids"]:
        fail(f"{data}: its first {r['n']} records are not the result's case_ids")
    model, _ = memit.load_model(args.model, dtype="float32")
    file = unedited_cache_file(model, cases, r["dataset"], fluency, 0, forms)
    summary = {k: v for k, v in r["unedited"].items() if k != "perplexity"}  # perplexity is never cached
    value = {"summary": summary, "cases": r["per_case"]["unedited"],
             **({"generated": r["generated_per_case"]["unedited"]} if forms else {}),
             "source": {"file": str(Path(args.result)), "commit": commit}}
    write_json(file, value)
    print(f"{file}: unedited scores of {r['n']} records from {args.result} "
          f"(fluency {'on' if fluency else 'off'}, generated {', '.join(forms) or 'none'})")


if __name__ == "__main__":
    main()
