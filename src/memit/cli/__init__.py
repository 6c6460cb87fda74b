"""The ``memit`` command line. Bad input ends with one line on stderr and exit code 2.

Each command's code is in the module named for it (edit.py, eval.py, tools.py); this file holds
the parser and the entry point."""

from __future__ import annotations

import argparse
import os
import sys

from memit.cli.common import CliError, hparam_args, model_args
from memit.cli.edit import cmd_apply, cmd_edit, cmd_export, cmd_revert
from memit.cli.eval import GENERATE_FORMS, cmd_eval, cmd_mquake
from memit.cli.tools import cmd_demo, cmd_generate, cmd_serve, cmd_stats, cmd_trace
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


METHOD_CHOICES = list(METHODS)  # one list: the CLI, `memit eval` and the docs read memit.methods.METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memit", description="Write facts into a language model's weights (MEMIT).",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("edit", help="edit a model with a file of requests")
    model_args(p), hparam_args(p)
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
    model_args(p)
    p.add_argument("--journal", required=True)
    p.add_argument("--to", type=int, required=True, help="step to keep (0: the base model)")
    p.add_argument("--out", help="also save the model as it was at that step to this directory")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_revert)

    p = sub.add_parser("apply", help="apply a saved delta to a model and save the result")
    model_args(p)
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
    model_args(p), hparam_args(p)
    p.set_defaults(fn=cmd_stats)

    p = sub.add_parser("generate", help="greedy continuation of prompts")
    model_args(p)
    p.add_argument("prompt", nargs="+")
    p.add_argument("--delta", help="apply this delta (or LoRA adapter folder) first")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("eval", help="the paper's batch protocol on CounterFact or zsRE, with the unedited baseline")
    model_args(p), hparam_args(p)
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
    p.add_argument("--save-delta", metavar="DIR",
                   help="also save each point's delta in DIR, named like its result file, so that it can be "
                        "scored again with --delta without editing again")
    p.add_argument("--force", action="store_true", help="recompute points whose file exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("mquake", help="multi-hop questions after editing MQuAKE cases (generated answers)")
    model_args(p), hparam_args(p)
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
    model_args(p)
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
    model_args(p), hparam_args(p)
    p.add_argument("--method", default="memit", choices=METHOD_CHOICES)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", help="listen on this address instead of loopback (127.0.0.1); say it to mean it")
    p.add_argument("--max-upload", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="largest facts file the page accepts")
    p.add_argument("--quiet", action="store_true", help="no progress bars in this terminal")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("demo", help="edit the bundled model with the bundled facts and show before/after")
    model_args(p), hparam_args(p)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_demo)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from memit.corpus import CorpusError
    from memit.delta import DeltaError
    from memit.files import CorruptFileError
    from memit.journal import JournalError
    from memit.lora import LoraError
    from memit.methods.memit import EditError
    from memit.models.arch import UnsupportedModelError
    from memit.models.loading import ModelLoadError
    from memit.requests import RequestError
    from memit.tokens import TokenizationError

    return (CliError, DeltaError, CorruptFileError, JournalError, EditError, UnsupportedModelError, ModelLoadError,
            RequestError, CorpusError, TokenizationError, LoraError)


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


__all__ = ["CliError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
