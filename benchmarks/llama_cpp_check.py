"""Does llama.cpp's own runtime state the facts that memit wrote into a GGUF?

`memit edit --out FILE.gguf` is checked inside memit by reading the file back through
transformers' GGUF loader. Users run the file in llama.cpp (ollama, LM Studio), a different
implementation of the same format. This edits the demo facts and the first N counterfact-edit
records with the default preset, writes the edited GGUF twice (edited tensors requantised to the
input's Q4_1, and as F32), and asks llama.cpp (the `llama-cpp-python` bindings, built from the
package index's source release) and transformers the same things about the unedited and the two
edited files:
- teacher forced: is target_new more likely than target_true after the rewrite prompt (mean
  per-token NLL of " " + target, as memit's scores);
- generated: does the greedy answer start with target_new (eval/generated.py's rule);
- do the two runtimes give the same greedy answer.

    python benchmarks/llama_cpp_check.py --n 100
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import memit
from memit import weights
from memit.demo import demo_cases
from memit.eval.generated import answers, exact_match, first_answer, normalise
from memit.eval.metrics import target_nll
from memit.eval.run import machine
from memit.files import write_json
from memit.gguf_out import write_gguf
from memit.hparams import preset_for
from memit.methods import run
from memit.models.loading import cache_dir, smollm2_gguf

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "counterfact" / "easyedit" / "counterfact-edit.json"
BUDGET = 16


def llama_cpp_answers(path: Path, reqs: list) -> list[dict]:
    """Per request, from llama.cpp: NLL of target_new and target_true, and the greedy answer."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, seed=0)
    out = []
    for r in reqs:
        row = {}
        for which, target in (("new", r.target_new), ("true", r.target_true)):
            prompt = llm.tokenize(r.text.encode(), add_bos=True)
            full = llm.tokenize((r.text + " " + target).encode(), add_bos=True)
            if full[: len(prompt)] != prompt:  # the target merged into the prompt's last token
                raise SystemExit(f"{r.text!r} + {target!r}: the prompt's tokens change when the target follows")
            llm.reset()
            llm.eval(full)
            logits = np.asarray(llm.scores[len(prompt) - 1: len(full) - 1], dtype=np.float64)
            top = logits.max(1, keepdims=True)
            logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
            row[which] = float(-logp[np.arange(len(logits)), full[len(prompt):]].mean())
        llm.reset()
        text = llm(r.text, max_tokens=BUDGET, temperature=0.0, top_k=1)["choices"][0]["text"]
        row["answer"] = first_answer(text)
        out.append(row)
    del llm
    return out


def transformers_answers(path: Path, reqs: list) -> list[dict]:
    model, tok = memit.load_model(str(path))
    nll = target_nll(model, tok, [(r.text, t) for r in reqs for t in (r.target_new, r.target_true)])
    texts = answers(model, tok, [r.text for r in reqs], "plain", max_new_tokens=BUDGET)
    return [{"new": nll[2 * i], "true": nll[2 * i + 1], "answer": texts[i]} for i in range(len(reqs))]


def compare(reqs: list, cpp: list[dict], hf: list[dict]) -> dict:
    def rates(rows):
        return {"new_beats_true": sum(x["new"] < x["true"] for x in rows),
                "answer_starts_with_new": sum(exact_match(x["answer"], r.target_new) for x, r in zip(rows, reqs))}
    return {"facts": len(reqs), "llama_cpp": rates(cpp), "transformers": rates(hf),
            "same_greedy_answer": sum(normalise(a["answer"]) == normalise(b["answer"]) for a, b in zip(cpp, hf)),
            "same_preference": sum((a["new"] < a["true"]) == (b["new"] < b["true"]) for a, b in zip(cpp, hf)),
            "max_nll_difference": max(abs(a[k] - b[k]) for a, b in zip(cpp, hf) for k in ("new", "true")),
            "examples": [{"prompt": r.text, "target_new": r.target_new, "llama_cpp": a["answer"],
                          "transformers": b["answer"]} for r, a, b in list(zip(reqs, cpp, hf))[:5]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="counterfact-edit records, besides the demo facts (0: none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "export" / "llama_cpp.json"))
    args = ap.parse_args()
    import llama_cpp

    sets = {"demo": demo_cases()}
    if args.n:
        sets[f"counterfact-edit n{args.n}"] = memit.load_cases(str(DATA), n=args.n)
    model, tok = memit.load_model("smollm2-135m")
    source = smollm2_gguf()
    result = {"llama_cpp_python": llama_cpp.__version__, "source": source.name, "machine": machine(), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cases in sets.items():
            reqs = [c.request for c in cases]
            delta = run("memit", model, tok, reqs, preset_for("smollm2-135m"), progress=True,
                        checkpoint=cache_dir() / "targets")
            changed = {n: weights.read(model, n).clone() for n in delta.weights}  # revert works in place
            delta.revert(model)
            files = {"unedited": source}
            for kind, keep in (("edited_q4_1", True), ("edited_f32", False)):
                files[kind] = Path(tmp) / f"{kind}.gguf"
                write_gguf(source, files[kind], changed, keep_type=keep)
            result["sets"][name] = {"held_in_memit": delta.meta["verification"]["held"]}
            for kind, path in files.items():
                result["sets"][name][kind] = compare(reqs, llama_cpp_answers(path, reqs), transformers_answers(path, reqs))
                c = result["sets"][name][kind]
                print(f"{name}, {kind}: llama.cpp {c['llama_cpp']}, transformers {c['transformers']}, "
                      f"same greedy answer {c['same_greedy_answer']}/{c['facts']}", flush=True)
            for kind in ("edited_q4_1", "edited_f32"):
                files[kind].unlink()
    write_json(Path(args.out), result)
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
