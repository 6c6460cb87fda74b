"""The ``memit`` command line. Bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from memit.methods import METHODS

EXAMPLES = """examples:
  memit demo
  memit edit --model smollm2-135m --requests facts.json --out edited-model/
  memit edit --model ./my-model --requests cf.json --n 100 --layers 3,4,5,6,7,8 --delta edit.safetensors
  memit apply --model ./my-model --delta edit.safetensors --out edited-model/
  memit export lora --delta edit.safetensors --out edit-lora/          # a PEFT adapter (--rank 512 for vLLM)
  memit stats --model smollm2-135m --layers 3,4,5,6,7,8 --corpus ../shared/data/wikipedia_en --stats-tokens 200000
  torchrun --nproc_per_node 2 -m memit.cli stats --model smollm2-135m --layers 3,4,5,6,7,8   # data parallel
  memit generate --model edited-model/ "The Eiffel Tower is located in the city of"
  memit eval --dataset counterfact --data counterfact-edit.json --n 1 10 100 --out results/
"""


class CliError(Exception):
    pass


def _known_errors() -> tuple[type[BaseException], ...]:
    from memit.delta import DeltaError
    from memit.files import CorruptFileError
    from memit.journal import JournalError
    from memit.lora import LoraError
    from memit.methods.memit import EditError
    from memit.models.arch import UnsupportedModelError
    from memit.models.loading import ModelLoadError
    from memit.requests import RequestError
    from memit.stats import CorpusError
    from memit.tokens import TokenizationError

    return (CliError, DeltaError, CorruptFileError, JournalError, EditError, UnsupportedModelError, ModelLoadError,
            RequestError, CorpusError, TokenizationError, LoraError)


METHOD_CHOICES = list(METHODS)  # one list: the CLI, `memit eval` and the docs read memit.methods.METHODS


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="model directory, .gguf file, hub id, or 'smollm2-135m' (default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    p.add_argument("--device-map", help="spread a large model with accelerate: auto, balanced, sequential, "
                   "or a JSON file mapping module names to devices ('cpu', 'disk', 0, 1, ...)")
    p.add_argument("--max-memory", help="per-device limits for --device-map, e.g. 0=20GiB,1=20GiB,cpu=60GiB")
    p.add_argument("--offload-folder", help="where --device-map puts layers offloaded to disk")


def _hparam_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="hyperparameter preset: gpt-j, gpt2-xl, smollm2-135m, smollm2-135m-paper")
    p.add_argument("--hparams", help="JSON file of hyperparameters (may name a 'preset' to start from)")
    p.add_argument("--layers", help="comma-separated blocks to edit, e.g. 3,4,5,6,7,8")
    p.add_argument("--lambda", dest="lam", type=float, help="absolute preservation weight λ")
    p.add_argument("--corpus", help="text for C₀: file, directory, or hf:NAME[:CONFIG[:SPLIT]]")
    p.add_argument("--stats-tokens", type=int, help="token budget of the statistics pass")
    p.add_argument("--seed", type=int, help="seed for generated context prefixes")
    p.add_argument("--preservation", choices=["cov", "identity", "none"],
                   help="ablation of the preservation term: cov (MEMIT's λC₀, default), identity (λI), none (λ = 0)")
    p.add_argument("--match-norm", metavar="RESULT_JSON",
                   help="preservation λI with λ per layer chosen so ‖ΔW‖ of each layer equals that of this earlier result")
    p.add_argument("--stop", choices=["paper", "margin"],
                   help="when a fact's target vector stops: paper (loss threshold or step cap, MEMIT's rule) or "
                        "margin (every target token top-1 by --stop-margin nats on every prompt, or a clamped plateau)")
    p.add_argument("--stop-margin", type=float, help="log-probability margin (nats) over the runner-up token")
    p.add_argument("--rounds", type=int, help="verify every fact and edit again those that do not hold, "
                   "up to this many rounds in all (1: verify only)")
    p.add_argument("--ridge", type=float, help="norm term λ_I·I on the update, λ_I = RIDGE · λ · tr(C₀)/d_ff")
    p.add_argument("--diagnostics", choices=["cheap", "full"],
                   help="per-layer diagnostics: cheap (default: ‖ΔW‖/‖W‖, cond, text change, key overlap) or full, "
                        "which adds the spectra and the overlap of update directions (more eigendecompositions)")
    p.add_argument("--sequential-stats", choices=["current", "base"],
                   help="batch after batch (--journal, --batch-size): C₀ of the model as each batch finds it "
                        "(current, default) or of the unedited model, as MEMIT's and AlphaEdit's code keep it (base)")


def _parse_layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--layers must be comma-separated integers, got {text!r}") from None


def _hparams(args, model):
    from memit.hparams import MemitHyperParams, default_hparams, preset_for
    from memit.models.arch import get_arch, n_layers

    try:
        if args.hparams:
            hp = MemitHyperParams.from_json(args.hparams)
        elif args.preset:
            hp = preset_for(args.preset)
        else:
            hp = default_hparams(model.config.model_type, n_layers(model, get_arch(model)))
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.layers:
        hp.layers = _parse_layers(args.layers)
    if args.lam is not None:
        hp.lam = args.lam
    if args.corpus:
        hp.stats_corpus = args.corpus
    if args.stats_tokens:
        hp.stats_tokens = args.stats_tokens
    if args.seed is not None:
        hp.seed = args.seed
    if args.preservation:
        hp.preservation = args.preservation
    if args.match_norm:
        hp.preservation, hp.match_rel_norms = "identity", _reference_norms(args.match_norm, hp.layers)
    if args.sequential_stats:
        hp.sequential_stats = args.sequential_stats
    for name in ("stop", "stop_margin", "rounds", "ridge", "diagnostics"):
        if getattr(args, name) is not None:
            setattr(hp, name, getattr(args, name))
    if hp.rounds < 1:
        raise CliError(f"--rounds must be at least 1, got {hp.rounds}")
    return hp


def _reference_norms(path: str, layers: list[int]) -> list[float]:
    """‖ΔW_l‖/‖W_l‖ of the edited layers in a result file (``memit eval`` point or ``--json`` report)."""
    try:
        info = json.loads(Path(path).read_text())["layers_info"]
        rel = {int(x["layer"]): float(x["delta_rel_norm"]) for x in info}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CliError(f"--match-norm {path}: not a result file with per-layer norms ({e})") from None
    if sorted(rel) != list(layers):
        raise CliError(f"--match-norm {path} edited layers {sorted(rel)}, this edit {layers}")
    return [rel[layer] for layer in layers]


def _fresh_out(path: str, force: bool, model_spec: str) -> Path:
    out = Path(path).expanduser()
    src = Path(model_spec).expanduser()
    if src.exists() and (out.resolve() == src.resolve() or out.resolve() == src.resolve().parent):
        raise CliError(f"--out {out} is the model's own location; memit never writes into the input model")
    if out.exists() and not force:
        raise CliError(f"--out {out} exists; pass --force to replace it")
    return out


def _save_model(model, tokenizer, out: Path) -> None:
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def _parse_max_memory(text: str | None) -> dict | None:
    if not text:
        return None
    out: dict = {}
    for item in text.split(","):
        dev, sep, size = item.partition("=")
        if not sep or not size.strip():
            raise CliError(f"--max-memory item {item!r} is not DEVICE=SIZE (e.g. 0=20GiB)")
        dev = dev.strip()
        out[int(dev) if dev.isdigit() else dev] = size.strip()
    return out


def _load(args):
    from memit.models.loading import load_model

    device_map = getattr(args, "device_map", None)
    if device_map and Path(device_map).is_file():
        device_map = json.loads(Path(device_map).read_text())
    return load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                      device_map=device_map, max_memory=_parse_max_memory(getattr(args, "max_memory", None)),
                      offload_folder=getattr(args, "offload_folder", None))


def cmd_edit(args) -> None:
    import memit
    from memit.files import write_json
    from memit.fingerprint import model_fingerprint
    from memit.journal import Journal
    from memit.methods import run
    from memit.methods.sequential import sequence_stats

    if not args.out and not args.delta and not args.journal:
        raise CliError("give --out DIR (edited model), --delta FILE (the weight change only) or --journal DIR")
    out = _fresh_out(args.out, args.force, args.model) if args.out else None
    for file in [Path(args.delta), Path(args.delta).with_suffix(".report.json")] if args.delta else []:
        if file.exists() and not args.force:
            raise CliError(f"--delta {args.delta}: {file} exists; pass --force to replace it")
    cases = memit.load_cases(args.requests, n=args.n, offset=args.offset)
    model, tokenizer = _load(args)
    hp = _hparams(args, model)
    if out and out.suffix == ".gguf":  # the file must hold every weight the edit will change
        from memit.gguf_out import gguf_names
        from memit.models.arch import get_arch

        arch = get_arch(model)
        layers = [hp.rome_layer()] if args.method in ("rome", "ft", "ft-w") else hp.layers
        gguf_names(_gguf_source(args.model), [arch.mlp_out_name(layer) + ".weight" for layer in layers])
    journal, prior, stats = None, None, None
    if args.journal:  # edit the model as the journal left it, with its earlier keys
        journal = Journal(args.journal)
        base = model_fingerprint(model)
        stats = sequence_stats(model, tokenizer, hp, not args.quiet)  # "base": the unedited model's C₀
        journal.replay(model)
        prior = journal.prior()
    delta = run(args.method, model, tokenizer, [c.request for c in cases], hp, prior=prior, progress=not args.quiet,
                stats=stats)
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
        _save_model(model, tokenizer, out)
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
    out = _fresh_out(args.out, args.force, args.model) if args.out else None
    if out:
        model, tokenizer = _load(args)
        journal.replay(model, args.to)
        _save_model(model, tokenizer, out)
    undone = journal.revert_to(args.to)
    print(f"journal {args.journal} now ends at step {args.to}"
          + (f"; later steps moved to {undone}" if undone else "") + (f"; model at step {args.to} saved to {out}" if out else ""))


def _print_summary(meta: dict) -> None:
    from memit.targets import STOP_REASONS

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


def _read_delta(path: str):
    """A saved delta, or a LoRA adapter folder (``memit export lora`` or any PEFT LoRA)."""
    from memit.delta import load_delta
    from memit.lora import is_lora, load_lora

    if not Path(path).exists():
        raise CliError(f"--delta {path}: no such file or folder")
    return load_lora(path) if is_lora(path) else load_delta(path)


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
    out = _fresh_out(args.out, args.force, args.model)
    if out.suffix == ".gguf":
        _gguf_source(args.model)
    delta = _read_delta(args.delta)
    model, tokenizer = _load(args)
    delta.apply(model, check_fingerprint=not args.no_check)
    if out.suffix == ".gguf":
        _save_gguf(args, model, delta, out)
        print(f"applied {args.delta} ({len(delta.weights)} weights)")
        return
    _save_model(model, tokenizer, out)
    print(f"applied {args.delta} ({len(delta.weights)} weights) and saved {out}")


def cmd_stats(args) -> None:
    from memit.models.arch import get_arch
    from memit.stats import stats_for, stats_info, world_rank

    model, tokenizer = _load(args)
    hp = _hparams(args, model)
    c0 = stats_for(model, tokenizer, hp)
    if world_rank()[0] == 0:
        info = stats_info(model, tokenizer, get_arch(model), hp.layers, corpus=hp.stats_corpus,
                          max_tokens=hp.stats_tokens, seq_len=hp.stats_seq_len)
        for layer, c in c0.items():
            meta = info.get(layer, {})
            drift = " → ".join(f"{100 * d:.2f}%" for _, _, d in meta.get("drift", []))
            print(f"layer {layer}: C₀ {tuple(c.shape)}, trace {float(c.trace()):.4g}, "
                  f"{meta.get('tokens', '?')} tokens" + (f", drift per quarter {drift}" if drift else ""))


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


def cmd_generate(args) -> None:
    from memit.demo import greedy

    model, tokenizer = _load(args)
    if args.delta:
        _read_delta(args.delta).apply(model)
    for prompt in args.prompt:
        print(f"{prompt} {greedy(model, tokenizer, prompt, args.max_new_tokens)}")


def cmd_demo(args) -> None:
    from memit.demo import run_demo
    from memit.hparams import preset_for

    model, tokenizer = _load(args)
    result = run_demo(model, tokenizer, preset_for("smollm2-135m") if args.model == "smollm2-135m"
                      else _hparams(args, model), progress=not args.quiet)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def cmd_eval(args) -> None:
    import memit
    from memit.eval.plots import scaling_plot, sequence_plot
    from memit.eval.results import ResultName, result_path
    from memit.eval.run import run_point, select
    from memit.eval.sequential import run_sequence
    from memit.requests import read_records

    if args.score_every < 1:
        raise CliError(f"--score-every {args.score_every}: give a whole number of batches, 1 or more")
    cases = memit.load_cases(args.data, check_batch=False)
    out = Path(args.out)
    seed = args.seed or 0
    todo = []
    for n in args.n:
        sequential = bool(args.batch_size) and args.batch_size < n
        file = result_path(out, ResultName(
            args.dataset, args.method, n, args.offset, seed if args.sample == "random" else None,
            args.batch_size if sequential else None, args.sequential_stats == "base",  # not the same sequence
            Path(args.delta).name.removesuffix(".safetensors") if args.delta else None))
        if file.exists() and not args.force and not sequential:  # a sequence resumes from its journal
            print(f"{file} exists: skipped (pass --force to redo it)")
            continue
        if args.sample == "first" and args.offset + n > len(cases):
            raise CliError(f"--n {n} --offset {args.offset}: {args.data} has only {len(cases)} records")
        todo.append((n, file, sequential))
    if not todo:
        return
    known = read_records(args.retention) if args.retention else None
    for i, f in enumerate(known or []):
        if not isinstance(f, dict) or not all(isinstance(f.get(k), str) for k in ("prompt", "attribute", "subject")):
            raise CliError(f"{args.retention}: record {i} needs string fields prompt, attribute and subject")
    if args.delta and (args.batch_size or len(todo) > 1):
        raise CliError("--delta scores one saved change: give one --n and no --batch-size")
    given = _read_delta(args.delta) if args.delta else None
    model, tokenizer = _load(args)
    hp = _hparams(args, model)
    if args.generate == "chat" and args.dataset == "counterfact":
        from memit.eval.generated import has_chat_template

        if not has_chat_template(tokenizer):
            raise CliError(f"--generate chat: the tokenizer of {args.model} has no chat template; "
                           "use --generate plain")
    for n, file, sequential in todo:
        chosen = select(cases, n, args.offset, args.sample, seed)
        if sequential:
            r = run_sequence(model, tokenizer, chosen, args.dataset, args.method, hp, args.batch_size, file,
                             ppl_corpus=args.perplexity, ppl_tokens=args.perplexity_tokens, progress=not args.quiet,
                             extra={"data": str(args.data), "sample": args.sample}, known_facts=known,
                             max_batches=args.max_batches, generate=GENERATE_FORMS[args.generate],
                             score_every=args.score_every)
            done = len(r.get("batch_edit_s", {})) or len(r["points"]) - 1
            print(f"{done} of {-(-n // args.batch_size)} batches of {args.batch_size} done → {file}")
            sequence_plot(out, args.dataset)
            continue
        r = run_point(model, tokenizer, chosen, args.dataset, hp, file, fluency=not args.no_fluency,
                      seed=seed, progress=not args.quiet, extra={"data": str(args.data), "sample": args.sample},
                      method=args.method, known_facts=known, ppl_corpus=args.perplexity,
                      ppl_tokens=args.perplexity_tokens, delta=given, generate=GENERATE_FORMS[args.generate])
        keys = [k for k in r["edited"] if not k.endswith("_ci95") and isinstance(r["edited"][k], float)]
        print(f"N = {n}: " + "  ".join(f"{k} {r['unedited'][k]:.1f}→{r['edited'][k]:.1f}" for k in keys)
              + f"   edit {r['edit_wall_s']:.0f} s  → {file}")
        _print_generated(r)
        v = r.get("verification")
        if v:
            print(f"  {v['held']:,} of {n:,} facts hold after {v['rounds_used']} round(s); "
                  f"mean {r['targets']['mean_steps']:.1f} steps per fact")
        scaling_plot(out, args.dataset, args.method)


def cmd_serve(args) -> None:
    try:
        from memit.serve import BindError, bind_address, make_server, port_free
        from memit.serve.session import Session
    except ImportError as e:
        raise CliError(f"memit serve needs starlette and uvicorn ({e.name} is missing): pip install 'memit[serve]'")
    try:
        host = bind_address(args.host, explicit=args.host is not None)
    except BindError as e:
        raise CliError(str(e)) from None
    if not port_free(host, args.port):
        raise CliError(f"port {args.port} on {host} is in use; pass --port with another")
    model, tokenizer = _load(args)
    session = Session(model, tokenizer, _hparams(args, model), method=args.method, name=args.model,
                      progress_bars=not args.quiet)
    where = "loopback only; pass --host to listen elsewhere" if args.host is None else \
        f"on {host}, as --host asked: anyone who can reach it can edit and download this model"
    print(f"memit playground for {args.model}: http://{host}:{args.port}/ ({where}). Ctrl-C stops it.")
    print(f"session journal: {session.journal.dir}")
    make_server(session, host, args.port, explicit_host=args.host is not None, max_upload=args.max_upload).run()


def cmd_mquake(args) -> None:
    from memit.eval.mquake import load_mquake, run_mquake

    cases = load_mquake(args.data, args.n)
    if args.n and len(cases) < args.n:
        raise CliError(f"--n {args.n}: {args.data} has only {len(cases)} cases")
    model, tokenizer = _load(args)
    hp = _hparams(args, model)
    for mode in (["per-case", "all"] if args.mode == "both" else [args.mode]):
        file = Path(args.out) / f"mquake_{args.method}_n{len(cases)}_{mode}.json"
        if file.exists() and args.force:
            file.unlink()
        r = run_mquake(model, tokenizer, cases, hp, args.method, mode, file, progress=not args.quiet,
                       extra={"data": str(args.data)})
        pre, post = r["unedited"], r["edited"]
        line = [f"single hop (teacher forced) {pre['single_hop_tf']['rate']:.1f}→{post['single_hop_tf']['rate']:.1f}"]
        for form in ("plain", "chat"):
            if form in post:
                a, b = pre[form], post[form]
                line.append(f"{form}: single hop {a['single_hop']['rate']:.1f}→{b['single_hop']['rate']:.1f}, "
                            f"multi-hop new {a['multi_hop_new_any']['rate']:.1f}→{b['multi_hop_new_any']['rate']:.1f}, "
                            f"old {a['multi_hop_old_any']['rate']:.1f}→{b['multi_hop_old_any']['rate']:.1f}")
        print(f"MQuAKE {mode}, {len(cases)} cases: " + "; ".join(line) + f"  → {file}")


GENERATE_FORMS = {"both": ("plain", "chat"), "plain": ("plain",), "chat": ("chat",), "none": ()}


def _print_generated(r: dict) -> None:
    """The generated-answer headline beside the teacher-forced line above it."""
    pre, post = r["unedited"].get("generated"), r["edited"].get("generated")
    if not post:
        return
    for form, prefix, how in (("plain", "gen", "answer starts with"), ("chat", "chat", "answer contains")):
        if form not in post["forms"]:
            continue
        if post["forms"][form] is None:
            print(f"  generated ({form}): skipped, the tokenizer has no chat template")
            continue
        vals = "  ".join(f"{k} {pre[f'{prefix}_{k}']:.1f}→{post[f'{prefix}_{k}']:.1f}" for k in ("ES", "PS", "NS"))
        print(f"  generated ({form}, {how} the target): {vals}")


def cmd_trace(args) -> None:
    from memit.models.arch import get_arch, n_layers
    from memit.requests import read_records
    from memit.trace import CATEGORIES, plot_heatmaps, suggest_band, trace_many

    facts = read_records(args.facts)[args.offset: args.offset + args.n]
    if not facts or not all(isinstance(f, dict) and "subject" in f and "attribute" in f for f in facts):
        raise CliError(f"{args.facts}: expected known-facts records with 'subject', 'attribute' and 'prompt'")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = _load(args)
    arch = get_arch(model)
    layers = n_layers(model, arch)
    res = trace_many(model, tokenizer, arch, facts, layers, args.samples, args.window, args.seed)
    if not res["used"]:
        raise CliError("the model predicted none of these facts' answers: nothing to trace")
    band = suggest_band(res["avg"]["mlp"][CATEGORIES.index("last subject token")], args.width)
    result = {"facts_file": str(args.facts), "offset": args.offset, "n_candidates": len(facts),
              "n_traced": len(res["used"]), "n_skipped_unknown": res["skipped"], "noise_sigma": res["noise"],
              "samples": args.samples, "window": args.window, "suggested_band": band, "categories": CATEGORIES,
              "avg": {k: v.tolist() for k, v in res["avg"].items()}, "facts": res["used"]}
    from memit.eval.run import machine

    result["machine"] = machine()
    (out / "trace.json").write_text(json.dumps(result, indent=1))
    plot_heatmaps(res["avg"], out / "trace.png",
                  f"{args.model}: causal trace over {len(res['used'])} known facts "
                  f"(noise σ = {res['noise']:.3f}, {args.samples} samples, window {args.window})")
    print(f"traced {len(res['used'])} facts ({res['skipped']} skipped: the model does not predict their answer)")
    print(f"suggested band (largest MLP effect at the last subject token, width {args.width}): {band}")
    print(f"wrote {out / 'trace.json'} and {out / 'trace.png'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memit", description="Write facts into a language model's weights (MEMIT).",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("edit", help="edit a model with a file of requests")
    _model_args(p), _hparam_args(p)
    p.add_argument("--requests", required=True, help="JSON/JSONL: ours, ROME/CounterFact, EasyEdit or zsRE records")
    p.add_argument("--n", type=int, help="edit only the first N records (after --offset)")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--out", help="directory for the edited model (safetensors + tokenizer), or FILE.gguf when "
                   "the model is a GGUF (or smollm2-135m)")
    p.add_argument("--gguf-type", choices=["keep", "f32"], default="keep",
                   help="with --out FILE.gguf: edited tensors requantised to their own type (keep) or F32")
    p.add_argument("--delta", help="file for the weight change alone (.safetensors)")
    p.add_argument("--force", action="store_true", help="replace an existing --out/--delta")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--method", default="memit", choices=METHOD_CHOICES,
                   help="memit (default), rome, ft (FT-L), ft-w, memit-seq, alphaedit, emmet")
    p.add_argument("--journal", help="edit journal directory: replay its steps, edit, append this edit as a step")
    p.set_defaults(fn=cmd_edit)

    p = sub.add_parser("revert", help="go back to an earlier step of an edit journal (later steps are kept aside)")
    _model_args(p)
    p.add_argument("--journal", required=True)
    p.add_argument("--to", type=int, required=True, help="step to keep (0: the base model)")
    p.add_argument("--out", help="also save the model as it was at that step to this directory")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_revert)

    p = sub.add_parser("apply", help="apply a saved delta to a model and save the result")
    _model_args(p)
    p.add_argument("--delta", required=True, help="a saved delta, or a LoRA adapter folder")
    p.add_argument("--out", required=True, help="model directory, or FILE.gguf for a GGUF input model")
    p.add_argument("--gguf-type", choices=["keep", "f32"], default="keep")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-check", action="store_true", help="apply even if the model fingerprint differs")
    p.set_defaults(fn=cmd_apply)

    p = sub.add_parser("export", help="write a delta or a journal as a PEFT LoRA adapter")
    p.add_argument("format", choices=["lora"])
    p.add_argument("--delta", help="a saved delta (.safetensors)")
    p.add_argument("--journal", help="an edit journal: its steps summed into one adapter (or --per-step)")
    p.add_argument("--per-step", action="store_true", help="with --journal: one adapter per step, in step-NNNN/")
    p.add_argument("--rank", type=int, help="at most this rank (truncated SVD, e.g. 512 for vLLM); default: exact")
    p.add_argument("--base-model", help="base_model_name_or_path to write into adapter_config.json")
    p.add_argument("--out", required=True, help="adapter folder")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("stats", help="compute and cache the second-moment statistics C₀")
    _model_args(p), _hparam_args(p)
    p.set_defaults(fn=cmd_stats)

    p = sub.add_parser("generate", help="greedy continuation of prompts")
    _model_args(p)
    p.add_argument("prompt", nargs="+")
    p.add_argument("--delta", help="apply this delta (or LoRA adapter folder) first")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("eval", help="the paper's batch protocol on CounterFact or zsRE, with the unedited baseline")
    _model_args(p), _hparam_args(p)
    p.add_argument("--dataset", required=True, choices=["counterfact", "zsre"])
    p.add_argument("--data", required=True, help="records file (ROME, EasyEdit or zsRE MEND schema)")
    p.add_argument("--n", type=int, nargs="+", required=True, help="batch size(s): one result file per N")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--sample", choices=["first", "random"], default="first")
    p.add_argument("--method", default="memit", choices=METHOD_CHOICES)
    p.add_argument("--out", required=True, help="results directory (JSON per point, PNG of the curve)")
    p.add_argument("--no-fluency", action="store_true", help="skip the generation-entropy metric")
    p.add_argument("--generate", choices=list(GENERATE_FORMS), default="both",
                   help="also score greedy answers as text, plain and/or as a chat turn (CounterFact; chat needs "
                        "a chat template); 'none' keeps only the teacher-forced scores")
    p.add_argument("--batch-size", type=int,
                   help="edit the N records in consecutive batches of this size, scoring all edits so far after each")
    p.add_argument("--max-batches", type=int, metavar="K",
                   help="with --batch-size: edit at most K more batches in this call, then stop; the next call goes on "
                        "(to take turns between long runs)")
    p.add_argument("--score-every", type=int, default=1, metavar="K",
                   help="with --batch-size: score all edits so far after every K-th batch (and the last), not each")
    p.add_argument("--perplexity", metavar="TEXT", help="also perplexity on this text (e.g. wikitext-2 test) before and after the edit "
                   "(with --batch-size: after each batch)")
    p.add_argument("--perplexity-tokens", type=int, default=20_000)
    p.add_argument("--retention", metavar="KNOWN_JSON",
                   help="also score unrelated known facts (known_1000.json) before and after the edit")
    p.add_argument("--delta", help="score this saved delta or LoRA adapter folder instead of editing "
                   "(e.g. an adapter truncated by `memit export lora --rank`)")
    p.add_argument("--force", action="store_true", help="recompute points whose file exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("mquake", help="multi-hop questions after editing MQuAKE cases (generated answers)")
    _model_args(p), _hparam_args(p)
    p.add_argument("--data", required=True, help="MQuAKE-CF records (e.g. MQuAKE-hard.json)")
    p.add_argument("--n", type=int, help="the first N cases (default: all)")
    p.add_argument("--mode", choices=["per-case", "all", "both"], default="both",
                   help="one edit per case (restored in between), one edit of all the cases' facts, or both")
    p.add_argument("--method", default="memit", choices=METHOD_CHOICES)
    p.add_argument("--out", required=True, help="results directory (one JSON per mode; a rerun resumes)")
    p.add_argument("--force", action="store_true", help="start the result files afresh")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_mquake)

    p = sub.add_parser("trace", help="causal tracing over known facts: heatmaps and a suggested layer band")
    _model_args(p)
    p.add_argument("--facts", required=True, help="known facts (ROME known_1000.json schema)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--samples", type=int, default=3, help="noise samples per restoration")
    p.add_argument("--window", type=int, default=10, help="layers restored together for MLP/attention")
    p.add_argument("--width", type=int, default=6, help="width of the suggested band")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_trace)

    p = sub.add_parser("serve", help="a local web page: edit facts, probe, compare, revert and download")
    _model_args(p), _hparam_args(p)
    p.add_argument("--method", default="memit", choices=METHOD_CHOICES)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", help="listen on this address instead of loopback (127.0.0.1); say it to mean it")
    p.add_argument("--max-upload", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="largest facts file the page accepts")
    p.add_argument("--quiet", action="store_true", help="no progress bars in this terminal")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("demo", help="edit the bundled model with the bundled facts and show before/after")
    _model_args(p), _hparam_args(p)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_demo)
    return parser


def _init_distributed(args) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group, gloo on CPU, nccl on GPU."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    cuda = getattr(args, "device", "cpu").startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if cuda:
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    dist.init_process_group("nccl" if cuda else "gloo")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "stats":
        _init_distributed(args)
    try:
        args.fn(args)
    except _known_errors() as e:
        print(f"memit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("memit: interrupted; nothing was saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
