"""memit stats, generate, demo, serve and trace: the commands around an edit."""

from __future__ import annotations

import json
from pathlib import Path

from memit.cli.common import CliError, hparams_of, load, read_delta


def cmd_stats(args) -> None:
    from memit.models.arch import get_arch
    from memit.stats import stats_for, stats_info, world_rank

    model, tokenizer = load(args)
    hp = hparams_of(args, model)
    c0 = stats_for(model, tokenizer, hp)
    if world_rank()[0] == 0:
        info = stats_info(model, tokenizer, get_arch(model), hp.layers, corpus=hp.stats_corpus,
                          max_tokens=hp.stats_tokens, seq_len=hp.stats_seq_len)
        for layer, c in c0.items():
            meta = info.get(layer, {})
            drift = " → ".join(f"{100 * d:.2f}%" for _, _, d in meta.get("drift", []))
            print(f"layer {layer}: C₀ {tuple(c.shape)}, trace {float(c.trace()):.4g}, "
                  f"{meta.get('tokens', '?')} tokens" + (f", drift per quarter {drift}" if drift else ""))


def cmd_generate(args) -> None:
    from memit.demo import greedy

    model, tokenizer = load(args)
    if args.delta:
        read_delta(args.delta).apply(model)
    for prompt in args.prompt:
        print(f"{prompt} {greedy(model, tokenizer, prompt, args.max_new_tokens)}")


def cmd_demo(args) -> None:
    from memit.demo import run_demo
    from memit.hparams import preset_for

    model, tokenizer = load(args)
    result = run_demo(model, tokenizer, preset_for("smollm2-135m") if args.model == "smollm2-135m"
                      else hparams_of(args, model), progress=not args.quiet)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


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
    model, tokenizer = load(args)
    session = Session(model, tokenizer, hparams_of(args, model), method=args.method, name=args.model,
                      progress_bars=not args.quiet)
    where = "loopback only; pass --host to listen elsewhere" if args.host is None else \
        f"on {host}, as --host asked: anyone who can reach it can edit and download this model"
    print(f"memit playground for {args.model}: http://{host}:{args.port}/ ({where}). Ctrl-C stops it.")
    print(f"session journal: {session.journal.dir}")
    make_server(session, host, args.port, explicit_host=args.host is not None, max_upload=args.max_upload).run()


def cmd_trace(args) -> None:
    from memit.models.arch import get_arch, n_layers
    from memit.requests import read_records
    from memit.trace import CATEGORIES, plot_heatmaps, suggest_band, trace_many

    facts = read_records(args.facts)[args.offset: args.offset + args.n]
    if not facts or not all(isinstance(f, dict) and "subject" in f and "attribute" in f for f in facts):
        raise CliError(f"{args.facts}: expected known-facts records with 'subject', 'attribute' and 'prompt'")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load(args)
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
