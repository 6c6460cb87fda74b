"""What the commands share: model and hyperparameter options, loading, and the one error type
whose message is the one line a user sees."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path


class CliError(Exception):
    pass


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="model directory, .gguf file, hub id, 'smollm2-135m' (default) or 'gemma3-270m'")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    p.add_argument("--device-map", help="spread a large model with accelerate: auto, balanced, sequential, "
                   "or a JSON file mapping module names to devices ('cpu', 'disk', 0, 1, ...)")
    p.add_argument("--max-memory", help="per-device limits for --device-map, e.g. 0=20GiB,1=20GiB,cpu=60GiB")
    p.add_argument("--offload-folder", help="where --device-map puts layers offloaded to disk")


def hparam_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="hyperparameter preset: gpt-j, gpt2-xl, smollm2-135m, smollm2-135m-paper, gemma3-270m")
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


def hparams_of(args, model):
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


def fresh_out(path: str, force: bool, model_spec: str) -> Path:
    out = Path(path).expanduser()
    src = Path(model_spec).expanduser()
    if src.exists() and (out.resolve() == src.resolve() or out.resolve() == src.resolve().parent):
        raise CliError(f"--out {out} is the model's own location; memit never writes into the input model")
    if out.exists() and not force:
        raise CliError(f"--out {out} exists; pass --force to replace it")
    return out


def save_model(model, tokenizer, out: Path) -> None:
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


def load(args):
    from memit.models.loading import load_model

    device_map = getattr(args, "device_map", None)
    if device_map and Path(device_map).is_file():
        device_map = json.loads(Path(device_map).read_text())
    return load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                      device_map=device_map, max_memory=_parse_max_memory(getattr(args, "max_memory", None)),
                      offload_folder=getattr(args, "offload_folder", None))


def read_delta(path: str):
    """A saved delta, or a LoRA adapter folder (``memit export lora`` or any PEFT LoRA)."""
    from memit.delta import load_delta
    from memit.lora import is_lora, load_lora

    if not Path(path).exists():
        raise CliError(f"--delta {path}: no such file or folder")
    return load_lora(path) if is_lora(path) else load_delta(path)
