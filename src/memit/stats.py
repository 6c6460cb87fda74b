"""Second-moment statistics C₀ = E[k kᵀ] of the inputs of the MLP output projection.

C₀ is a constant of a model and a layer, so it is computed once and cached. All requested layers
are collected in one forward pass that stops after the last of them; sums are kept in float64
whatever the model's dtype. The text comes from corpus.py.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from memit import hooks
from memit.corpus import BUNDLED, CorpusError, token_windows
from memit.files import CorruptFileError, load_tensors, save_tensors
from memit.fingerprint import layer_fingerprints, tensor_fingerprint
from memit.models.arch import Arch, dims, get_arch
from memit.models.loading import cache_dir
from memit.progress import tqdm
from memit.tokens import pad
from memit.weights import input_device


@torch.no_grad()
def accumulate(model, arch: Arch, layers: list[int], windows: torch.Tensor, batch_tokens: int,
               progress: bool = True, partial: Path | None = None, key: str = "",
               save_every_s: float = 60.0) -> tuple[dict[int, torch.Tensor], int, dict[int, list]]:
    """Sums of k kᵀ (float64) for each layer over all tokens of ``windows``, the token count, and
    the drift: at each quarter of the budget, how much the estimate C₀ moved since the previous
    quarter (‖ΔC₀‖_F / ‖C₀‖_F, as ``[tokens_then, tokens_now, change]``). A last change of a few
    percent says a larger budget would still move C₀; one well under 1 % says it has settled.

    One forward pass per batch collects every layer; it stops after the last layer's input.
    With ``partial``, the running sums are saved every ``save_every_s`` seconds and when the run
    is interrupted (Ctrl-C included); a later call with the same ``key`` continues from there and
    ends with exactly the sums of an uninterrupted run (same batches, same order).
    """
    layers = sorted(layers)
    names = [arch.mlp_out_name(layer) for layer in layers]
    _, d_ff = dims(model, arch)
    sums = {layer: torch.zeros(d_ff, d_ff, dtype=torch.float64) for layer in layers}
    device = input_device(model)
    rank, world = world_rank()
    if world > 1:  # data parallel: each rank takes a disjoint shard, sums are all-reduced below
        windows = windows[rank::world]
        key += f"|rank {rank} of {world}"
    rows = max(1, batch_tokens // windows.shape[1])
    start, count = _load_partial(partial, key, sums)
    marks = sorted({-(-len(windows) * q // 4) for q in (1, 2, 3, 4)})
    drift: dict[int, list] = {layer: [] for layer in layers}
    last: dict[int, tuple[int, torch.Tensor]] = {}
    bar = tqdm(total=windows.numel(), initial=start * windows.shape[1], unit="tok", desc="C₀ statistics",
               disable=not progress)
    last_save = time.monotonic()
    try:
        while start < len(windows):
            batch = pad(windows[start: start + rows].tolist(), 0).to(device)
            with hooks.record(model, names, what="input", stop=True) as seen:
                hooks.run(model.base_model, **batch.model_inputs())
            for layer, name in zip(layers, names):
                k = seen[name].reshape(-1, d_ff).float()
                sums[layer] += (k.T @ k).double().cpu()
            count += batch.input_ids.numel()
            start += rows
            bar.update(batch.input_ids.numel())
            if marks and start >= marks[0]:
                while marks and start >= marks[0]:
                    marks.pop(0)
                _track_drift(sums, count, last, drift)
            if partial and time.monotonic() - last_save > save_every_s:
                _save_partial(partial, key, sums, start, count)
                last_save = time.monotonic()
    except BaseException:
        if partial:
            _save_partial(partial, key, sums, start, count)
        raise
    finally:
        bar.close()
    if world > 1:
        import torch.distributed as dist

        for layer in layers:
            t = sums[layer].to(device)
            dist.all_reduce(t)
            sums[layer] = t.cpu()
        c = torch.tensor([float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(c)
        count = int(c.item())
        drift = {layer: [] for layer in layers}  # one shard's drift says little about the whole
    return sums, count, drift


def _track_drift(sums: dict, count: int, last: dict, drift: dict) -> None:
    for layer, s in sums.items():
        est = (s / count).float()  # float32 copy: the drift needs only a few digits
        if layer in last:
            then, prev = last[layer]
            drift[layer].append([then, count, float((est - prev).norm() / est.norm())])
        last[layer] = (count, est)


def world_rank() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (launched with torchrun), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _save_partial(path: Path, key: str, sums: dict, start: int, count: int) -> None:
    save_tensors(path, {f"L{layer}": s for layer, s in sums.items()}, {"key": key, "start": start, "count": count})


def _load_partial(path: Path | None, key: str, sums: dict) -> tuple[int, int]:
    if not path or not path.is_file():
        return 0, 0
    try:
        tensors, meta = load_tensors(path)
    except CorruptFileError:
        return 0, 0
    if meta.get("key") != key or set(tensors) != {f"L{layer}" for layer in sums}:
        return 0, 0
    for layer in sums:
        sums[layer] = tensors[f"L{layer}"].double()
    print(f"memit: resuming statistics from {path} ({meta['count']} tokens done)")
    return meta["start"], meta["count"]


@contextmanager
def _locked(path: Path):
    """An exclusive lock, so two processes never compute and write the same statistics at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): no lock
            pass
        yield


def stats_path(model_fp: str, layer: int, corpus_fp: str) -> Path:
    return cache_dir() / "stats" / f"{model_fp[:16]}-L{layer}-{corpus_fp[:16]}.safetensors"


def second_moments(model, tokenizer, arch: Arch, layers: list[int], *, corpus: str | None = None,
                   max_tokens: int = 100_000, seq_len: int = 256, batch_tokens: int = 4096,
                   use_cache: bool = True, progress: bool = True) -> dict[int, torch.Tensor]:
    """C₀ (float64, normalised by the token count) for each layer; cached ones are reused.

    Under torch.distributed each rank takes a disjoint shard of the windows and the sums are
    all-reduced, so the cache is the same as a single process would write.
    """
    seq_len = min(seq_len, getattr(model.config, "max_position_embeddings", None) or seq_len)
    windows = token_windows(tokenizer, corpus, seq_len, max_tokens)
    corpus_fp = tensor_fingerprint(windows)
    fps = layer_fingerprints(model, arch, max(layers))
    if not use_cache:
        sums, count, _ = accumulate(model, arch, layers, windows, batch_tokens, progress)
        return {layer: sums[layer] / count for layer in layers}
    rank, world = world_rank()
    if world > 1:  # ranks share rank 0's view of the cache; rank 0 alone writes it
        return _second_moments_distributed(model, arch, layers, windows, fps, corpus_fp, batch_tokens, progress,
                                           rank, {"corpus": corpus or BUNDLED, "seq_len": seq_len})
    out = _cached(layers, fps, corpus_fp)
    missing = [layer for layer in layers if layer not in out]
    if not missing:
        return out
    stats_dir = stats_path("", 0, "").parent
    with _locked(stats_dir / f"{corpus_fp[:16]}.lock"):
        out.update(_cached(missing, fps, corpus_fp, quiet=True))  # another process may have finished them
        missing = [layer for layer in layers if layer not in out]
        if missing:
            key = "|".join([corpus_fp, *(fps[layer] for layer in missing), str(batch_tokens)])
            partial = stats_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.partial.safetensors"
            sums, count, drift = accumulate(model, arch, missing, windows, batch_tokens, progress, partial, key)
            _report_drift(drift, count, progress)
            out.update(_finish(model, sums, count, fps, corpus_fp, {"corpus": corpus or BUNDLED, "seq_len": seq_len},
                               drift))
            partial.unlink(missing_ok=True)
    return out


def stats_for(model, tokenizer, hp, *, progress: bool = True) -> dict[int, torch.Tensor]:
    """C₀ of ``hp.layers`` with the statistics settings of ``hp`` (a MemitHyperParams): the call
    every method, the CLI and the benchmarks make, so they all hit the same cache entries."""
    return second_moments(model, tokenizer, get_arch(model), hp.layers, corpus=hp.stats_corpus,
                          max_tokens=hp.stats_tokens, seq_len=hp.stats_seq_len, batch_tokens=hp.batch_tokens,
                          progress=progress)


def _report_drift(drift: dict[int, list], count: int, progress: bool) -> None:
    last = {layer: d[-1][2] for layer, d in drift.items() if d}
    if last and progress:
        worst = max(last, key=last.get)
        print(f"memit: over the last quarter of the {count:,}-token budget C₀ moved by at most "
              f"{100 * last[worst]:.2f}% (layer {worst}); raise --stats-tokens if that is more than you accept")


def stats_info(model, tokenizer, arch: Arch, layers: list[int], *, corpus: str | None = None,
               max_tokens: int = 100_000, seq_len: int = 256) -> dict[int, dict]:
    """What the cache says of each layer's statistics: tokens used and drift (see ``accumulate``)."""
    seq_len = min(seq_len, getattr(model.config, "max_position_embeddings", None) or seq_len)
    corpus_fp = tensor_fingerprint(token_windows(tokenizer, corpus, seq_len, max_tokens))
    fps = layer_fingerprints(model, arch, max(layers))
    out = {}
    for layer in layers:
        try:
            out[layer] = load_tensors(stats_path(fps[layer], layer, corpus_fp))[1]
        except CorruptFileError:  # missing or damaged: nothing to say
            continue
    return out


def _finish(model, sums: dict, count: int, fps: list[str], corpus_fp: str, extra: dict, drift: dict, *,
            save: bool = True) -> dict[int, torch.Tensor]:
    """C₀ = sums / count for each layer, refused if it holds NaN/Inf, then cached: the one way
    that statistics are made, by one process or by several."""
    out = {}
    for layer, total in sums.items():
        out[layer] = total / count
        if not torch.isfinite(out[layer]).all():
            raise CorpusError(f"layer {layer}: the statistics contain NaN/Inf; the model's activations "
                              "overflow on this corpus (try --dtype float32)")
    for layer, c0 in out.items() if save else ():
        meta = {"model_fp": fps[layer], "layer": layer, "corpus_fp": corpus_fp, "tokens": count,
                "model_dtype": str(next(model.parameters()).dtype), "stored_dtype": "float64", **extra}
        if drift.get(layer):
            meta["drift"] = drift[layer]
        save_tensors(stats_path(fps[layer], layer, corpus_fp), {"C0": c0}, meta)
    return out


def _second_moments_distributed(model, arch, layers, windows, fps, corpus_fp, batch_tokens, progress, rank, extra):
    import torch.distributed as dist

    found = [_cached(layers, fps, corpus_fp) if rank == 0 else None]
    dist.broadcast_object_list(found, src=0)
    out = found[0]
    missing = [layer for layer in layers if layer not in out]
    if missing:
        sums, count, drift = accumulate(model, arch, missing, windows, batch_tokens, progress and rank == 0)
        out.update(_finish(model, sums, count, fps, corpus_fp, extra, drift, save=rank == 0))  # every rank checks
    dist.barrier()
    return out


def _cached(layers: list[int], fps: list[str], corpus_fp: str, quiet: bool = False) -> dict[int, torch.Tensor]:
    """The layers whose statistics are in the cache, intact and made from the same weights and text."""
    out = {}
    for layer in layers:
        path = stats_path(fps[layer], layer, corpus_fp)
        if not path.is_file():
            continue
        try:
            tensors, meta = load_tensors(path)
        except CorruptFileError as e:
            if not quiet:
                print(f"memit: recomputing statistics: {e}")
            continue
        if meta.get("model_fp") == fps[layer] and meta.get("corpus_fp") == corpus_fp:
            out[layer] = tensors["C0"].double()
    return out
