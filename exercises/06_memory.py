# %% [markdown]
# # Exercises 6: KV cache management and quantization
#
# These questions follow chapter 6. Write each answer where the cell says
# `raise NotImplementedError(...)`, run the cell, then run the check cell below it: it
# calls your function on a few inputs and prints PASS or FAIL with the expected answer,
# what you returned and the tolerance. The grader runs the same checks plus hidden ones on
# other inputs, so write the general rule rather than the numbers of the visible examples.
#
# Write the arithmetic yourself: `llmperf.serving`'s block arithmetic (`blocks_needed`,
# `internal_fragmentation`, `paged_requests_that_fit`), `llmperf.analytic.quant.QuantScheme` and
# `llmperf.measured.quant.quantize` answer these questions for you and teach you nothing. The
# grader reports calls of `llmperf.serving.paging`, `llmperf.analytic.quant` and
# `llmperf.measured.quant` from your answers, and the checks that make one fail.

# %%
import math

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: blocks and internal fragmentation (2 points)
#
# A paged KV cache stores a request's tokens in blocks of `block_size` tokens, taking a new
# block only when the last one is full. Return `[blocks, empty_slots]` for a request that
# holds `tokens` tokens: the blocks it takes, and the slots of those blocks that hold no
# token (its internal fragmentation), both ints. A request with no tokens holds no block.

# %%
def blocks_and_waste(tokens, block_size):
    """[blocks taken, empty slots in them] for a request holding `tokens` tokens."""
    ### BEGIN SOLUTION
    blocks = math.ceil(tokens / block_size)
    return [blocks, blocks * block_size - tokens]
    ### END SOLUTION


# %%
from llmperf import serving as _sv

question("blocks_and_waste", points=2,
         visible=[(1000, 16)],
         hidden=[case(1000, 32, why="blocks of 32"),
                 case(16, 16, why="exactly one full block"),
                 case(17, 16, why="one token past a full block"),
                 case(1, 16, why="a single token"),
                 case(0, 8, why="no tokens: no block"),
                 case(4096, 256, why="large blocks, a whole number of them"),
                 case(161, 1, why="blocks of one token")],
         reference=lambda n, s: [_sv.blocks_needed(n, s), _sv.internal_fragmentation(n, s)],
         forbid=["llmperf.serving.paging"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: requests that fit, reserved and paged (3 points)
#
# A server has `capacity_tokens` KV slots. Requests wait in a queue, in the order of the
# list `lengths`, each the number of tokens it will hold when it finishes (every one at
# most `reserve_tokens`). The server admits them first come first served and stops at the
# first that does not fit. Return `[reserved, paged]`, two ints: how many are admitted
# together
#
# - when each reserves `reserve_tokens` slots, and
# - when the slots are cut into `capacity_tokens // block_size` whole blocks and each
#   request takes the blocks its full length needs.

# %%
def requests_admitted(capacity_tokens, lengths, reserve_tokens, block_size):
    """[admitted under reservation, admitted under paging], FIFO, stopping at the first misfit."""
    ### BEGIN SOLUTION
    reserved = min(len(lengths), capacity_tokens // reserve_tokens)
    free, paged = capacity_tokens // block_size, 0
    for n in lengths:
        need = math.ceil(n / block_size)
        if need > free:
            break
        free -= need
        paged += 1
    return [reserved, paged]
    ### END SOLUTION


# %%
def _library_admitted(capacity_tokens, lengths, reserve_tokens, block_size):
    reserved = sum(1 for _ in lengths[:_sv.reserved_requests_that_fit(capacity_tokens,
                                                                      reserve_tokens)])
    blocks = _sv.BlockAllocator(capacity_tokens // block_size or None, block_size)
    paged = 0
    if capacity_tokens >= block_size:
        for i, n in enumerate(lengths):
            if not blocks.can_allocate(n):
                break
            blocks.allocate(i, n)
            paged += 1
    return [reserved, paged]


question("requests_admitted", points=3,
         visible=[(23_446, [500] * 60, 4096, 16)],
         hidden=[case(23_446, [161 + 338] * 100, 4096, 16,
                      why="100 requests of 499 tokens on an A10's KV memory"),
                 case(2048, [100, 300, 1900, 20], 2048, 16,
                      why="paging stops at a long request even though a short one follows"),
                 case(1000, [10] * 200, 100, 8, why="more requests waiting than either way admits"),
                 case(4096, [4096, 1], 4096, 256, why="a request as long as the whole memory"),
                 case(3000, [17, 33, 65, 129, 257, 513, 1025], 2048, 32,
                      why="lengths one past a power of two: most end one token into a block")],
         reference=_library_admitted, forbid=["llmperf.serving.paging"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: blocks of parallel samples (2 points)
#
# `samples` continuations of one prompt of `prompt_tokens` tokens, `output_tokens` each,
# blocks of `block_size`. Each sample caches its prompt and all its generated tokens but
# the last (that one is never fed back). Return `[shared, alone]`: the blocks held when the
# last tokens are cached,
#
# - `shared`: the prompt's full blocks are held once and shared; a partly filled last
#   prompt block is copied by each sample on its first write (copy on write), so from the
#   start of that block on every sample holds its own blocks (a sample that caches nothing
#   after its prompt writes nothing, and copies nothing);
# - `alone`: each sample holds its own copy of everything.

# %%
def parallel_blocks(prompt_tokens, output_tokens, samples, block_size):
    """[blocks with the prompt's full blocks shared, blocks with nothing shared]."""
    ### BEGIN SOLUTION
    cached = prompt_tokens + output_tokens - 1
    alone = samples * math.ceil(cached / block_size)
    if samples == 1 or output_tokens == 1:  # nobody writes after the prompt: nothing copied
        return [math.ceil(cached / block_size) if samples > 1 else alone, alone]
    full = prompt_tokens // block_size
    own = math.ceil((cached - full * block_size) / block_size)
    return [full + samples * own, alone]
    ### END SOLUTION


# %%
question("parallel_blocks", points=2,
         visible=[(100, 50, 4, 16)],
         hidden=[case(161, 338, 8, 16, why="8 samples of 338 tokens after a prompt of 161"),
                 case(96, 50, 4, 16, why="a prompt of whole blocks: nothing to copy"),
                 case(19, 10, 4, 4, why="blocks of 4 tokens"),
                 case(30, 1, 3, 16, why="one output token: no sample writes after the prompt"),
                 case(7, 1, 5, 16, why="a prompt shorter than a block, one output token"),
                 case(1000, 200, 2, 32, why="two samples of 200 after a long prompt"),
                 case(20, 20, 1, 16, why="a single sample: nothing to share")],
         reference=lambda p, g, k, s: list(_sv.shared_sampling_blocks(p, g, k, s)),
         forbid=["llmperf.serving.paging"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: the scale and error of quantizing a small vector (2 points)
#
# Symmetric quantization with `bits` bits (8 or 4) keeps one scale for a group of
# weights, $s = \max_i |w_i| / q_{\max}$ with $q_{\max} = 2^{b-1} - 1$, stores
# $q_i = \operatorname{round}(w_i / s)$ and gives back $s\,q_i$. Return `[scale, error]`
# for the list `values` quantized as one group: the scale, and the largest
# $|w_i - s\,q_i|$ over the list. (Python's `round` rounds to the nearest integer; no
# value given lies halfway between two codes.)

# %%
def scale_and_error(values, bits):
    """[scale, largest rounding error] for one group of weights."""
    ### BEGIN SOLUTION
    s = max(abs(w) for w in values) / (2 ** (bits - 1) - 1)
    return [s, max(abs(w - s * round(w / s)) for w in values)]
    ### END SOLUTION


# %%
def _library_scale_and_error(values, bits):
    import torch

    from llmperf.measured.quant import quantize

    w = torch.tensor([values], dtype=torch.float64)
    q = quantize(w, bits)
    return [float(q.scales[0, 0]), float((w - q.dequantize()).abs().max())]


question("scale_and_error", points=2,
         visible=[([0.12, -0.5, 0.31, 0.02, -0.07, 0.44, -0.29, 0.18], 8)],
         hidden=[case([0.12, -0.5, 0.31, 0.02, -0.07, 0.44, -0.29, 0.18], 4,
                      why="the example's weights in 4 bits"),
                 case([0.9, -0.3, 0.05, 0.6], 4, why="four weights in 4 bits"),
                 case([0.025, -0.0895, -0.0388, 0.0037, 0.0737, 0.0002, -0.083, 0.0157], 8,
                      why="small weights (all below 0.1) in 8 bits"),
                 case([-0.0599, 0.0613, -0.0128, 0.0891, -0.0065, -0.0513, -0.0735, -0.018], 4,
                      why="small weights in 4 bits"),
                 case([1.5], 8, why="a single weight: it sets the scale")],
         reference=_library_scale_and_error, rel=1e-5, abs=1e-7, forbid=["llmperf.analytic.quant", "llmperf.measured.quant"], on_forbidden="fail")

# %% [markdown]
# ## Question 5: int4 bytes with group scales (2 points)
#
# A weight matrix of `rows` output rows and `cols` inputs is stored in int4 (two codes per
# byte) with one scale of type `scale_dtype` (`lp.bytes_per_element` gives its bytes) per
# group of `group_size` consecutive weights of a row. When `cols` is not a multiple of
# `group_size`, each row is padded with zeros to a whole number of groups, and the padding
# is stored like any other code. Return the bytes of the matrix, codes plus scales, as a
# number.

# %%
def int4_matrix_bytes(rows, cols, group_size, scale_dtype):
    """Bytes of a (rows, cols) int4 matrix with one scale per group of a row."""
    ### BEGIN SOLUTION
    groups = math.ceil(cols / group_size)
    codes = rows * groups * group_size / 2
    return codes + rows * groups * lp.bytes_per_element(scale_dtype)
    ### END SOLUTION


# %%
from llmperf.analytic.quant import QuantScheme as _QuantScheme

question("int4_matrix_bytes", points=2,
         visible=[(4096, 4096, 128, "fp16")],
         hidden=[case(11008, 4096, 128, "bf16", why="bf16 scales"),
                 case(4096, 11008, 32, "fp16", why="groups of 32"),
                 case(256, 688, 64, "fp32", why="688 inputs: each row's last group is padded"),
                 case(3, 40, 32, "bf16", why="3 rows of 40: padding in every row"),
                 case(1, 32, 32, "fp32", why="a single group"),
                 case(14336, 4096, 256, "fp16", why="groups of 256")],
         reference=lambda r, c, g, d: _QuantScheme(4, g, d).matrix_bytes(r, c), forbid=["llmperf.analytic.quant", "llmperf.measured.quant"], on_forbidden="fail")

# %% [markdown]
# ## Question 6: a quantize/dequantize pair (3 points)
#
# Now the whole scheme, for one row of weights cut into groups: `values` is a list whose
# length is a multiple of `group_size`; group $k$ holds `values[k * group_size:(k + 1) *
# group_size]` and has its own scale. Return `[codes, back]`: the integer codes of all the
# values in order (`int`s in $[-q_{\max}, q_{\max}]$), and the values they give back,
# $s_k q_i$. A group of zeros has scale 0 and codes 0. Check your answer: every value of
# `back` is within half its group's scale of the original.

# %%
def quantize_dequantize(values, bits, group_size):
    """[codes, dequantized values] of symmetric per-group quantization of one row."""
    ### BEGIN SOLUTION
    top = 2 ** (bits - 1) - 1
    codes, back = [], []
    for start in range(0, len(values), group_size):
        group = values[start:start + group_size]
        s = max(abs(w) for w in group) / top
        q = [round(w / s) if s > 0 else 0 for w in group]
        codes += q
        back += [s * c for c in q]
    return [codes, back]
    ### END SOLUTION


# %%
def _library_pair(values, bits, group_size):
    import torch

    from llmperf.measured.quant import quantize

    q = quantize(torch.tensor([values], dtype=torch.float64), bits, group_size)
    return [q.codes()[0].tolist(), q.dequantize()[0].tolist()]


_ROW16 = [0.025, -0.0718, 0.0252, -0.0375, 0.0748, 0.0496, 0.0183, -0.0511,
          0.0275, 0.0184, -0.0274, -0.0311, 0.0636, -0.02, 0.0222, 0.0695]
_ROW12 = [-0.0599, 0.0613, -0.0128, 0.0891, -0.0065, -0.0513, -0.0735, -0.018,
          0.0223, 0.0595, 0.0133, -0.0369]

question("quantize_dequantize", points=3,
         visible=[([0.9, -0.3, 0.05, 0.6], 4, 4)],
         hidden=[case(_ROW16, 4, 4, why="16 weights in 4 groups of 4, 4 bits"),
                 case(_ROW16, 8, 8, why="two groups of 8, 8 bits"),
                 case(_ROW16, 4, 16, why="one group of 16"),
                 case(_ROW12, 4, 3, why="groups of 3"),
                 case([0.0, 0.0, 0.5, -0.3], 8, 2, why="a group of zeros: scale 0, codes 0"),
                 case([2.0, -1.0, 0.5, 7.0, 0.1, -3.5], 4, 1, why="groups of a single weight")],
         reference=_library_pair, rel=1e-5, abs=1e-7, forbid=["llmperf.analytic.quant", "llmperf.measured.quant"], on_forbidden="fail")
