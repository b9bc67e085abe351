# %% [markdown]
# # Exercises 7: fusion and FlashAttention
#
# These questions follow chapter 7. They ask what fusing a chain of element-wise
# operators saves, which edges of an operator graph may disappear into one kernel,
# how the online softmax folds one block of scores into a running state (and that
# folding block after block gives the exact softmax), how many off-chip accesses
# standard and tiled attention make, and how many key splits a decode step needs to
# fill a GPU. Write each answer where the cell says `raise NotImplementedError(...)`,
# run the cell, then run the check cell below it: it calls your function on a few
# inputs and prints PASS or FAIL with the expected answer, what you returned and the
# tolerance. The grader runs the same checks plus hidden ones on other inputs, so
# write the general rule rather than the numbers of the visible examples.
#
# Conventions, as in the chapter: a *pass* is one read or one write of a tensor of
# the chain's size; bytes per element come from `lp.bytes_per_element(dtype)` (fp16:
# 2). You may look things up in `llmperf`: models and accelerators (`lp.get_model`,
# `lp.get_accelerator`, a config's `n_layers`, `d_model`, `d_ff`, `n_heads`,
# `q_dim`, `kv_dim`) and the chains' kernels (`llmperf.analytic.fusion.CHAINS[name].kernels`,
# each with `reads` and `writes` in passes, and a chain's `fused_reads`,
# `fused_writes` and `per_layer`). Write the arithmetic yourself: `chain_cost`,
# `chain_costs`, the `unfused_passes`/`fused_passes` properties, the attention
# access counts of `llmperf.analytic.fusion` and `llmperf.measured.kernels.online_softmax_update`
# answer these questions for you and teach you nothing. The grader reports calls of them from
# your answers, and the checks that make one fail.

# %%
import math

import llmperf as lp
from llmperf.analytic.fusion import CHAINS
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: the bytes one fused chain saves (2 points)
#
# A chain of element-wise operators runs over `elements` values of type `dtype`.
# Eagerly, each of its kernels reads and writes whole tensors of that size
# (`CHAINS[name].kernels`: a kernel's `reads` and `writes` count passes, and may be
# fractions, as the rotary embedding's negation of half a tensor). Fused, one kernel
# makes `fused_reads + fused_writes` passes. Return the bytes fusion saves, for one
# run of the chain. (A norm's weight vector is read by both versions: leave it out.)

# %%
def chain_bytes_saved(name, elements, dtype):
    """Bytes saved by running chain `name` as one kernel instead of its eager kernels."""
    ### BEGIN SOLUTION
    chain = CHAINS[name]
    eager = sum(k.reads + k.writes for k in chain.kernels)
    fused = chain.fused_reads + chain.fused_writes
    return (eager - fused) * elements * lp.bytes_per_element(dtype)
    ### END SOLUTION


# %%
from llmperf.analytic import fusion as _fu

question("chain_bytes_saved", points=2,
         visible=[("rotary", 2048 * 8192, "fp16")],
         hidden=[case("residual_norm", 2048 * 4096, "fp16", why="the residual add and norm chain"),
                 case("swiglu_gate", 11008, "fp32", why="the SwiGLU gate in fp32"),
                 case("masked_softmax", 32 * 4096 * 4096, "fp16",
                      why="the masked softmax over 32 heads of 4,096 x 4,096 scores"),
                 case("rotary", 1, "int8", why="one int8 element: fractional passes count")],
         reference=lambda name, n, dtype: _fu.chain_cost(name, n, dtype).saved_bytes,
         forbid=["llmperf.analytic.fusion.chain_cost", "llmperf.analytic.fusion.chain_costs",
                 "llmperf.analytic.fusion.chain_table",
                 "llmperf.analytic.fusion.Chain.unfused_passes",
                 "llmperf.analytic.fusion.Chain.fused_passes"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: every chain of a prefill (2 points)
#
# One prefill of `seq_len` tokens, batch 1, fp16, standard attention, through
# `model_name`. Per layer, the chains run over these many elements:
#
# | chain | runs per layer | elements per run |
# |---|---|---|
# | `residual_norm` | 2 | tokens x `d_model` |
# | `swiglu_gate` | 1 | tokens x `d_ff` |
# | `rotary` | 1 | tokens x (`q_dim` + `kv_dim`) |
# | `masked_softmax` | 1 | `n_heads` x tokens x tokens (every score, masked or not) |
#
# (the runs per layer are also each chain's `per_layer`). Return the bytes that
# fusing every chain saves over the whole step, all layers. All the models checked
# are dense. Your `chain_bytes_saved` may help.

# %%
def prefill_bytes_saved(model_name, seq_len):
    """Bytes fusion saves over the four chains of one fp16 prefill, all layers."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    t = seq_len
    elements = {"residual_norm": t * m.d_model, "swiglu_gate": t * m.d_ff,
                "rotary": t * (m.q_dim + m.kv_dim), "masked_softmax": m.n_heads * t * t}
    return sum(CHAINS[name].per_layer * m.n_layers * chain_bytes_saved(name, n, "fp16")
               for name, n in elements.items())
    ### END SOLUTION


# %%
question("prefill_bytes_saved", points=2,
         visible=[("llama-2-7b", 2048)],
         hidden=[case("llama-3-8b", 4096, why="Llama 3 8B: GQA narrows the keys the rotary chain turns"),
                 case("llama-2-70b", 512, why="Llama 2 70B, a prompt of 512"),
                 case("ref-small", 1, why="a single token through the small reference model"),
                 case("llama-2-13b", 100, why="Llama 2 13B, a prompt of 100")],
         reference=lambda m, n: sum(c.saved_bytes for c in _fu.chain_costs(m, "prefill", 1, n)),
         forbid=["llmperf.analytic.fusion.chain_cost", "llmperf.analytic.fusion.chain_costs",
                 "llmperf.analytic.fusion.chain_table",
                 "llmperf.analytic.fusion.Chain.unfused_passes",
                 "llmperf.analytic.fusion.Chain.fused_passes"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: which edges may fuse (2 points)
#
# An operator graph is given as a dict: each operator's name maps to the list of
# operators that read its output (each listed once; `"output"` means the tensor
# leaves the graph and must be written). `elementwise` lists the operators that are
# element-wise. Following the chapter, the edge from a producer to a consumer may
# fuse, so that the tensor between them never reaches memory, when
#
# 1. the consumer is element-wise (it needs only element i of the tensor to
#    produce its element i; an element-wise consumer of a matrix product runs in the
#    product's epilogue), and
# 2. the producer's output has no other consumer (otherwise it must be written
#    anyway).
#
# Return the fusable edges as a list of `[producer, consumer]` pairs, sorted.
# Example, the feed-forward half of a block: the residual sum `add1` feeds the
# norm and the second residual add, so neither of its edges can fuse.

# %%
def fusable_edges(consumers, elementwise):
    """Sorted [producer, consumer] pairs whose intermediate can stay on chip."""
    ### BEGIN SOLUTION
    return sorted([producer, readers[0]] for producer, readers in consumers.items()
                  if len(readers) == 1 and readers[0] in elementwise)
    ### END SOLUTION


# %%
_FFN = ({"add1": ["norm", "add2"], "norm": ["w13"], "w13": ["silu_mul"], "silu_mul": ["w2"],
         "w2": ["add2"], "add2": ["output"]},
        ["add1", "norm", "silu_mul", "add2"])
_ROPE = ({"mul_cos": ["add"], "neg": ["cat"], "cat": ["mul_sin"], "mul_sin": ["add"],
          "add": ["output"]},
         ["mul_cos", "neg", "cat", "mul_sin", "add"])
_SOFTMAX = ({"qk": ["mask"], "mask": ["scale"], "scale": ["softmax"], "softmax": ["pv", "output"],
             "pv": ["output"]},
            ["mask", "scale", "softmax"])
_MATMULS = ({"a": ["b"], "b": ["c"], "c": ["output"]}, [])
_WIDE = ({"x": ["e1", "e2", "e3"], "e1": ["e4"], "e2": ["e4"], "e3": ["m"], "e4": ["output"],
          "m": ["e5"], "e5": ["output"]},
         ["e1", "e2", "e3", "e4", "e5"])

question("fusable_edges", points=2,
         visible=[_FFN],
         hidden=[case(*_ROPE, why="the rotary embedding's graph"),
                 case(*_SOFTMAX, why="attention's softmax, whose output is also a graph output"),
                 case(*_MATMULS, why="matrix products only: none is element-wise"),
                 case(*_WIDE, why="a tensor with three readers, and two producers feeding one op")])

# %% [markdown]
# ## Question 4: the online-softmax update (3 points)
#
# One query row. Its running state after some blocks of keys is the max `row_max`
# of its scores so far, the sum `row_sum` of exp(score - row_max) over them, and the
# unnormalized output `acc` (a list of d numbers), the sum of exp(score - row_max)
# times each key's value vector. A new block brings `scores` (a list of B numbers)
# and `values` (B lists of d numbers). Return `[new_max, new_sum, new_acc]`:
#
# m' = max(m, max_j s_j),  l' = e^(m - m') l + sum_j e^(s_j - m'),
# acc' = e^(m - m') acc + sum_j e^(s_j - m') v_j.
#
# All numbers given are finite; `math.exp` or NumPy will do. (The checks compare
# with PyTorch's float32 arithmetic, hence the tolerance.)

# %%
def online_softmax_update(row_max, row_sum, acc, scores, values):
    """Fold one block of scores and their value rows into the running (max, sum, acc)."""
    ### BEGIN SOLUTION
    new_max = max(row_max, max(scores))
    rescale = math.exp(row_max - new_max)
    weights = [math.exp(s - new_max) for s in scores]
    new_sum = rescale * row_sum + sum(weights)
    new_acc = [rescale * a + sum(w * v[i] for w, v in zip(weights, values))
               for i, a in enumerate(acc)]
    return [new_max, new_sum, new_acc]
    ### END SOLUTION


# %%
def _library_update(row_max, row_sum, acc, scores, values):
    import torch

    from llmperf.measured.kernels import SoftmaxState
    from llmperf.measured.kernels import online_softmax_update as update

    def t(x):
        return torch.tensor(x, dtype=torch.float32)

    state = update(SoftmaxState(t(row_max), t(row_sum), t(acc)), t(scores), t(values))
    return [state.row_max.item(), state.row_sum.item(), state.acc.tolist()]


question("online_softmax_update", points=3,
         visible=[(1.0, 2.5, [0.5, -1.0], [0.0, 3.0], [[1.0, 2.0], [4.0, -2.0]])],
         hidden=[case(5.0, 1.25, [2.0, 1.0, 0.5], [1.0, -2.0, 4.5],
                      [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                      why="the running max stays: no block score is above it"),
                 case(-3.0, 4.0, [1.5], [-3.0, -3.0], [[2.0], [-2.0]],
                      why="block scores that tie with the running max"),
                 case(0.25, 1.0, [0.1, 0.2], [30.0], [[7.0, -7.0]],
                      why="one key far above the running max"),
                 case(100.0, 3.0, [1.0, 2.0, 3.0, 4.0], [99.0, 101.0, 100.5],
                      [[1.0, 1.0, 1.0, 1.0], [0.5, -0.5, 0.5, -0.5], [2.0, 0.0, -2.0, 1.0]],
                      why="scores around 100, one above the running max")],
         reference=_library_update, rel=1e-5, abs=1e-6, forbid=["llmperf.measured.kernels.online_softmax_update"], on_forbidden="fail")

# %% [markdown]
# ## Question 5: block by block equals the exact softmax (2 points)
#
# Now attend one query over all its keys, `block` keys at a time: start from the
# empty state (max `-math.inf`, sum 0, `acc` all zeros), fold in the scores and
# value rows of each block in order with your `online_softmax_update`, and return
# the output `acc / sum`, a list of d numbers. It must equal softmax(scores) @ values
# whatever the block size, even for scores so large that exp(score) overflows.

# %%
def blockwise_attention(scores, values, block):
    """softmax(scores) @ values, folding `block` keys at a time."""
    ### BEGIN SOLUTION
    row_max, row_sum, acc = -math.inf, 0.0, [0.0] * len(values[0])
    for j in range(0, len(scores), block):
        row_max, row_sum, acc = online_softmax_update(row_max, row_sum, acc, scores[j:j + block],
                                                      values[j:j + block])
    return [a / row_sum for a in acc]
    ### END SOLUTION


# %%
def _exact_attention(scores, values, block):
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    p = np.exp(s - s.max())
    return (p / p.sum() @ np.asarray(values, dtype=np.float64)).tolist()


_S = [0.3, -1.2, 2.0, 0.7, 2.0, -0.4, 1.1]
_V = [[1.0, 0.0], [0.0, 1.0], [2.0, -1.0], [-1.0, 3.0], [0.5, 0.5], [4.0, 2.0], [-2.0, 1.0]]
_BIG = [800.0, 799.0, 805.0, 790.0, 804.5]

question("blockwise_attention", points=2,
         visible=[(_S, _V, 3), (_S, _V, 7)],
         hidden=[case(_S, _V, 1, why="blocks of one key"),
                 case(_S, _V, 2, why="blocks of 2: the last block is shorter"),
                 case(_S, _V, 64, why="one block longer than the sequence"),
                 case(_BIG, _V[:5], 2, why="scores near 800: exp(score) overflows"),
                 case([-5.0, 9.0, 1.0, 9.0], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 1.0],
                                              [-4.0, 5.0, 0.0]], 3,
                      why="two keys tie for the max, in different blocks")],
         reference=_exact_attention, abs=1e-12, forbid=["llmperf.measured.kernels.online_softmax_update"], on_forbidden="fail")

# %% [markdown]
# ## Question 6: attention's off-chip accesses (2 points)
#
# One head, `seq_len` queries and keys of size `d_head`, fp16, no causal skipping.
# Return `[standard, tiled]`, the elements each algorithm reads and writes in
# off-chip memory:
#
# - standard: read Q and K, write and read S, write and read P, read V, write O;
# - tiled, queries in the outer loop, with `sram_bytes` of on-chip memory:
#   M = sram_bytes / 2 elements; a block each of Q, O, K and V fits on chip, and
#   the block held through the inner loop is the large one (as in FlashAttention's
#   Algorithm 1, where only the inner block is capped at d rows): blocks of
#   B_r = floor(M / 4d) queries, at most `seq_len`, and keys in blocks of
#   B_c = min(B_r, d). Q is read and O written once, K and V are read once per
#   block of B_r queries (the last block may be shorter).
#
# The `sram_bytes` given always hold at least one row each of Q, O, K and V.

# %%
def attention_accesses(seq_len, d_head, sram_bytes):
    """[standard, tiled] off-chip accesses in elements for one head, fp16."""
    ### BEGIN SOLUTION
    n, d = seq_len, d_head
    standard = 4 * n * n + 4 * n * d
    rows = min(math.floor(sram_bytes / 2 / (4 * d)), n)
    tiled = 2 * n * d + 2 * n * d * math.ceil(n / rows)
    return [standard, tiled]
    ### END SOLUTION


# %%
question("attention_accesses", points=2,
         visible=[(2048, 64, 64 * 1024)],
         hidden=[case(4096, 128, 100 * 1024, why="heads of 128 with 100 KiB on chip"),
                 case(4096, 64, 164 * 1024, why="an A100's 164 KiB"),
                 case(1000, 64, 16 * 1024, why="a small 16 KiB: many query blocks"),
                 case(1, 128, 1024, why="a single token"),
                 case(777, 80, 48 * 1024, why="sizes that divide nothing: a shorter last block"),
                 case(4096, 128, 192 * 1024, why="192 KiB, heads of 128"),
                 case(1024, 64, 192 * 1024, why="192 KiB, heads of 64: the last query block is short"),
                 case(300, 64, 164 * 1024, why="a query block would be longer than the sequence")],
         reference=lambda n, d, sram: [_fu.standard_attention_accesses(n, d),
                                       _fu.flash_attention_accesses(n, d, sram)],
         forbid=["llmperf.analytic.fusion.standard_attention_accesses",
                 "llmperf.analytic.fusion.flash_attention_accesses",
                 "llmperf.analytic.fusion.flash_attention_order"], on_forbidden="fail")

# %% [markdown]
# ## Question 7: split-K for decode (1 point)
#
# A fused decode-attention kernel gives each (sequence, query head) pair to one
# streaming multiprocessor (SM). Split-K cuts each sequence's keys into `splits`
# chunks, multiplying the pieces of work by `splits`. Return the fewest splits (at
# least 1) that give every one of `sms` SMs a piece, for a batch of `batch`
# sequences through `model_name` (use its `n_heads`).

# %%
def splits_needed(model_name, sms, batch):
    """Smallest splits >= 1 with batch x heads x splits >= sms."""
    ### BEGIN SOLUTION
    return max(1, math.ceil(sms / (batch * lp.get_model(model_name).n_heads)))
    ### END SOLUTION


# %%
question("splits_needed", points=1,
         visible=[("llama-2-7b", 72, 1)],
         hidden=[case("llama-2-7b", 72, 4, why="a batch of 4: do the pairs already fill the SMs?"),
                 case("llama-3-8b", 132, 1, why="an H100's 132 SMs, one sequence"),
                 case("llama-2-70b", 108, 2, why="an A100's 108 SMs, two sequences"),
                 case("ref-tiny", 72, 1, why="a tiny model of 4 heads: many splits"),
                 case("llama-2-13b", 80, 2, why="80 SMs, two sequences of 40 heads")],
         reference=lambda m, sms, b: _fu.splits_to_fill(m, sms, b),
         forbid=["llmperf.analytic.fusion.splits_to_fill",
                 "llmperf.analytic.fusion.decode_attention"], on_forbidden="fail")
