"""Forward hooks that last one block of code: how the measured chapters look inside a model.

    handles = [block.register_forward_hook(record) for block in model.layers]
    with removed_after(handles):
        model(tokens)          # the hooks see this pass, and no later one
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def removed_after(handles: Iterable) -> Iterator[None]:
    """Remove every hook handle when the block ends, also when it raises."""
    handles = list(handles)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
