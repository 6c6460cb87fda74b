"""Forward hooks as context managers, addressed by module name.

Every hook is removed when its ``with`` block ends, even on error, so a model never keeps a
stray hook. Block outputs may be a Tensor (most transformers-5 decoder layers) or a tuple
(GPT-J); both are handled here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch


class StopForward(Exception):
    """Raised by a hook to end a forward pass once everything needed has been recorded."""


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_first(x, new):
    return (new, *x[1:]) if isinstance(x, tuple) else new


@contextmanager
def record(
    model: torch.nn.Module, names: list[str], *, what: str = "output", stop: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input or output of each named module into the yielded dict.

    With ``stop=True`` the forward pass is cut short right after the last of ``names`` has run;
    wrap the call in :func:`run` so that the early stop is not an error.
    """
    seen: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        for name in names:
            def hook(module, args, output, name=name):
                seen[name] = _first(args) if what == "input" else _first(output)
                if stop and len(seen) == len(names):
                    raise StopForward

            handle = model.get_submodule(name).register_forward_hook(hook)
            stack.callback(handle.remove)
        yield seen


@contextmanager
def edit_output(model: torch.nn.Module, name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the (first) output of a module by ``fn(output)`` inside the block."""

    def hook(module, args, output):
        return _replace_first(output, fn(_first(output)))

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run(model_or_fn, **inputs):
    """Call the model (or any callable), treating an early :class:`StopForward` as success."""
    try:
        return model_or_fn(**inputs)
    except StopForward:
        return None
