"""memit eval and memit mquake: benchmark runs and the lines they print."""

from __future__ import annotations

from pathlib import Path

from memit.cli.common import CliError, hparams_of, load, read_delta

GENERATE_FORMS = {"both": ("plain", "chat"), "plain": ("plain",), "chat": ("chat",), "none": ()}


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
    keep = {}
    if args.save_delta:
        if args.delta or any(sequential for _, _, sequential in todo):
            raise CliError("--save-delta keeps the delta of a one-batch edit made here "
                           "(a sequence keeps its journal; a given --delta is already saved)")
        keep = {file: Path(args.save_delta) / f"{file.stem}.safetensors" for _, file, _ in todo}
        for path in keep.values():
            if path.exists():
                raise CliError(f"{path} exists: remove it or give another --save-delta folder")
    given = read_delta(args.delta) if args.delta else None
    model, tokenizer = load(args)
    hp = hparams_of(args, model)
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
                      ppl_tokens=args.perplexity_tokens, delta=given, generate=GENERATE_FORMS[args.generate],
                      save_delta=keep.get(file))
        keys = [k for k in r["edited"] if not k.endswith("_ci95") and isinstance(r["edited"][k], float)]
        print(f"N = {n}: " + "  ".join(f"{k} {r['unedited'][k]:.1f}→{r['edited'][k]:.1f}" for k in keys)
              + f"   edit {r['edit_wall_s']:.0f} s  → {file}")
        _print_generated(r)
        v = r.get("verification")
        if v:
            print(f"  {v['held']:,} of {n:,} facts hold after {v['rounds_used']} round(s); "
                  f"mean {r['targets']['mean_steps']:.1f} steps per fact")
        scaling_plot(out, args.dataset, args.method)


def cmd_mquake(args) -> None:
    from memit.eval.mquake import load_mquake, run_mquake

    cases = load_mquake(args.data, args.n)
    if args.n and len(cases) < args.n:
        raise CliError(f"--n {args.n}: {args.data} has only {len(cases)} cases")
    model, tokenizer = load(args)
    hp = hparams_of(args, model)
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
