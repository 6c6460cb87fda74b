"""Generated blocks inside hand-written pages.

A page is markdown in which each generated block sits between ``<!-- generated: NAME -->`` and
``<!-- end: NAME -->``. ``fill`` recomputes every block from the page's block functions and leaves
everything else as it was written, so prose and the order of sections are edited in the page,
and numbers only in the data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- generated: ([\w-]+) -->\n(.*?)<!-- end: \1 -->\n", re.DOTALL)


@dataclass
class Figure:
    """A plot a block shows: drawn into ``path`` by ``draw(out=path)``, in the page's own step."""
    path: Path
    draw: Callable
    alt: str

    def markdown(self) -> str:
        return f"![{self.alt}](../{self.path.relative_to(ROOT)})"


def render(lines: list) -> tuple[str, list[Figure]]:
    """A block's text, and the figures it shows."""
    figures = [x for x in lines if isinstance(x, Figure)]
    text = "\n".join(x.markdown() if isinstance(x, Figure) else x for x in lines)
    return (text + "\n" if lines else ""), figures


def fill(text: str, blocks: dict[str, Callable[[], list]]) -> tuple[str, list[Figure]]:
    """``text`` with each generated block recomputed, and the figures they show. A marker whose
    name has no block function, or a block function the page never shows, is an error: a page
    must neither keep a stale block nor lose one silently."""
    names = BLOCK.findall(text)
    seen = [name for name, _ in names]
    unknown = sorted(set(seen) - set(blocks))
    missing = [name for name in blocks if name not in seen]
    twice = sorted({name for name in seen if seen.count(name) > 1})
    if unknown or missing or twice:
        raise ValueError("page markers do not match the blocks: "
                         + "; ".join(f"{what} {', '.join(v)}" for what, v in
                                     (("unknown", unknown), ("not shown", missing), ("shown twice", twice)) if v))
    figures: list[Figure] = []

    def one(m: re.Match) -> str:
        body, figs = render(blocks[m[1]]())
        figures.extend(figs)
        return f"<!-- generated: {m[1]} -->\n{body}<!-- end: {m[1]} -->\n"

    return BLOCK.sub(one, text), figures


def build(doc: Path, blocks: dict[str, Callable[[], list]], draw: bool = True) -> str:
    """Refill ``doc`` in place (and draw its figures); returns the new text."""
    text, figures = fill(doc.read_text(), blocks)
    for f in figures if draw else []:
        f.draw(out=f.path)
    doc.write_text(text)
    return text
