"""memit edit, revert, apply and export: making a change, undoing it, and writing it out in the
forms people serve (an edited model, a GGUF, a delta, a PEFT adapter)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from memit.cli.common import CliError, fresh_out, hparams_of, load, read_delta, save_model


def cmd_edit(args) -> None:
    import memit
    from memit.files import write_json
    from memit.fingerprint import model_fingerprint
    from memit.journal import Journal
    from memit.methods import METHODS, run
    from memit.methods.sequential import edited_weights, sequence_stats

    if not args.out and not args.delta and not args.journal:
        raise CliError("give --out DIR (edited model), --delta FILE (the weight change only) or --journal DIR")
    out = fresh_out(args.out, args.force, args.model) if args.out else None
    for file in [Path(args.delta), Path(args.delta).with_suffix(".report.json")] if args.delta else []:
        if file.exists() and not args.force:
            raise CliError(f"--delta {args.delta}: {file} exists; pass --force to replace it")
    cases = memit.load_cases(args.requests, n=args.n, offset=args.offset)
    model, tokenizer = load(args)
    hp = hparams_of(args, model)
    if out and out.suffix == ".gguf":  # the file must hold every weight the edit will change
        from memit.gguf_out import gguf_names
        from memit.models.arch import get_arch

        arch = get_arch(model)
        layers = [hp.rome_layer()] if args.method in ("rome", "ft", "ft-w") else hp.layers
        gguf_names(_gguf_source(args.model), [arch.mlp_out_name(layer) + ".weight" for layer in layers])
    journal, prior, stats, originals = None, None, None, None
    if args.journal:  # edit the model as the journal left it, with its earlier keys
        journal = Journal(args.journal)
        base = model_fingerprint(model)
        stats = sequence_stats(model, tokenizer, hp, not args.quiet)  # "base": the unedited model's C₀
        originals = edited_weights(model, hp) if METHODS[args.method].anchored else None  # likewise
        journal.replay(model)
        prior = journal.prior()
    delta = run(args.method, model, tokenizer, [c.request for c in cases], hp, prior=prior, progress=not args.quiet,
                stats=stats, base=originals)
    reports = []
    if journal:
        step = journal.append(base, delta)
        print(f"journal {args.journal}: step {step} recorded ({args.method}, {len(cases)} requests)")
        reports.append(Path(args.journal) / f"step-{step:04d}.report.json")
    if args.delta:
        delta.save(args.delta, overwrite=True)
        reports.append(Path(args.delta).with_suffix(".report.json"))
    report = fact_report(delta.meta)
    if out and out.suffix == ".gguf":
        report["gguf"] = _save_gguf(args, model, delta, out, [c.request for c in cases], hp)
        reports.append(out.with_suffix(".report.json"))
    elif out:
        save_model(model, tokenizer, out)
        (out / "memit_edit.json").write_text(json.dumps(delta.meta, indent=1))
        reports.append(out / "report.json")
    for file in reports:
        write_json(file, report)
    _print_summary(delta.meta)
    saved = [str(p) for p in (out, args.delta, args.journal) if p]
    print(f"saved: {', '.join(saved)}")
    print(hold_line(report, reports[0].name))


def fact_report(meta: dict) -> dict:
    """Which facts hold after the edit, and why the others may not: the report beside every edit."""
    keys = ("case_id", "subject", "target_new", "holds", "round", "reason", "held_prompts", "prompts", "stop",
            "margin", "steps_total")
    return {"method": meta["method"], "n_requests": meta["n_requests"], **meta.get("verification", {}),
            "requests": [{k: r.get(k) for k in keys} for r in meta["requests"]]}


def hold_line(report: dict, file: str) -> str:
    held, n = report.get("held", 0), report["n_requests"]
    if held == n:
        return f"{n:,} of {n:,} facts hold (see {file})"
    return f"{held:,} of {n:,} facts hold; {n - held:,} did not (see {file})"


def cmd_revert(args) -> None:
    from memit.journal import Journal

    journal = Journal(args.journal)
    if not journal.steps:
        raise CliError(f"{args.journal} holds no journal steps")
    out = fresh_out(args.out, args.force, args.model) if args.out else None
    if out:
        model, tokenizer = load(args)
        journal.replay(model, args.to)
        save_model(model, tokenizer, out)
    undone = journal.revert_to(args.to)
    print(f"journal {args.journal} now ends at step {args.to}"
          + (f"; later steps moved to {undone}" if undone else "") + (f"; model at step {args.to} saved to {out}" if out else ""))


def _print_summary(meta: dict) -> None:
    from memit.stopping import STOP_REASONS

    reqs = meta["requests"]
    t = meta["timings"]
    print(f"edited {meta['n_requests']} facts, layers {meta['layers']}, λ = {meta['lambda']:.1f}")
    print(f"  target vectors: {sum(r['converged'] for r in reqs)} converged, "
          f"{sum(r['clamped'] for r in reqs)} hit the norm clamp, mean final NLL {sum(r['nll'] for r in reqs) / len(reqs):.3f}, "
          f"mean steps {sum(r['steps'] for r in reqs) / len(reqs):.1f}")
    stops = [r["stop"] for r in reqs if r.get("stop")]
    if stops:
        print("  stopped by: " + ", ".join(f"{k} {stops.count(k)}" for k in STOP_REASONS if k in stops))
    for r in meta.get("rounds", [])[1:]:
        print(f"  round {r['round']}: re-edited {r['n_edited']}, {r['held_after']} of {meta['n_requests']} hold after it")
    infos = meta["layers_info"]
    if len(infos) > 12:  # ROME: one entry per request; show the first and last few
        print(f"  ({len(infos)} rank-one updates; first and last 3 shown)")
        infos = infos[:3] + infos[-3:]
    for info in infos:
        def fmt(key, spec, info=info):
            return format(info[key], spec) if info.get(key) is not None else "n/a"
        null = f"   null space {info['null_dim']} dims, {info['null_energy']:.1%} of text energy" if "null_energy" in info else ""
        print(f"  layer {info['layer']:3d}: residual {fmt('resid_norm', '8.3f')}   ‖ΔW‖/‖W‖ {fmt('delta_rel_norm', '.4f')}"
              f"   text change {fmt('text_change', '.1e')}   cond {fmt('cond', '.2e')}"
              f"   max key |cos| {fmt('max_key_overlap', '.2f')}{null}")
    if "resid_after" in meta:
        print(f"  residual after the edit {meta['resid_after']:.3f} (mean ‖z − output‖ at layer {meta['layers'][-1]})")
    print("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))


def _gguf_source(spec: str) -> Path:
    from memit.models.loading import DEFAULT_MODEL, smollm2_gguf

    if spec == DEFAULT_MODEL:
        return smollm2_gguf()
    if Path(spec).suffix == ".gguf" and Path(spec).is_file():
        return Path(spec)
    raise CliError(f"--out *.gguf copies the input GGUF with the edited tensors replaced: --model {spec} is not a "
                   ".gguf file (nor smollm2-135m); save a model directory instead")


def _save_gguf(args, model, delta, out: Path, requests=None, hp=None) -> dict:
    """Write the GGUF; with the requests, read it back and say which facts hold after requantisation."""
    from memit import weights
    from memit.gguf_out import write_gguf

    source = _gguf_source(args.model)
    changed = {name: weights.read(model, name) for name in delta.weights}
    tensors = write_gguf(source, out, changed, keep_type=args.gguf_type == "keep")
    kinds = sorted({f"{t['was']} → {t['written']}" + (f" ({t['note']})" if t.get("note") else "") for t in tensors})
    print(f"wrote {out}: {source.name} with {len(tensors)} edited tensors replaced, {'; '.join(kinds)}")
    info = {"file": str(out), "source": source.name, "tensors": tensors}
    if requests:
        from memit.models.loading import load_model
        from memit.verify import check

        back, tok = load_model(str(out))
        status = check(back, tok, requests, delta.meta.get("hparams", {}).get("prefixes") or [], hp.batch_tokens)
        info["held"] = sum(s["holds"] for s in status)
        info["holds"] = [s["holds"] for s in status]
        print(f"read back from {out.name}: {info['held']:,} of {len(requests):,} facts hold in the GGUF")
    return info


def cmd_apply(args) -> None:
    out = fresh_out(args.out, args.force, args.model)
    if out.suffix == ".gguf":
        _gguf_source(args.model)
    delta = read_delta(args.delta)
    model, tokenizer = load(args)
    delta.apply(model, check_fingerprint=not args.no_check)
    if out.suffix == ".gguf":
        _save_gguf(args, model, delta, out)
        print(f"applied {args.delta} ({len(delta.weights)} weights)")
        return
    save_model(model, tokenizer, out)
    print(f"applied {args.delta} ({len(delta.weights)} weights) and saved {out}")


def cmd_export(args) -> None:
    from memit.delta import load_delta
    from memit.journal import Journal
    from memit.lora import save_lora, summed

    if bool(args.delta) == bool(args.journal):
        raise CliError("give either --delta FILE or --journal DIR")
    if args.rank is not None and args.rank < 1:
        raise CliError(f"--rank must be at least 1, got {args.rank}")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"--out {out} exists; pass --force to replace it")
    if args.delta:
        jobs = [(out, load_delta(args.delta))]
    else:
        journal = Journal(args.journal)
        if not journal.steps:
            raise CliError(f"{args.journal} holds no journal steps")
        deltas = [load_delta(journal.dir / step["delta"]) for step in journal.steps]
        jobs = ([(out / f"step-{i:04d}", d) for i, d in enumerate(deltas, 1)] if args.per_step
                else [(out, summed(deltas))])
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for folder, delta in jobs:
            info = save_lora(delta, tmp / folder.relative_to(out), rank=args.rank, base_model=args.base_model)
            errs = ", ".join(f"{x['layer']}: {x['rel_error']:.2e}" for x in info["layers"])
            print(f"{folder}: LoRA rank {info['r']} on layers {[x['layer'] for x in info['layers']]}"
                  + (f"; relative error per layer {errs}" if args.rank is not None else " (exact)"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
