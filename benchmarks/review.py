"""The answers to the paper's review (docs/review.md): the runs, and the page built from their results.

    python benchmarks/review.py run [NAME ...]   # run the listed points (all by default); done ones are skipped
    python benchmarks/review.py report           # refill docs/review.md and draw its plots from the result files

Every point is one ``memit eval`` command, listed once in pages/review.py's RUNS; the page prints
it beside its figure.
"""

from __future__ import annotations

import subprocess
import sys

from pages.load import ROOT
from pages.page import build
from pages.review import BLOCKS, RES, RUNS, command


def run(names: list[str]) -> None:
    for name in names or list(RUNS):
        if (RES / RUNS[name][1]).exists():
            print(f"{name}: done ({RUNS[name][1]})")
            continue
        cmd = command(name, str(RES)).replace("../shared", str(ROOT.parent / "shared"))
        print(f"{name}: {cmd}", flush=True)
        args = cmd.split()[1:]
        subprocess.run([sys.executable, "-m", "memit.cli", *args, "--quiet"], check=True, cwd=ROOT)


def report() -> None:
    build(ROOT / "docs" / "review.md", BLOCKS)
    print("wrote docs/review.md")


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        run(sys.argv[2:])
    elif sys.argv[1:2] == ["report"]:
        report()
    else:
        sys.exit(__doc__)
