"""Acceptance by draft position, counted once (`steps_alpha_by_position`) and used by both a
run (`SpeculativeGeneration`) and the pooled comparison (`experiments.compare`).

The expected values are counted by hand from six steps (proposed, accepted), gamma 3:
(3, 3) (3, 1) (3, 0) (2, 2) (0, 0) (1, 0).
- position 1 is examined by every step that proposed a draft (5), kept by 3 of them;
- position 2 by the steps that proposed 2 and kept the first: (3, 3) (3, 1) (2, 2), kept by 2;
- position 3 by (3, 3) alone, which kept it; position 4 by none.
alpha: 6 accepted, 3 steps stopped by a rejection ((3, 1) (3, 0) (1, 0)): 6 / 9.
"""
import pytest
import torch

from llmperf.measured import experiments
from llmperf.measured.drafts import NgramDraft
from llmperf.measured.model import Transformer
from llmperf.measured.speculative import (
    SpeculativeGeneration,
    steps_alpha,
    steps_alpha_by_position,
)
from llmperf.models import ModelConfig

PROPOSED = (3, 3, 3, 2, 0, 1)
ACCEPTED = (3, 1, 0, 2, 0, 0)
BY_HAND = (3 / 5, 2 / 3, 1.0, None)


def _run(tokens: int, proposed, accepted, prompt_len: int) -> SpeculativeGeneration:
    """A run of these steps, each of 1 s: 0.5 s target, 0.25 s draft, 0.25 s host."""
    n = len(proposed)
    return SpeculativeGeneration([0] * tokens, proposed, accepted, float(n), prompt_len, 0.0,
                                 (1.0,) * n, (0.5,) * n, (0.25,) * n)


def test_acceptance_by_position_by_hand():
    assert steps_alpha_by_position(PROPOSED, ACCEPTED, 4) == pytest.approx(BY_HAND)
    assert steps_alpha(PROPOSED, ACCEPTED) == pytest.approx(6 / 9)
    run = _run(12, PROPOSED, ACCEPTED, 4)
    assert run.alpha_by_position(4) == pytest.approx(BY_HAND)
    assert run.alpha == pytest.approx(6 / 9)


@pytest.mark.parametrize(("proposed", "accepted", "gamma", "match"), [
    ((3, 1), (3,), 3, "one length"), ((2,), (3,), 3, "accepted <= proposed"),
    ((2,), (-1,), 3, "0 <= accepted"), ((2,), (1,), 0, "gamma"),
])
def test_bad_steps_are_refused(proposed, accepted, gamma, match):
    with pytest.raises(ValueError, match=match):
        steps_alpha_by_position(proposed, accepted, gamma)


def test_compare_pools_the_steps_of_every_prompt(monkeypatch):
    """Two prompts whose runs split the six steps: compare reports the pooled values."""
    halves = iter([(PROPOSED[:2], ACCEPTED[:2]), (PROPOSED[2:], ACCEPTED[2:])])

    def canned(target, draft, prompt, max_new_tokens, gamma, temperature, seed):
        proposed, accepted = next(halves)
        return _run(max_new_tokens, proposed, accepted, len(prompt))

    monkeypatch.setattr(experiments, "speculative_generate", canned)
    config = ModelConfig(name="tiny", n_layers=1, d_model=16, n_heads=2, d_ff=32,
                         vocab_size=11, max_seq_len=16)
    target = Transformer(config, seed=1)
    with torch.inference_mode():
        (row,) = experiments.compare(target, {"lookup": NgramDraft()}, [[1, 2], [3, 4]], 4, [3],
                                 rounds=1, context=4)
    assert row.alpha_by_position == pytest.approx(BY_HAND[:3])
    assert row.alpha == pytest.approx(6 / 9)
    # the time breakdown is pooled too: 6 steps of 1 s over 2 prompts x 4 tokens
    assert row.spec_s_per_token == pytest.approx(6 / 8)
    assert (row.prefill_s_per_token, row.target_forward_s_per_token,
            row.draft_forward_s_per_token, row.host_s_per_token) == pytest.approx(
        (0.0, 3 / 8, 1.5 / 8, 1.5 / 8))


def test_a_run_holds_one_time_per_step():
    run = _run(12, PROPOSED, ACCEPTED, 4)
    assert run.host_s == pytest.approx((0.25,) * 6)
    assert sum(run.time_breakdown().values()) == pytest.approx(run.elapsed_s)
    with pytest.raises(ValueError, match="one time per step"):
        SpeculativeGeneration([0] * 12, PROPOSED, ACCEPTED, 6.0, 4, 0.0, (1.0,) * 5,
                              (0.5,) * 6, (0.25,) * 6)
