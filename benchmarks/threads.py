"""Two long runs on a small CPU: side by side with one thread each, or one after the other?

Times the target-vector optimisation of the same requests three ways: alone with all threads,
alone with one thread, and two copies at once with one thread each. The throughput ratio says
which way a queue of long runs (sequential editing, N = 1000 batches) should go.

    python benchmarks/threads.py --n 12 --out benchmarks/results/speed/threads.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared/data/counterfact/easyedit/counterfact-train.json"


def one(n: int, threads: int) -> float:
    """Seconds for the target vectors of ``n`` train requests (records 150 on: not stored anywhere)."""
    import torch

    import memit
    from memit.hparams import preset_for
    from memit.models.arch import get_arch
    from memit.targets import compute_targets

    torch.set_num_threads(threads)
    model, tok = memit.load_model("smollm2-135m")
    reqs = [c.request for c in memit.load_cases(str(DATA), n=150 + n)[150:]]
    hp = preset_for("smollm2-135m")
    t = time.perf_counter()
    compute_targets(model, tok, get_arch(model), reqs, hp.layers[-1], hp.prefixes, hp, progress=False)
    return time.perf_counter() - t


def child(n: int, threads: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", str(threads), "--n", str(n)], stdout=subprocess.PIPE,
                            text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--out", default="benchmarks/results/speed/threads.json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(one(args.n, args.child))
        return
    import os

    from memit.eval.run import machine

    cores = os.cpu_count() or 1
    alone_all = float(child(args.n, cores).communicate()[0])
    alone_one = float(child(args.n, 1).communicate()[0])
    pair = [child(args.n, 1) for _ in range(2)]
    together = [float(p.communicate()[0]) for p in pair]
    result = {"n_requests": args.n, "cores": cores, "alone_all_threads_s": alone_all, "alone_one_thread_s": alone_one,
              "two_at_once_one_thread_each_s": together,
              "throughput_two_at_once_vs_one_after_other": 2 * alone_all / max(together), "machine": machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
