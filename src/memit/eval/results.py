"""What a result file of ``memit eval`` is called and holds, in one place.

The name says which run it is (dataset, method, N, and how the records were chosen and edited);
``result_path`` writes it and ``parse_result_path`` reads it back, so the pages and plots never
parse names by hand. Every file records ``SCHEMA``; ``load_result`` brings an older file up to it,
so the committed results keep working as the format grows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

SCHEMA = 2  # 1: the files before the schema had a version (no "schema" key)

# The names older files used for a method, and the registry's name for it (methods.METHODS).
OLD_METHOD_NAMES = {"ft-l": "ft"}


class ResultPoint(TypedDict, total=False):
    """The scores of one model state on a set of records (``edited`` / ``unedited`` of a one-batch
    run; each entry of a sequence's ``points``). CounterFact has ES…Score, zsRE its accuracies;
    fluency (GE), perplexity, retention and generated-answer scores are there when measured."""
    edits: int  # sequences: the edits made before this point
    ES: float
    PS: float
    NS: float
    EM: float
    PM: float
    NM: float
    Score: float
    GE: float
    perplexity: float
    retention: dict
    generated: dict


@dataclass(frozen=True)
class ResultName:
    """Which run a file holds. ``batch_size`` is set only for a sequence (batches smaller than N)."""
    dataset: str
    method: str
    n: int
    offset: int = 0
    seed: int | None = None  # set when the records were a random sample
    batch_size: int | None = None
    base_stats: bool = False  # a sequence that kept the unedited model's C₀
    delta: str | None = None  # scored from a saved delta (its file name, without .safetensors)

    @property
    def plain(self) -> bool:
        """The first N records in one batch, edited here: the runs a scaling curve is made of."""
        return not (self.offset or self.seed is not None or self.batch_size or self.delta)


_NAME = re.compile(r"(?P<dataset>[a-z0-9]+)_(?P<method>[a-z0-9-]+)_n(?P<n>\d+)(?:_o(?P<offset>\d+))?"
                   r"(?:_random(?P<seed>\d+))?(?:_seq(?P<batch>\d+))?(?P<base>_basestats)?"
                   r"(?:_delta-(?P<delta>.+))?\.json")


def result_path(out: str | Path, name: ResultName) -> Path:
    tag = f"_o{name.offset}" if name.offset else ""
    tag += f"_random{name.seed}" if name.seed is not None else ""
    tag += f"_seq{name.batch_size}" if name.batch_size else ""
    tag += "_basestats" if name.batch_size and name.base_stats else ""
    tag += f"_delta-{name.delta}" if name.delta else ""
    return Path(out) / f"{name.dataset}_{name.method}_n{name.n}{tag}.json"


def parse_result_path(path: str | Path) -> ResultName | None:
    """The run a file name describes, or None for a file that is not a result of ``memit eval``."""
    m = _NAME.fullmatch(Path(path).name)
    if not m:
        return None
    return ResultName(m["dataset"], m["method"], int(m["n"]), int(m["offset"] or 0),
                      int(m["seed"]) if m["seed"] is not None else None,
                      int(m["batch"]) if m["batch"] else None, bool(m["base"]), m["delta"])


def upgrade(result: dict) -> dict:
    """A result dict in today's schema. Version 1 named FT-L "ft-l" (now "ft", as the CLI does)."""
    out = dict(result)
    if out.get("schema", 1) > SCHEMA:
        raise ValueError(f"result schema {out['schema']} is newer than this memit understands ({SCHEMA})")
    if "method" in out:
        out["method"] = OLD_METHOD_NAMES.get(out["method"], out["method"])
    out["schema"] = SCHEMA
    return out


def load_result(path: str | Path) -> dict:
    return upgrade(json.loads(Path(path).read_text()))


def sequence_label(result: dict) -> str:
    """The name of a sequential run on plots and pages: its method, and the statistics it kept
    when they were the unedited model's (two runs of one method differ only there)."""
    base = result.get("hparams", {}).get("sequential_stats") == "base"
    return result["method"] + (" (base C₀)" if base else "")
