"""Reading and writing a weight wherever it lives.

A model loaded with accelerate's big-model options (``device_map="auto"``, ``max_memory``,
``offload_folder``) may hold each layer on a different GPU, in CPU memory, or on disk. An
offloaded parameter is an empty ("meta") tensor; its values live in the weights map of the
accelerate hook on its module, which loads them onto the execution device for every forward.

An edit therefore reads and writes weights through these functions, computes each layer's update
on that layer's execution device, and never gathers the model anywhere. A changed offloaded
weight is kept in memory, where the hook's weights map looks first, so files on disk (the user's
checkpoint or an offload folder) are never written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def _align_hooks(module: torch.nn.Module) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", [hook]))  # a SequentialHook holds several


def _offloaded(model: torch.nn.Module, name: str):
    """(weights map, key in it) when ``name`` is an offloaded parameter, else None."""
    mod_name, _, attr = name.rpartition(".")
    parts = mod_name.split(".") if mod_name else []
    for cut in range(len(parts), -1, -1):  # the hook may sit on the module or on a parent
        module = model.get_submodule(".".join(parts[:cut]))
        key = ".".join([*parts[cut:], attr])
        for hook in _align_hooks(module):
            wmap = getattr(hook, "weights_map", None)
            if getattr(hook, "offload", False) and wmap is not None and key in wmap:
                return wmap, key
    return None


def read(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The values of parameter ``name``: the parameter itself, or its offloaded copy."""
    off = _offloaded(model, name)
    if off is None:
        return model.get_parameter(name)
    wmap, key = off
    return wmap[key]


@torch.no_grad()
def write(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Set parameter ``name`` to ``value`` (same shape), wherever it lives."""
    off = _offloaded(model, name)
    if off is None:
        p = model.get_parameter(name)
        p.copy_(value.to(p.device, p.dtype))
        return
    wmap, key = off
    store = getattr(wmap, "dataset", wmap)  # accelerate's PrefixedDataset over a loader or a dict
    full = getattr(wmap, "prefix", "") + key
    old = wmap[key]
    value = value.detach().to(old.device, old.dtype).clone()
    if hasattr(store, "state_dict"):  # OffloadedWeightsLoader: its in-memory dict overrides the files
        store.state_dict[full] = value
    else:
        store[full] = value


def execution_device(model: torch.nn.Module, name: str) -> torch.device:
    """Where the module holding ``name`` computes: the device for that layer's update."""
    mod_name = name.rpartition(".")[0]
    parts = mod_name.split(".") if mod_name else []
    for cut in range(len(parts), -1, -1):
        for hook in _align_hooks(model.get_submodule(".".join(parts[:cut]))):
            dev = getattr(hook, "execution_device", None)
            if dev is not None:
                return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return model.get_parameter(name).device


def input_device(model: torch.nn.Module) -> torch.device:
    """Where token ids go in: the execution device of the input embedding."""
    emb = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is emb) + ".weight"
    return execution_device(model, name)


def named_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """All parameters with their values, offloaded ones included (for fingerprints)."""
    for name, p in model.named_parameters():
        yield name, (read(model, name) if p.device.type == "meta" else p)


@contextmanager
def frozen(model: torch.nn.Module, train: Iterable[torch.nn.Parameter] = ()) -> Iterator[None]:
    """Eval mode, and gradients for ``train`` alone, while inside; the model's own mode, flags and
    gradients come back after, whatever happens.

    A model a user loads with ``from_pretrained`` asks for gradients on every weight: each
    backward pass of the target loop would compute and leave ``.grad`` on all of them, and one in
    training mode would optimise its target vectors through dropout."""
    train_ids = {id(p) for p in train}
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    modes = [m.training for m in model.modules()]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(id(p) in train_ids)
        yield
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad
