# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises 3: state and dependencies
#
# These questions follow chapter 3. Some ask for a formula turned into a short
# function, some for a small piece of an inference engine: writing keys and values
# into a preallocated cache, and one decode step of attention that reads it. Write
# each answer where the cell says `raise NotImplementedError(...)`, run the cell,
# then run the check cell below it: it calls your function on a few inputs and
# prints PASS or FAIL with the expected answer and what you returned. The grader
# runs the same checks plus hidden ones on other inputs, so write the general
# formula rather than the numbers of the visible examples.
#
# Conventions, as in the chapter: a model has `n_layers` layers; each stores one
# key and one value vector per token per layer, of `n_kv_heads * d_head`
# elements each; bytes per element are given (2 for fp16). Return plain Python
# numbers, lists and dicts: a numpy array is not accepted as an answer (call
# `.tolist()` on it). You may use `llmperf` to look up models, but write the
# formulas yourself: the grader reports calls of the library functions that
# answer a question (a config's `kv_bytes_per_token()` and `kv_cache_bytes()`,
# `lp.max_batch_size`), and the checks that make one fail.

# %%
import math

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: KV bytes per token (1 point)
#
# Every token leaves, at every layer, one key and one value vector of
# `n_kv_heads * d_head` elements. Return the bytes one token adds to the cache,
# a whole number.
# (Llama 2 7B: 32 layers, 32 KV heads of 128, fp16.)

# %%
def kv_bytes_per_token(n_layers, n_kv_heads, d_head, bytes_per_element):
    """Bytes of K and V that one token stores across all layers."""
    ### BEGIN SOLUTION
    return 2 * n_layers * n_kv_heads * d_head * bytes_per_element
    ### END SOLUTION


# %%
def _per_token(layers, kv_heads, d_head, nbytes):
    m = lp.ModelConfig("q", n_layers=layers, d_model=kv_heads * d_head, n_heads=kv_heads,
                       n_kv_heads=kv_heads, d_head=d_head, d_ff=1, vocab_size=1)
    return m.kv_bytes_per_token("fp16") * nbytes / 2


question("kv_bytes_per_token", points=1,
         visible=[(32, 32, 128, 2)],
         hidden=[case(40, 40, 128, 2, why="Llama 2 13B: 40 layers of 40 KV heads"),
                 case(80, 8, 128, 2, why="Llama 2 70B: 8 KV heads (GQA)"),
                 case(32, 8, 128, 1, why="an 8-bit cache: 1 byte per element"),
                 case(12, 12, 64, 4, why="GPT-2's shape in fp32: 4 bytes per element")],
         reference=_per_token, forbid=["llmperf.ModelConfig.kv_bytes_per_token", "llmperf.ModelConfig.kv_cache_bytes"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: what grouped-query attention saves (2 points)
#
# Llama 3 8B keeps the shape of Llama 2 7B's attention (32 layers, 32 query heads
# of 128) but stores only 8 KV heads. For a model given by its catalog name,
# return a dict with the fp16 KV cache of one sequence at the model's full
# context `max_seq_len`, in GiB (`2**30` bytes), under `"gib"`, and how many
# times larger it would be if every query head had its own KV head, under
# `"without_gqa_factor"` (1.0 for a model without GQA).

# %%
def kv_cache_full_context(model_name):
    """{"gib": KV cache at max_seq_len in GiB, "without_gqa_factor": n_heads / n_kv_heads}."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    total = 2 * 2 * m.n_layers * m.n_kv_heads * m.d_head * m.max_seq_len
    return {"gib": total / 2**30, "without_gqa_factor": m.n_heads / m.n_kv_heads}
    ### END SOLUTION


# %%
def _full_context(name):
    m = lp.get_model(name)
    return {"gib": m.kv_cache_bytes(m.max_seq_len, 1, "fp16") / lp.GiB,
            "without_gqa_factor": m.n_heads / m.n_kv_heads}


question("kv_cache_full_context", points=2,
         visible=["llama-2-7b", "llama-3-8b"],
         hidden=[case("mixtral-8x7b", why="Mixtral 8x7B: GQA, at a context of 32,768"),
                 case("llama-2-70b", why="Llama 2 70B: 8 KV heads for 64 query heads"),
                 case("llama-2-13b", why="Llama 2 13B: no GQA, a factor of 1.0"),
                 case("gpt2", why="GPT-2: a small model without GQA")],
         reference=_full_context, forbid=["llmperf.ModelConfig.kv_bytes_per_token", "llmperf.ModelConfig.kv_cache_bytes"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: how much context fits (1 point)
#
# An accelerator of `capacity_bytes` holds the weights (`weight_bytes`) and the
# KV state of every token in flight, `kv_bytes_per_token` each. Return the largest
# number of tokens of context (over all requests together) that fit, and 0 when
# the weights alone do not. The A10's datasheet says 24 GB, and memory sizes are
# binary, so that is 24 GiB (`24 * 2**30` bytes): for Llama 2 7B, about 23,000
# tokens, between five and six sequences of 4096. With ECC on (the default),
# 1/16 of the A10's GDDR6 memory holds error-correcting codes and `nvidia-smi`
# reports 23,028 MiB, which leaves room for about 20,000 tokens, fewer than five
# sequences.

# %%
def max_context_tokens(capacity_bytes, weight_bytes, kv_bytes_per_token):
    """Tokens of KV state that fit beside the weights."""
    ### BEGIN SOLUTION
    free = capacity_bytes - weight_bytes
    if free <= 0:
        return 0
    return math.floor(free / kv_bytes_per_token)
    ### END SOLUTION


# %%
_llama = lp.get_model("llama-2-7b")
_fp16 = (_llama.weight_bytes("fp16"), _llama.kv_bytes_per_token("fp16"))
_a10 = lp.get_accelerator("A10")


def _tokens_that_fit(capacity, weights, per_token):
    return max(0, math.floor((capacity - weights) / per_token))


# The same count as the library's, for sequences of one token:
assert _tokens_that_fit(_a10.mem_capacity, *_fp16) == lp.max_batch_size(_llama, _a10, 1, ecc=False)
question("max_context_tokens", points=1,
         visible=[(_a10.mem_capacity, *_fp16),  # 24 GiB
                  (23_028 * lp.MiB, *_fp16)],  # what nvidia-smi reports on an A10
         hidden=[case(lp.get_accelerator("A100 SXM 80GB").mem_capacity,
                      lp.get_model("llama-3-8b").weight_bytes("fp16"),
                      lp.get_model("llama-3-8b").kv_bytes_per_token("fp16"),
                      why="Llama 3 8B on an A100 SXM 80GB: GQA, few KV bytes per token"),
                 case(lp.get_accelerator("T4").mem_capacity, *_fp16,
                      why="Llama 2 7B on a 16 GiB T4: little room beside the weights"),
                 case(24e9, _llama.weight_bytes("int8"), _llama.kv_bytes_per_token("fp16"),
                      why="a decimal 24 GB with int8 weights"),
                 case(12 * lp.GiB, *_fp16, why="12 GiB: the fp16 weights alone do not fit"),
                 case(1000, 200, 3, why="small numbers: whole tokens only, rounded down")],
         reference=_tokens_that_fit,
         forbid=["llmperf.max_batch_size", "llmperf.requests_that_fit"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: write the KV cache update (2 points)
#
# An inference engine allocates its cache once, for the longest sequence it will
# serve, and writes into it in place: `k_cache` and `v_cache` below are lists of
# `max_len` rows, each a list of `d` numbers (zeros where nothing is stored yet).
# A forward step brings `k_new` and `v_new`, lists of `T` rows (T = the prompt
# length for a prefill, 1 for a decode step), for positions `start`,
# `start + 1`, ..., `start + T - 1`. Write them into the caches in place, and
# return `{"k": k_cache, "v": v_cache, "length": L}` where `L` is the number of
# valid positions after the write (`start + T`). If the rows do not fit in
# `max_len`, raise `ValueError`. (You may use numpy inside, but return lists.)

# %%
def kv_cache_update(k_cache, v_cache, start, k_new, v_new):
    """Write rows k_new, v_new at positions start.. of the preallocated caches."""
    ### BEGIN SOLUTION
    end = start + len(k_new)
    if start < 0 or end > len(k_cache) or len(v_new) != len(k_new):
        raise ValueError(f"rows {start}..{end - 1} do not fit a cache of {len(k_cache)} positions")
    for i, (k_row, v_row) in enumerate(zip(k_new, v_new)):
        k_cache[start + i][:] = k_row
        v_cache[start + i][:] = v_row
    return {"k": k_cache, "v": v_cache, "length": end}
    ### END SOLUTION


# %%
def _zeros(rows, d):
    return [[0.0] * d for _ in range(rows)]


def _update(k_cache, v_cache, start, k_new, v_new):
    k = [list(r) for r in k_cache]
    v = [list(r) for r in v_cache]
    k[start:start + len(k_new)] = [list(r) for r in k_new]
    v[start:start + len(v_new)] = [list(r) for r in v_new]
    return {"k": k, "v": v, "length": start + len(k_new)}


question("kv_cache_update", points=2,
         visible=[(_zeros(4, 2), _zeros(4, 2), 0, [[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]),
                  ([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0], [0.0, 0.0]],
                   [[5.0, 6.0], [7.0, 8.0], [0.0, 0.0], [0.0, 0.0]], 2, [[9.0, 9.5]], [[-1.0, -2.0]])],
         hidden=[case(_zeros(3, 3), _zeros(3, 3), 0, [[1.0, 2.0, 3.0]] * 3, [[4.0, 5.0, 6.0]] * 3,
                      why="a prefill that fills the whole cache"),
                 case([[1.0], [2.0], [0.0]], [[3.0], [4.0], [0.0]], 2, [[7.0]], [[8.0]],
                      why="a decode step into the last free slot, rows of one number"),
                 case(_zeros(6, 2), _zeros(6, 2), 5, [[0.5, -0.5]], [[1.5, -1.5]],
                      why="a decode step at the last position of an empty cache")],
         reference=_update)

# %% [markdown]
# ## Question 5: one decode step of attention (2 points)
#
# A decode step has one new query `q` (a list of `d` numbers) and reads the
# first `length` rows of the caches from question 4 (the new token's own key and
# value are already written there). Return the attention output, a list of `d`
# numbers: the softmax over `s < length` of `q . k_s / sqrt(d)` as weights on the
# rows `v_s`. Rows at `length` and beyond are unused slots and must not count.

# %%
def decode_attention(q, k_cache, v_cache, length):
    """softmax(q K[:length]^T / sqrt(d)) V[:length] for one query."""
    ### BEGIN SOLUTION
    d = len(q)
    scores = [sum(qi * ki for qi, ki in zip(q, k_cache[s])) / math.sqrt(d) for s in range(length)]
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]
    total = sum(weights)
    return [sum(w * v_cache[s][j] for s, w in enumerate(weights)) / total for j in range(d)]
    ### END SOLUTION


# %%
def _decode_attention(q, k_cache, v_cache, length):
    import numpy as np

    k, v = np.array(k_cache[:length], float), np.array(v_cache[:length], float)
    s = k @ np.array(q, float) / np.sqrt(len(q))
    p = np.exp(s - s.max())
    return (p / p.sum() @ v).tolist()


question("decode_attention", points=2, rel=1e-6, abs=1e-9,
         visible=[([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], 2)],
         hidden=[case([0.5, -1.0, 2.0],
                      [[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0], [2.0, 2.0, -2.0], [0.0, 0.0, 0.0]],
                      [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [5.0, 5.0, 5.0]], 3,
                      why="length 3 of a 4-row cache: the unused last row must not count"),
                 case([3.0], [[1.0], [2.0]], [[10.0], [20.0]], 1,
                      why="length 1: all the weight on the only valid key"),
                 case([30.0, 30.0], [[10.0, 10.0], [-10.0, 10.0]], [[1.0, 1.0], [-1.0, 2.0]], 2,
                      why="two scores far apart: nearly all the weight on one value row")],
         reference=_decode_attention)

# %% [markdown]
# ## Question 6: the critical path (1 point)
#
# Count in *layer evaluations* the longest chain of work that must run one after
# another to prefill a prompt of `prompt_tokens` tokens in a model of `n_layers`
# layers and then produce `new_tokens` tokens (the prefill produces the first of
# them; each later one takes a decode step). Assume unlimited parallel hardware:
# work that does not depend on other work runs at the same time.

# %%
def critical_path_layers(n_layers, prompt_tokens, new_tokens):
    """Layer evaluations on the critical path of prefill + generation."""
    ### BEGIN SOLUTION
    # The prefill is n_layers deep whatever its length and yields token 1; each of
    # the new_tokens - 1 decode steps waits for the previous token and is n_layers deep.
    return n_layers * new_tokens
    ### END SOLUTION


# %%
question("critical_path_layers", points=1,
         visible=[(32, 2048, 1), (32, 2048, 512)],
         hidden=[case(80, 10, 100, why="80 layers, 100 new tokens"),
                 case(4, 1, 1, why="a one-token prompt and one new token: the prefill alone"),
                 case(12, 4096, 7, why="a long prompt: does its length add to the path?"),
                 case(40, 500, 250, why="40 layers, 250 new tokens")],
         reference=lambda layers, prompt, new: layers * new)

# %% [markdown]
# ## Question 7: tokens processed with and without a cache (2 points)
#
# Count the token positions pushed through the model to generate `new_tokens`
# tokens from a prompt of `prompt_tokens`. Without a cache, every step runs the
# whole sequence so far (the prompt plus the tokens generated before it); with a
# cache, the prefill runs the prompt and each later step one token. Return
# `{"recompute": ..., "cache": ...}`.

# %%
def tokens_processed(prompt_tokens, new_tokens):
    """Token positions processed without and with a KV cache."""
    ### BEGIN SOLUTION
    recompute = sum(prompt_tokens + i for i in range(new_tokens))
    cache = prompt_tokens + new_tokens - 1
    return {"recompute": recompute, "cache": cache}
    ### END SOLUTION


# %%
question("tokens_processed", points=2,
         visible=[(350, 150), (8, 1)],
         hidden=[case(1, 1000, why="a one-token prompt, 1,000 new tokens"),
                 case(4096, 2, why="a long prompt, two new tokens"),
                 case(100, 100, why="a prompt as long as the output"),
                 case(2048, 512, why="a prompt of 2,048 and 512 new tokens")],
         reference=lambda s, g: {"recompute": g * s + g * (g - 1) // 2, "cache": s + g - 1})

# %% [markdown]
# ## Question 8: recomputation against caching, in time (2 points)
#
# A rough time model for a GPU: a prefill of `n` tokens takes
# `max(n * t_flop, t_weights)` seconds, where `t_flop` is the compute time per
# token and `t_weights` the time to read all weights once; a decode step takes
# `t_weights` (it is memory bound). Generating `new_tokens` tokens from a prompt
# of `prompt_tokens` costs, without a cache, one prefill of each length
# `prompt_tokens + i` for `i = 0 .. new_tokens - 1`, and with a cache one prefill of
# the prompt plus `new_tokens - 1` decode steps. Return the ratio of the two times
# (recompute over cache).

# %%
def recompute_over_cache(prompt_tokens, new_tokens, t_flop, t_weights):
    """Time without a KV cache divided by time with one, under the max() model."""
    ### BEGIN SOLUTION
    def prefill(n):
        return max(n * t_flop, t_weights)

    recompute = sum(prefill(prompt_tokens + i) for i in range(new_tokens))
    cache = prefill(prompt_tokens) + (new_tokens - 1) * t_weights
    return recompute / cache
    ### END SOLUTION


# %%
def _a10_llama():
    """Llama 2 7B on an A10: compute seconds per token, seconds to read the fp16 weights."""
    m, a = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    return 2 * m.param_count() / a.peak("fp16"), m.weight_bytes("fp16") / a.mem_bandwidth


def _ratio(s, g, t_flop, t_w):
    re = sum(max((s + i) * t_flop, t_w) for i in range(g))
    return re / (max(s * t_flop, t_w) + (g - 1) * t_w)


question("recompute_over_cache", points=2,
         visible=[(350, 150, *_a10_llama())],
         hidden=[case(10, 100, *_a10_llama(),
                      why="a short prompt on an A10: every recomputing prefill is weight bound"),
                 case(2000, 500, *_a10_llama(),
                      why="a long prompt on an A10: every prefill is compute bound"),
                 case(1, 1, 1.0, 1.0, why="one token from a one-token prompt: a ratio of 1"),
                 case(4, 64, 1e-3, 2e-3,
                      why="prefills compute bound, decode steps at t_weights (made-up times)")],
         reference=_ratio)

# %% [markdown]
# *To think about (not graded).* Question 7 gives a ratio of token positions of
# about 128 for a prompt of 350 tokens and 150 new ones, question 8 a ratio of
# times of about 2 on an A10. Why are they so different, and which way would the
# time ratio move on an accelerator with more bandwidth per FLOP?
#
# ### BEGIN SOLUTION
# A cached decode step does the work of one token but pays for reading all the
# weights, about 22 ms on an A10; the recomputing prefill of 350 to 500 tokens
# does hundreds of tokens' work in only 1.7 to 2.4 times that, because up to
# about 200 tokens (the ridge point in tokens) ride along with the same weight
# read for free. More bandwidth per FLOP makes the decode step cheaper relative to
# compute, so the time ratio moves towards the token ratio.
# ### END SOLUTION
