"""What an edit weighs when it leaves, and what the serving formats do to it.

For one batch of the first N counterfact-edit records with the default SmolLM2 preset: the size of
the saved delta (factors where smaller, as saved) against the dense form, and of the PEFT LoRA
adapter, exact and truncated to vLLM's rank limit with its error per layer. For the batches listed
in ``--truncate``, adapters cut to smaller ranks are scored as well (ES/PS/NS of the adapter
merged into the base model): what truncation costs. For the batches in ``--gguf`` and for the
demo facts, the edited model is also written as GGUF (edited tensors requantised to Q4_1 as in
the input, and as F32), read back through the same GGUF loader, and its facts checked again
beside the edited float model: what requantisation costs. Target vectors come from memit's
target cache, so an N that an earlier run edited is not optimised again.

    python benchmarks/export_sizes.py --n 1 100 1000 --gguf 100 --truncate 100:64,16 1000:512
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import memit
from memit.delta import Delta
from memit.demo import demo_cases
from memit.eval.metrics import counterfact_case_scores, counterfact_summary
from memit.eval.run import machine
from memit.files import write_json
from memit.gguf_out import write_gguf
from memit.hparams import preset_for
from memit.lora import load_lora, save_lora
from memit.methods import run
from memit.models.loading import cache_dir, smollm2_gguf
from memit.verify import check

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "counterfact" / "easyedit" / "counterfact-edit.json"
VLLM_MAX_RANK = 512


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def rates(model, tok, cases) -> dict:
    s = counterfact_summary(counterfact_case_scores(model, tok, cases))
    return {k: s[k] for k in ("ES", "PS", "NS", "Score")}


def one(model, tok, cases, gguf: bool, ranks: list[int], tmp: Path) -> dict:
    reqs = [c.request for c in cases]
    hp = preset_for("smollm2-135m")
    delta = run("memit", model, tok, reqs, hp, progress=True, checkpoint=cache_dir() / "targets")
    prefixes = delta.meta["hparams"]["prefixes"]
    out = {"n": len(cases), "rounds_used": delta.meta["verification"]["rounds_used"],
           "held": delta.meta["verification"]["held"],
           "rank": {n: f.rank for n, f in delta.factors.items()}}
    delta.save(tmp / "delta.safetensors")
    Delta(delta.weights, delta.meta).save(tmp / "dense.safetensors")
    out["bytes"] = {"delta_as_saved": size(tmp / "delta.safetensors"), "dense": size(tmp / "dense.safetensors")}
    out["saved_as"] = "factors" if out["bytes"]["delta_as_saved"] < out["bytes"]["dense"] else "dense"
    lora = save_lora(delta, tmp / "lora")
    out["bytes"]["lora_exact"] = size(tmp / "lora")
    out["lora_exact_rank"] = lora["r"]
    if lora["r"] > VLLM_MAX_RANK:
        cut = save_lora(delta, tmp / "lora512", rank=VLLM_MAX_RANK)
        out["bytes"]["lora_rank512"] = size(tmp / "lora512")
        out["lora_rank512_rel_error"] = {x["layer"]: x["rel_error"] for x in cut["layers"]}
    if gguf or ranks:
        out["float"] = rates(model, tok, cases) | {"held": sum(s["holds"] for s in check(model, tok, reqs, prefixes))}
    if gguf:
        from memit import weights

        changed = {n: weights.read(model, n) for n in delta.weights}
        for kind, keep in (("gguf_q4_1", True), ("gguf_f32", False)):
            file = tmp / f"{kind}.gguf"
            tensors = write_gguf(smollm2_gguf(), file, changed, keep_type=keep)
            back, btok = memit.load_model(str(file))
            out[kind] = rates(back, btok, cases) | {
                "held": sum(s["holds"] for s in check(back, btok, reqs, prefixes)),
                "written": sorted({t["written"] for t in tensors}), "bytes": size(file)}
            del back
            file.unlink()
    delta.revert(model)
    out["truncated"] = {}
    for r in ranks:
        info = save_lora(delta, tmp / f"lora{r}", rank=r)
        cut = load_lora(tmp / f"lora{r}")
        cut.apply(model)
        out["truncated"][str(r)] = rates(model, tok, cases) | {
            "rel_error": {x["layer"]: x["rel_error"] for x in info["layers"]}}
        cut.revert(model)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 100, 1000])
    ap.add_argument("--gguf", type=int, nargs="*", default=[100], help="the N whose edit is also written as GGUF")
    ap.add_argument("--truncate", nargs="*", default=["100:64,16", "1000:512"], metavar="N:R1,R2",
                    help="score the adapter of batch N truncated to these ranks")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export" / "export.json")
    args = ap.parse_args()
    result = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    ranks = {int(n): [int(r) for r in rs.split(",")] for n, rs in (t.split(":") for t in args.truncate)}
    model, tok = memit.load_model("smollm2-135m")
    for n in ["demo", *args.n]:
        if str(n) in result["runs"]:
            continue
        cases = demo_cases() if n == "demo" else memit.load_cases(str(DATA), n=n)
        gguf = n == "demo" or n in args.gguf
        with tempfile.TemporaryDirectory() as tmp:
            run_ = one(model, tok, cases, gguf, ranks.get(n, []), Path(tmp)) | {"machine": machine()}
        if gguf or ranks.get(n):
            run_["unedited"] = rates(model, tok, cases)
        result["runs"][str(n)] = run_
        write_json(args.out, result)
        print(n, json.dumps({k: v for k, v in run_.items() if k != "rank"}))


if __name__ == "__main__":
    main()
