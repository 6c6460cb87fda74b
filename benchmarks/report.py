"""Refill the generated blocks of docs/results.md from the committed result files, and draw the
page's figures, so the page always matches them. The prose is written in docs/results.md itself.

    python benchmarks/report.py
"""

from __future__ import annotations

from pages.load import ROOT
from pages.page import build
from pages.results import BLOCKS


def main() -> None:
    build(ROOT / "docs" / "results.md", BLOCKS)
    print("wrote docs/results.md")


if __name__ == "__main__":
    main()
