# %% [markdown]
# # Exercises 8: mixture of experts and speculative decoding
#
# These questions follow chapter 8. They ask how many parameters an MoE model holds and how
# many a token uses, how many experts a decode batch touches and what it reads, how many tokens
# a speculative step emits and how much faster decoding gets, which number of drafts is best,
# and finally the accept/reject step of speculative sampling, written by hand. Write each
# answer where the cell says `raise NotImplementedError(...)`, run the cell, then run the check
# cell below it: it calls your function on a few inputs and prints PASS or FAIL with the
# expected answer, what you returned and the tolerance. The grader runs the same checks plus
# hidden ones on other inputs, so write the general rule rather than the numbers of the visible
# examples.
#
# Conventions, as in the chapter: $E$ experts per layer, $k$ of them per token, SwiGLU experts
# of three $d \times d_{\text{ff}}$ matrices, no biases, RMSNorm with one weight vector of $d$;
# $\alpha$ the acceptance rate, $\gamma$ the drafts per step, $c$ the cost of a draft step in
# target steps. Bytes per element come from `lp.bytes_per_element(dtype)`. You may look up
# models in `llmperf` (`lp.get_model(name)` and its fields `n_layers`, `d_model`, `d_ff`,
# `n_experts`, `experts_per_token`); write the arithmetic yourself: `param_count`,
# `active_param_count`, `lp.experts_touched`, `lp.step_costs` and `llmperf.analytic.speculative`
# answer these questions for you and teach you nothing. The grader reports calls of them from
# your answers, and the checks that make one fail.

# %%

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: total and active parameters (3 points)
#
# A Llama-style MoE decoder is given by a dict with `n_layers`, `d_model`, `n_heads`,
# `n_kv_heads`, `d_ff`, `vocab_size`, `n_experts`, `experts_per_token` and `tied_embeddings`.
# The head dimension is `d_model // n_heads`. Each layer holds the attention matrices $W_q$
# ($d \times h\,d_h$), $W_k$ and $W_v$ ($d \times h_{kv} d_h$ each), $W_o$ ($h\,d_h \times d$),
# two RMSNorm weight vectors, a router $W_g$ ($d \times E$, only when $E > 1$) and $E$ SwiGLU
# experts. Outside the layers: the token embedding ($V \times d$), a final RMSNorm, and an LM
# head ($d \times V$) unless the embeddings are tied. Return `[total, active]`, where a token
# uses only `experts_per_token` of each layer's experts (and everything else).

# %%
def moe_param_counts(cfg):
    """[total, active] parameters of the MoE decoder described by dict cfg."""
    ### BEGIN SOLUTION
    d, L, E, k = cfg["d_model"], cfg["n_layers"], cfg["n_experts"], cfg["experts_per_token"]
    d_head = d // cfg["n_heads"]
    attention = 2 * d * cfg["n_heads"] * d_head + 2 * d * cfg["n_kv_heads"] * d_head
    router = d * E if E > 1 else 0
    expert = 3 * d * cfg["d_ff"]
    shared_per_layer = attention + router + 2 * d
    outside = cfg["vocab_size"] * d * (1 if cfg["tied_embeddings"] else 2) + d
    total = L * (shared_per_layer + E * expert) + outside
    active = L * (shared_per_layer + k * expert) + outside
    return [total, active]
    ### END SOLUTION


# %%
def _config(name):
    m = lp.get_model(name)
    return {f: getattr(m, f) for f in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff",
                                       "vocab_size", "n_experts", "experts_per_token",
                                       "tied_embeddings")}


def _library_counts(cfg):
    m = lp.ModelConfig(name="q1", **cfg)
    return [m.param_count(), m.active_param_count()]


_TRAINED_MOE = dict(n_layers=4, d_model=256, n_heads=4, n_kv_heads=4, d_ff=344, vocab_size=104,
                    n_experts=4, experts_per_token=2, tied_embeddings=False)
_TOP1 = dict(n_layers=24, d_model=2048, n_heads=16, n_kv_heads=4, d_ff=5632, vocab_size=50_000,
             n_experts=16, experts_per_token=1, tied_embeddings=True)

question("moe_param_counts", points=3,
         visible=[(_config("mixtral-8x7b"),)],
         hidden=[case(_TRAINED_MOE, why="the course's trained MoE: 4 experts, 2 per token"),
                 case(_TOP1, why="top-1 routing over 16 experts, tied embeddings, GQA"),
                 case(_config("llama-2-7b"), why="a dense model (one expert): no router"),
                 case(_config("llama-3-8b"), why="a dense GQA model with a large vocabulary"),
                 case({**_TRAINED_MOE, "n_experts": 64, "experts_per_token": 8},
                      why="64 experts, 8 per token")],
         reference=_library_counts,
         forbid=["llmperf.ModelConfig.param_count", "llmperf.ModelConfig.active_param_count",
                 "llmperf.ModelConfig.param_breakdown", "llmperf.ModelConfig.layer_params"],
         on_forbidden="fail")

# %% [markdown]
# ## Question 2: experts a batch touches (1 point)
#
# Under uniform routing each token picks `k` distinct experts of `n_experts`, independently of
# the other tokens. Return the expected number of distinct experts that `batch` tokens touch in
# one layer.

# %%
def expected_experts_touched(batch, n_experts, k):
    """Expected number of distinct experts a batch of `batch` tokens touches in one layer."""
    ### BEGIN SOLUTION
    return n_experts * (1 - (1 - k / n_experts) ** batch)
    ### END SOLUTION


# %%
question("expected_experts_touched", points=1,
         visible=[(1, 8, 2), (4, 8, 2)],
         hidden=[case(8, 8, 2, why="as many tokens as experts"),
                 case(1, 64, 8, why="one token: exactly its k experts"),
                 case(3, 4, 2, why="3 tokens choosing 2 of 4 experts"),
                 case(100, 16, 1, why="100 tokens with top-1 routing"),
                 case(2, 128, 1, why="2 tokens, top-1 of 128 experts"),
                 case(1000, 8, 2, why="1,000 tokens: every expert, to within rounding")],
         reference=lambda b, e, k: lp.experts_touched(b, e, k),
         forbid=["llmperf.experts_touched"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: expert bytes a decode step reads (2 points)
#
# One decode step of `batch` sequences through MoE model `model_name`, weights in `dtype`.
# Return the bytes of expert weights the step reads over all layers, with the expected number
# of experts touched per layer under uniform routing (each touched SwiGLU expert is read once,
# whatever the number of its tokens).

# %%
def expert_bytes_per_step(model_name, batch, dtype):
    """Bytes of expert weights one decode step of `batch` tokens reads, over all layers."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    touched = expected_experts_touched(batch, m.n_experts, m.experts_per_token)
    return m.n_layers * touched * 3 * m.d_model * m.d_ff * lp.bytes_per_element(dtype)
    ### END SOLUTION


# %%
def _library_expert_bytes(name, batch, dtype):
    m = lp.get_model(name)
    touched = lp.experts_touched(batch, m.n_experts, m.experts_per_token)
    return m.n_layers * touched * m.expert_params() * lp.bytes_per_element(dtype)


question("expert_bytes_per_step", points=2,
         visible=[("mixtral-8x7b", 1, "fp16")],
         hidden=[case("mixtral-8x7b", 4, "fp16", why="4 sequences in fp16"),
                 case("mixtral-8x7b", 64, "int8", why="64 sequences in int8"),
                 case("mixtral-8x7b", 2, "fp32", why="2 sequences in fp32"),
                 case("mixtral-8x7b", 16, "int4", why="16 sequences in int4: half a byte a weight")],
         reference=_library_expert_bytes,
         forbid=["llmperf.experts_touched", "llmperf.step_costs"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: tokens per step and speedup (2 points)
#
# Each drafted token is accepted with probability `alpha` (0 <= alpha <= 1), independently.
# Return `[tokens_per_step, speedup]`: the expected tokens one target step emits with `gamma`
# drafts, and the speedup over plain decoding when a draft step costs `cost_ratio` target steps
# and the verification costs one. Mind `alpha = 1`.

# %%
def tokens_and_speedup(alpha, gamma, cost_ratio):
    """[expected tokens per target step, speedup over plain decoding]."""
    ### BEGIN SOLUTION
    tokens = gamma + 1 if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
    return [tokens, tokens / (gamma * cost_ratio + 1)]
    ### END SOLUTION


# %%
def _library_tokens_and_speedup(alpha, gamma, cost_ratio):
    from llmperf.analytic.speculative import expected_tokens_per_step, speculative_speedup

    return [expected_tokens_per_step(alpha, gamma), speculative_speedup(alpha, gamma, cost_ratio)]


question("tokens_and_speedup", points=2,
         visible=[(0.8, 4, 0.1)],
         hidden=[case(0.0, 3, 0.05, why="alpha 0: every draft rejected"),
                 case(1.0, 5, 0.0, why="alpha 1 and free drafts: every draft kept"),
                 case(0.6, 1, 0.5, why="one costly draft"),
                 case(0.9, 8, 0.02, why="8 cheap drafts at alpha 0.9"),
                 case(0.95, 12, 0.3, why="12 costly drafts at alpha 0.95")],
         reference=_library_tokens_and_speedup, rel=1e-9, forbid=["llmperf.analytic.speculative"], on_forbidden="fail")

# %% [markdown]
# ## Question 5: the best number of drafts (2 points)
#
# Return the `gamma` in 1..`max_gamma` with the largest speedup of question 4 (the smallest
# such gamma on an exact tie), or 0 when no gamma in that range gives a speedup above 1.

# %%
def best_number_of_drafts(alpha, cost_ratio, max_gamma):
    """argmax over gamma of the speedup, or 0 when speculation never pays."""
    ### BEGIN SOLUTION
    best, best_speedup = 0, 1.0
    for gamma in range(1, max_gamma + 1):
        s = tokens_and_speedup(alpha, gamma, cost_ratio)[1]
        if s > best_speedup:
            best, best_speedup = gamma, s
    return best
    ### END SOLUTION


# %%
def _library_best(alpha, cost_ratio, max_gamma):
    from llmperf.analytic.speculative import best_gamma

    return best_gamma(alpha, cost_ratio, max_gamma)


question("best_number_of_drafts", points=2,
         visible=[(0.8, 0.05, 32)],
         hidden=[case(0.6, 0.05, 32, why="alpha 0.6, cheap drafts"),
                 case(0.9, 0.2, 32, why="alpha 0.9, drafts at a fifth of a target step"),
                 case(0.3, 0.4, 32, why="low acceptance and costly drafts"),
                 case(0.7, 0.1, 32, why="alpha 0.7, drafts at a tenth of a target step"),
                 case(0.99, 0.001, 10, why="near-certain acceptance, nearly free drafts, at most 10"),
                 case(0.5, 0.5, 16, why="alpha 0.5, drafts at half a target step")],
         reference=_library_best, forbid=["llmperf.analytic.speculative"], on_forbidden="fail")

# %% [markdown]
# ## Question 6: the accept/reject step (4 points)
#
# Write speculative sampling's verification on plain lists. `p` holds gamma + 1 target
# distributions (lists of V probabilities), `q` the gamma draft distributions, `drafts` the
# gamma drafted token ids; randomness comes in as numbers so that the grader can check every
# branch: `u` holds gamma uniform numbers in [0, 1), one per draft, and `v` one more.
#
# 1. For i = 0, 1, ...: keep `drafts[i]` when `u[i] * q[i][x] < p[i][x]` (x = `drafts[i]`),
#    which happens with probability min(1, p/q).
# 2. At the first draft not kept, emit one token drawn from r = max(0, p[i] - q[i]) (element by
#    element), and stop. If r sums to 0, draw from p[i] instead.
# 3. If all gamma drafts were kept, emit one token drawn from p[gamma].
#
# "Draw from" a list of non-negative weights w with sum W means: return the smallest index j
# with w[0] + ... + w[j] > v * W (inverse transform sampling with the number `v`). Return the
# list of emitted tokens: the kept drafts, then the drawn one.

# %%
def accept_reject(p, q, drafts, u, v):
    """Tokens one speculative step emits, with the given uniform numbers."""
    ### BEGIN SOLUTION
    def draw(weights):
        total, running = sum(weights), 0.0
        for j, w in enumerate(weights):
            running += w
            if running > v * total:
                return j
        return max(j for j, w in enumerate(weights) if w > 0)

    out = []
    for i, x in enumerate(drafts):
        if u[i] * q[i][x] < p[i][x]:
            out.append(x)
            continue
        residual = [max(0.0, a - b) for a, b in zip(p[i], q[i])]
        return out + [draw(residual if sum(residual) > 0 else p[i])]
    return out + [draw(p[len(drafts)])]
    ### END SOLUTION


# %%
def _reference_accept_reject(p, q, drafts, u, v):
    import torch

    p, q = torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)
    x = torch.tensor(drafts)
    rows = torch.arange(len(drafts))
    rejected = (torch.tensor(u, dtype=torch.float64) * q[rows, x] >= p[rows, x]).nonzero()
    n = int(rejected[0]) if len(rejected) else len(drafts)
    weights = p[n] if n == len(drafts) else (p[n] - q[n]).clamp(min=0)
    weights = weights if float(weights.sum()) > 0 else p[n]
    index = int((weights.cumsum(0) > v * weights.sum()).nonzero()[0])
    return drafts[:n] + [index]


_P = [[0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]
_Q = [[0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]]

question("accept_reject", points=4,
         visible=[(_P, _Q, [1, 3], [0.5, 0.2], 0.3),     # both kept, then a draw from p[2]
                  (_P, _Q, [0, 1], [0.9, 0.0], 0.5)],    # 0.9 * 0.4 >= 0.1: rejected at once
         hidden=[case(_P, _Q, [1, 3], [0.5, 0.5], 0.99,
                      why="the second draft rejected: a draw from the residual p[1] - q[1]"),
                 case(_P, _Q, [2, 2], [0.999, 0.0], 0.0,
                      why="p = q at the drafted token: kept even with u near 1"),
                 case(_P, _Q, [0, 0], [0.2, 0.9], 0.7,
                      why="a draft kept although p < q there, because u * q < p"),
                 case([[0.0, 1.0], [0.5, 0.5]], [[1.0, 0.0]], [0], [0.0], 0.2,
                      why="a draft the target gives probability 0: rejected even at u = 0"),
                 case([[0.3, 0.7], [0.5, 0.5]], [[0.3, 0.7]], [1], [0.99], 0.4,
                      why="equal p and q: the draft is kept"),
                 case([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [1.0, 0.0, 0.0]],
                      [[0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]], [2, 2, 0],
                      [0.1, 0.4, 0.8], 0.55, why="three drafts over three tokens")],
         reference=_reference_accept_reject,
         forbid=["llmperf.measured.speculative.verify"], on_forbidden="fail")
