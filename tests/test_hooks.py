"""removed_after: hooks see the passes inside the block only, and go even when it raises."""
import pytest
import torch

from llmperf.measured.hooks import removed_after


def test_hooks_see_the_block_and_are_gone_after_it_even_on_an_error():
    layer, seen = torch.nn.Linear(2, 2), []
    with removed_after([layer.register_forward_hook(lambda m, a, out: seen.append(1))]):
        layer(torch.ones(1, 2))
    layer(torch.ones(1, 2))
    assert seen == [1]
    with pytest.raises(RuntimeError):
        with removed_after([layer.register_forward_hook(lambda m, a, out: seen.append(2))]):
            raise RuntimeError("a failing pass")
    layer(torch.ones(1, 2))
    assert seen == [1] and not layer._forward_hooks
