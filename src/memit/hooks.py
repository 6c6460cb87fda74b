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
    model: torch.nn.Module, names: list[str], *, what: str = "output", stop: bool = False, whole: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input or output of each named module into the yielded dict.

    With ``stop=True`` the forward pass is cut short right after the last of ``names`` has run;
    wrap the call in :func:`run` so that the early stop is not an error. ``whole=True`` keeps a
    tuple output as it is (for :func:`skip_blocks`), not only its first element.
    """
    seen: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        for name in names:
            def hook(module, args, output, name=name):
                seen[name] = _first(args) if what == "input" else output if whole else _first(output)
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


class _Known(torch.nn.Module):
    """Stands in for a block whose output for this forward pass is already known."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


@contextmanager
def skip_blocks(model: torch.nn.Module, blocks: str, upto: int, output, rows: torch.Tensor | None = None
                ) -> Iterator[None]:
    """Inside the block, blocks 0..``upto`` of the ModuleList ``blocks`` do not compute: they pass
    on ``output``, recorded earlier (``record(whole=True)``) from block ``upto`` on the same inputs.

    An edit of block ``upto``'s output cannot change anything below it, so an optimisation of that
    edit (the target vectors) need only run the blocks above; hooks on block ``upto``'s name, set
    inside this block, act on ``output``. ``rows`` picks the batch rows of ``output`` that this pass
    runs. The real blocks are back when it ends, even on error.
    """
    if rows is not None:
        output = _replace_first(output, _first(output)[rows.to(_first(output).device)])
    stack = model.get_submodule(blocks)
    saved = [stack[i] for i in range(upto + 1)]
    try:
        for i in range(upto + 1):
            stack[i] = _Known(output)
        yield
    finally:
        for i, block in enumerate(saved):
            stack[i] = block


def run(model_or_fn, **inputs):
    """Call the model (or any callable), treating an early :class:`StopForward` as success."""
    try:
        return model_or_fn(**inputs)
    except StopForward:
        return None
