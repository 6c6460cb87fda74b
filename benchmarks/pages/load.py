"""Result files as the pages read them, and how the pages say where a figure came from."""

from __future__ import annotations

from pathlib import Path

from memit.eval.results import load_result

ROOT = Path(__file__).resolve().parents[2]
RES = ROOT / "benchmarks" / "results"


def load_results(pattern: str) -> list[dict]:
    """The result files matching ``pattern``, in today's schema, each with the file it came from."""
    return [load_result(p) | {"_file": str(p.relative_to(ROOT))} for p in sorted(RES.glob(pattern))]


def load_one(path: str) -> dict | None:
    """One result file under benchmarks/results, or None when it is not there yet."""
    f = RES / path
    return load_result(f) | {"_file": str(f.relative_to(ROOT))} if f.exists() else None


def fmt_ci(d: dict, k: str) -> str:
    ci = d.get(k + "_ci95")
    return f"{d[k]:.1f} [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else f"{d[k]:.1f}"


def fmt_opt(d: dict, k: str, spec: str = ".1f") -> str:
    """A measure a run may not have taken (GE, perplexity …: see ResultPoint), or "–" without it."""
    v = d.get(k)
    return "–" if v is None else format(v, spec)


def fmt_host(m: dict) -> str:
    gpu = f", {m['cuda']}" if m.get("cuda") else ""
    return f"{m.get('cpu')} ({m.get('cores')} cores, torch {m.get('torch')}{gpu})"


def fmt_machine(m: dict) -> str:
    return f"{fmt_host(m)}, commit {str(m.get('commit'))[:10]}"


def fmt_files(runs: list[dict]) -> str:
    """The result files, each with the commit it ran at (runs of one table often span commits), and the machine."""
    commits = [(r.get("machine") or {}).get("commit") for r in runs]
    files = ", ".join(f"`{r['_file']}` ({c[:10] if c else 'commit not recorded'})" for r, c in zip(runs, commits))
    machines = dict.fromkeys(fmt_host(r["machine"]) for r in runs if r.get("machine"))
    return f"Files (commit): {files}. Machine: {'; '.join(machines) or 'not recorded'}."


def ran_on(m: dict) -> str:
    """Short machine and commit of one configuration: a sweep resumed elsewhere mixes machines."""
    return f"{m.get('cpu')}, {m.get('threads')} thread(s), {str(m.get('commit'))[:7]}"
