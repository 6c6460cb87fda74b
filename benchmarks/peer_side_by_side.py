"""memit against the paper's own MEMIT code, on the same facts, the same model and this machine, in
one run: the speed claim and the quality it comes with.

The paper's code (kmeng01/memit, patched only to run here) is driven by
``../shared/peers/memit_official/run.sh``. Its statistics pass is warmed first on one fact, so the
timed run reads them from its cache, as memit reads its own. Its time is the edit without the
statistics (``total_edit_excl_stats_s``); memit's is the wall time of the whole ``memit edit``
process, model load and verification included, so the ratio does not favour memit. Both edited
models are then scored by the peer folder's own scorer (``cf_score.py``), which shares no code
with memit's metrics. Resumable: each finished part leaves its files under ``--work`` and is not
run again; only the summary JSON goes into the repository.

    python benchmarks/peer_side_by_side.py --n 100 --out benchmarks/results/peer
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pages.sweeps import peer_table

from memit.eval.run import machine
from memit.files import write_json

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
PEER = SHARED / "peers" / "memit_official"
RECORDS = SHARED / "data" / "counterfact" / "counterfact_fullschema_union.json"
SCORES = ("ES", "PS", "NS", "Score")


def sh(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run a command with its output in ``log``; its wall time in seconds."""
    t0 = time.perf_counter()
    env = {"PEER_PYTHON": sys.executable} | os.environ | (env or {})  # run.sh: this Python, with torch
    with log.open("w") as f:
        done = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"peer_side_by_side: {cmd[0]} failed with {done.returncode} (see {log})")
    return time.perf_counter() - t0


def peer(records: Path, n: int, out: Path) -> dict:
    warm = out / "peer_warm"
    if not (warm / "score_edited.json").exists():
        print("paper's code: statistics pass, on one fact ...", flush=True)
        sh(["bash", str(PEER / "run.sh"), str(records), "1", str(warm)], out / "peer_warm.log")
    run = out / "peer"
    if not (run / "score_base.json").exists():
        print(f"paper's code: {n} facts ...", flush=True)
        sh(["bash", str(PEER / "run.sh"), str(records), str(n), str(run)], out / "peer.log")
    timings = json.loads((run / "timings.json").read_text())
    return {"edit_s": timings["total_edit_excl_stats_s"], "timings": timings,
            "edited": json.loads((run / "score_edited.json").read_text())["summary"],
            "unedited": json.loads((run / "score_base.json").read_text())["summary"]}


def ours(records: Path, n: int, out: Path, preset: str) -> dict:
    run = out / f"memit_{preset}"
    model = run / "model"
    wall = run / "wall.json"
    if not wall.exists():
        print(f"memit ({preset}): {n} facts ...", flush=True)
        run.mkdir(parents=True, exist_ok=True)
        s = sh([sys.executable, "-m", "memit.cli", "edit", "--preset", preset, "--requests", str(records), "--n", str(n), "--out", str(model),
                "--force"], run / "edit.log", env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
        write_json(wall, {"edit_s": s})
    score = run / "score_edited.json"
    if not score.exists():
        sh([sys.executable, str(PEER / "cf_score.py"), str(model), str(records), "--n", str(n), "--out", str(score)],
           run / "score_edited.log")
    report = json.loads((model / "report.json").read_text())
    meta = json.loads((model / "memit_edit.json").read_text())
    return {"edit_s": json.loads(wall.read_text())["edit_s"], "timings": meta["timings"],
            "edited": json.loads(score.read_text())["summary"], "held": report.get("held"),
            "rounds_used": report.get("rounds_used")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--records", type=Path, default=RECORDS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peer")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "memit-side-by-side",
                    help="where the edited models and logs go (large; kept out of the repository)")
    ap.add_argument("--presets", nargs="+", default=["smollm2-135m", "smollm2-135m-paper"])
    args = ap.parse_args()
    for f in (PEER / "run.sh", args.records):
        if not f.exists():
            sys.exit(f"peer_side_by_side: {f} not found (needs ../shared beside the repository)")
    out = args.work / f"n{args.n}"
    out.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"n": args.n, "records": str(args.records.relative_to(SHARED)) if args.records.is_relative_to(SHARED)
              else str(args.records), "machine": machine(), "peer": peer(args.records, args.n, out)}
    result["memit"] = {p: ours(args.records, args.n, out, p) for p in args.presets}
    for r in result["memit"].values():
        r["speedup"] = result["peer"]["edit_s"] / r["edit_s"]
    write_json(args.out / f"side_by_side_n{args.n}.json", result)
    print(peer_table(result))


if __name__ == "__main__":
    main()
