"""Arguments are checked once, where the user calls in, not once per token: the work of the
checks (and their reads of tensors back to the host) must not grow with the tokens generated.

Each test counts the calls of a module's check functions over a short and a long run; the
loops call unchecked cores (`generate.sampling_distribution`, `speculative._verify`), so the counts
are equal. The public functions still check (`next_token_distribution`, `verify`)."""
import pytest
import torch

from llmperf.measured import generate as generate_module
from llmperf.measured import speculative
from llmperf.measured.drafts import NgramDraft
from llmperf.measured.generate import generate, next_token_distribution, sample_next
from llmperf.measured.model import Transformer
from llmperf.measured.speculative import speculative_generate, verify


@pytest.fixture(scope="module")
def tiny():
    return Transformer("ref-tiny", max_seq_len=64, seed=2)


def _counting(monkeypatch, module, name: str) -> list:
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[:1])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_sampled_generation_checks_its_arguments_once(tiny, monkeypatch):
    calls = _counting(monkeypatch, generate_module, "check_positive")
    counts = []
    for n in (2, 12):
        calls.clear()
        generate(tiny, [1, 2, 3], n, temperature=0.9, top_k=7, seed=1)
        counts.append(len(calls))
    assert counts[0] == counts[1] > 0


def test_speculative_steps_verify_without_rechecking(tiny, monkeypatch):
    checks = _counting(monkeypatch, speculative, "_check_probs")
    drafts = _counting(monkeypatch, speculative, "_checked_drafts")
    prompt = [5, 6, 7, 8] * 4  # repeats: the n-gram draft proposes at every step
    steps = []
    for n in (3, 20):
        out = speculative_generate(tiny, NgramDraft(), prompt, n, gamma=3, temperature=1.0,
                                   seed=4)
        steps.append(sum(p > 0 for p in out.proposed))
    assert steps[1] > steps[0] > 0  # more verified steps in the longer run...
    assert checks == [] and drafts == []  # ...and no re-check in either


def test_the_public_functions_still_check():
    with pytest.raises(ValueError, match="temperature"):
        next_token_distribution(torch.zeros(1, 4), temperature=-1.0)
    with pytest.raises(ValueError, match="logits"):
        next_token_distribution([[0.0, 1.0]])
    eye = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="draft_tokens"):
        verify(eye[[1, 2]], eye[[1]], [7])
    with pytest.raises(ValueError, match="probability > 0"):
        verify(eye[[1, 2]], eye[[1]], [2])
    assert verify(eye[[1, 2]], eye[[1]], [1]) == [1, 2]
    # sample_next is the per-token core: greedy needs no generator and checks nothing
    assert sample_next(torch.tensor([[0.0, 3.0, 1.0]]), 0.0, None, None).tolist() == [1]
