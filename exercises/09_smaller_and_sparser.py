# %% [markdown]
# # Exercises 9: smaller and sparser models
#
# These questions follow chapter 9. They ask how many parameters and bytes a model keeps
# after structured pruning, what FLOPs and bytes an oracle that skips inactive FFN neurons
# saves in one decode step (alone and in a batch), how to build a magnitude-pruning mask,
# and how many layers early exit computes under an exit profile, for one token and for a
# batch. Write each answer where the cell says `raise NotImplementedError(...)`, run the
# cell, then run the check cell below it: it calls your function on a few inputs and prints
# PASS or FAIL with the expected answer, what you returned and the tolerance. The grader
# runs the same checks plus hidden ones on other inputs, so write the general rule rather
# than the numbers of the visible examples.
#
# You may look things up in `llmperf`: a model's shape (`lp.get_model(name)` and its
# `n_layers`, `d_model`, `n_heads`, `n_kv_heads`, `d_head`, `d_ff`, `ffn_kind`,
# `ffn_matrices`, `param_count()`), and bytes per element (`lp.bytes_per_element(dtype)`).
# Write the arithmetic yourself: `llmperf.analytic.sparsity` (`pruned_size`, `sparse_ffn_cost`,
# `sparsity_savings`, `expected_layers`, `batch_expected_layers`) and
# `llmperf.measured.pruning.unstructured_mask` answer these questions for you and teach you nothing.
# The grader reports calls of `llmperf.analytic.sparsity` and `llmperf.measured.pruning` from your
# answers, and the checks that make one fail.

# %%

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: parameters and bytes after structured pruning (2 points)
#
# Structured pruning keeps `d_ff` FFN neurons and `n_heads` heads in every layer of
# `model_name`. Whenever `n_heads` is below the model's own, the model checked uses
# multi-head attention (`n_kv_heads == n_heads`), so removing a head removes its own key
# and value head too; when `n_heads` is the model's own, attention is unchanged. The head width `d_head` stays. A neuron is one row of each "in" matrix of the
# FFN (gate and up for SwiGLU, up for a two-matrix MLP) and one column of the down matrix; a
# head is `d_head` rows of each of W_q, W_k, W_v and `d_head` columns of W_o. Embeddings,
# norms and the LM head stay whole; the models checked have no biases. Return
# `[parameters, bytes]` of the pruned model, the bytes with every parameter stored in
# `dtype`. (`param_count()` of the unpruned model is a good start: subtract what is removed.)

# %%
def pruned_params_and_bytes(model_name, d_ff, n_heads, dtype):
    """[parameters, bytes in dtype] after keeping d_ff neurons and n_heads heads per layer."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    removed_ffn = m.ffn_matrices * m.d_model * (m.d_ff - d_ff)
    removed_heads = m.n_heads - n_heads
    removed_attention = 4 * m.d_model * m.d_head * removed_heads  # W_q, W_k, W_v rows; W_o cols
    params = m.param_count() - m.n_layers * (removed_ffn + removed_attention)
    return [params, params * lp.bytes_per_element(dtype)]
    ### END SOLUTION


# %%
from llmperf.analytic import sparsity as _sc


def _pruned(model_name, d_ff, n_heads, dtype):
    size = _sc.pruned_size(model_name, d_ff, n_heads, dtype)
    return [size.params_after, size.bytes_after]


question("pruned_params_and_bytes", points=2,
         visible=[("llama-2-7b", 5504, 32, "fp16")],
         hidden=[case("llama-2-7b", 11008, 24, "fp16", why="heads pruned, the FFN whole"),
                 case("llama-2-13b", 6912, 30, "int8", why="heads and neurons pruned, int8 bytes"),
                 case("llama-3-8b", 7168, 32, "fp16", why="a GQA model: half its FFN, every head kept"),
                 case("ref-tiny", 100, 4, "fp32", why="a tiny GQA model, every head kept, fp32"),
                 case("llama-2-70b", 14336, 64, "bf16", why="Llama 2 70B: half its FFN, bf16")],
         reference=_pruned, forbid=["llmperf.analytic.sparsity"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: what an oracle saves at a given activation sparsity (3 points)
#
# One decode step of `batch` tokens through `model_name` (a dense model), weights and
# activations in `dtype`. An oracle lets each token compute only its
# `a = round(d_ff * (1 - sparsity))` active FFN neurons. Count only the FFN's matrix
# products, in every layer. For each "in" matrix (gate and up of SwiGLU, or the up matrix of
# a two-matrix MLP), with `n` the neurons whose weights the step must read:
#
# - FLOPs: `2 * batch * d_model * a`;
# - bytes: `(batch * d_model + batch * a)` activations, plus `n * d_model` weights;
#
# and for the down matrix, FLOPs `2 * batch * a * d_model`, bytes
# `(batch * a + batch * d_model) + n * d_model` elements. Every element takes
# `lp.bytes_per_element(dtype)` bytes. The tokens' active sets are independent and uniform,
# so a batch reads `n = d_ff * (1 - (1 - a / d_ff) ** batch)` distinct neurons (at
# sparsity 0, `a = n = d_ff`: the dense FFN). Return `[flops_saved, bytes_saved]`, dense
# minus oracle, for the whole step.

# %%
def oracle_savings(model_name, sparsity, batch, dtype):
    """[FLOPs saved, bytes saved] by computing only the active FFN neurons in one step."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    b = lp.bytes_per_element(dtype)

    def ffn(a, n):
        flops = m.ffn_matrices * 2 * batch * m.d_model * a
        acts = m.ffn_matrices * (batch * m.d_model + batch * a)
        return [m.n_layers * flops, m.n_layers * (acts + m.ffn_matrices * n * m.d_model) * b]

    a = round(m.d_ff * (1 - sparsity))
    n = m.d_ff * (1 - (1 - a / m.d_ff) ** batch)
    dense, sparse = ffn(m.d_ff, m.d_ff), ffn(a, n)
    return [dense[0] - sparse[0], dense[1] - sparse[1]]
    ### END SOLUTION


# %%
def _savings(model_name, sparsity, batch, dtype):
    s = _sc.sparsity_savings(model_name, sparsity, batch, dtype)
    return [s.flops_saved, s.bytes_saved]


question("oracle_savings", points=3,
         visible=[("opt-13b", 0.85, 1, "fp16")],
         hidden=[case("opt-13b", 0.85, 32, "fp16", why="a batch of 32: the tokens' active sets add up"),
                 case("llama-2-7b", 0.5, 1, "fp16", why="a SwiGLU FFN: three matrices"),
                 case("ref-small", 0.9, 4, "fp32", why="the small reference model in fp32"),
                 case("opt-13b", 0.0, 8, "fp16", why="sparsity 0: nothing saved"),
                 case("llama-3-8b", 0.7, 16, "int8", why="Llama 3 8B, a batch of 16, int8")],
         reference=_savings, rel=1e-9, abs=1e-3, forbid=["llmperf.analytic.sparsity"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: a magnitude-pruning mask (3 points)
#
# `weight` is a matrix given as a list of rows (one row per output of a linear layer).
# Return a mask of the same shape, a list of rows of booleans, `True` for a weight kept,
# that removes from every row the `round(sparsity * columns)` weights of smallest absolute
# value (Python's `round`). When several weights of a row have the same absolute value, the
# one in the earlier column is removed first. Every row keeps the same number of weights.

# %%
def magnitude_mask(weight, sparsity):
    """Keep-mask removing the round(sparsity * columns) smallest |w| of every row."""
    ### BEGIN SOLUTION
    columns = len(weight[0])
    pruned = round(sparsity * columns)
    mask = []
    for row in weight:
        order = sorted(range(columns), key=lambda j: (abs(row[j]), j))
        removed = set(order[:pruned])
        mask.append([j not in removed for j in range(columns)])
    return mask
    ### END SOLUTION


# %%
def _mask(weight, sparsity):
    import torch

    from llmperf.measured.pruning import unstructured_mask

    return unstructured_mask(torch.tensor(weight, dtype=torch.float64).abs(), sparsity).tolist()


question("magnitude_mask", points=3,
         visible=[([[0.5, -2.0, 0.1, 1.0], [3.0, -0.2, 0.4, -0.3]], 0.5)],
         hidden=[case([[1.0, -1.0, 0.5, 2.0, -0.5, 3.0]], 0.5,
                      why="ties in absolute value: the earlier column goes first"),
                 case([[0.1, 0.2, 0.3], [-0.3, -0.2, -0.1]], 0.0, why="sparsity 0: nothing removed"),
                 case([[4.0, -3.0, 2.0, -1.0, 0.0]], 0.8, why="4 of 5 removed from one row"),
                 case([[0.7, -0.1, 0.9, 0.2], [0.0, 0.0, 1.0, -1.0], [5.0, 4.0, -6.0, 0.5]], 0.75,
                      why="three rows, each keeping one weight, with ties"),
                 case([[-2.5, 2.5, 1.5, -1.5, 0.5, -0.5, 3.5, -3.5]], 0.5,
                      why="pairs of equal magnitude and opposite sign")],
         forbid=["llmperf.measured.pruning"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: the layers early exit computes (2 points)
#
# A model has `L = len(exit_fractions)` layers; a token leaves after layer `l` (1 to `L`)
# with probability `exit_fractions[l - 1]` (they sum to 1). Return `[alone, in_batch]`: the
# expected layers one token computes, and the expected layers a batch of `batch` tokens
# computes when it runs every layer until its last token has left (tokens leave
# independently). Hint: the batch runs layer `l` unless every token left before it.

# %%
def layers_computed(exit_fractions, batch):
    """[expected layers of one token, expected layers of a batch of `batch` tokens]."""
    ### BEGIN SOLUTION
    alone = sum((i + 1) * p for i, p in enumerate(exit_fractions))
    in_batch, left_before = 0.0, 0.0
    for p in exit_fractions:
        in_batch += 1 - left_before ** batch
        left_before += p
    return [alone, in_batch]
    ### END SOLUTION


# %%
question("layers_computed", points=2,
         visible=[([0.3, 0.1, 0.1, 0.5], 8)],
         hidden=[case([0.3, 0.1, 0.1, 0.5], 1, why="a batch of one: both answers agree"),
                 case([0.0, 0.0, 0.0, 1.0], 16, why="no token exits early"),
                 case([1.0, 0.0, 0.0], 5, why="every token exits after the first layer"),
                 case([0.5, 0.25, 0.125, 0.125], 3, why="halving exit fractions, a batch of 3"),
                 case([0.9] + [0.0] * 30 + [0.1], 64,
                      why="32 layers, 10 % of tokens run all of them, a batch of 64")],
         reference=lambda p, b: [_sc.expected_layers(p), _sc.batch_expected_layers(p, b)],
         rel=1e-9, abs=1e-12, forbid=["llmperf.analytic.sparsity"], on_forbidden="fail")
