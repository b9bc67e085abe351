# %% [markdown]
# # Exercises 4: compute or memory bound?
#
# These questions follow chapter 4. Each asks for a short function (or one
# number) that turns datasheet figures and model shapes into the quantities the
# chapter uses to decide what limits an LLM's speed. Write each answer where the
# cell says `raise NotImplementedError(...)`, run the cell, then run the check
# cell below it: it calls your function on a few inputs and prints PASS or FAIL
# with the expected answer, what you returned and the tolerance. The grader runs
# the same checks plus hidden ones on other inputs, so write the general formula
# rather than the numbers of the visible examples.
#
# Conventions, as in the chapter: weights, activations and the KV cache are fp16
# (2 bytes per element); a multiply-add counts as 2 FLOPs; bandwidths are in
# bytes per second and peaks in FLOP per second. You may use `llmperf` to look up
# models and accelerators (`lp.get_model`, `lp.get_accelerator`, their fields and
# `peak("fp16")`), but write the formulas yourself: calling the library function
# that answers the question teaches you nothing. The grader reports such calls
# (`lp.matmul_cost`, `lp.attention_cost`, `lp.simple_latency`, `lp.max_batch_size`,
# ...), and the checks that make one fail.

# %%
import math

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: the ridge point (1 point)
#
# An accelerator's *ridge point* is the arithmetic intensity, in FLOP per byte,
# at which moving an operator's bytes takes exactly as long as doing its FLOPs.
# Below it an operator waits on memory; above it, on the arithmetic units.
# Write `ridge_point` from the two datasheet numbers. (For an A10: 125 TFLOP/s
# of fp16 and 600 GB/s.)

# %%
def ridge_point(peak_flops_per_s, bandwidth_bytes_per_s):
    """FLOP per byte at which compute time equals memory time."""
    ### BEGIN SOLUTION
    return peak_flops_per_s / bandwidth_bytes_per_s
    ### END SOLUTION


# %%
def _datasheet(name):
    acc = lp.get_accelerator(name)
    return (acc.peak("fp16"), acc.mem_bandwidth)


question("ridge_point", points=1,
         visible=[(125e12, 600e9)],
         hidden=[case(*_datasheet("H100 SXM"), why="an H100 SXM's datasheet"),
                 case(*_datasheet("T4"), why="a T4's datasheet"),
                 case(*_datasheet("A100 SXM 80GB"), why="an A100 SXM 80GB's datasheet")],
         reference=lambda peak, bw: lp.Accelerator("datasheet", {"fp16": peak}, bw, 1.0).ridge_point(),
         forbid=["llmperf.Accelerator.ridge_point"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: the intensity of a GEMM (2 points)
#
# A linear layer multiplies activations `X` of shape (n, k) by weights `W` of
# shape (k, m). Count its FLOPs, and the bytes it moves if it reads `X` and `W`
# once and writes the (n, m) result once, all in fp16. Return the ratio. Try
# n = 1 too: that is a decode step, one token at a time.

# %%
def gemm_intensity(n, k, m):
    """FLOP per byte of X (n, k) @ W (k, m) in fp16."""
    ### BEGIN SOLUTION
    flops = 2 * n * k * m
    moved_bytes = 2 * (n * k + k * m + n * m)
    return flops / moved_bytes
    ### END SOLUTION


# %%
question("gemm_intensity", points=2,
         visible=[(4096, 4096, 4096), (1, 4096, 4096)],
         hidden=[case(1, 4096, 11008, why="a decode step (n = 1) through an FFN matrix"),
                 case(8, 4096, 4096, why="a batch of 8 tokens"),
                 case(512, 4096, 11008, why="a prefill of 512 tokens through an FFN matrix"),
                 case(2048, 8192, 28672, why="2,048 tokens through Llama 2 70B's FFN matrix")],
         reference=lambda n, k, m: lp.matmul_cost(n, k, m, "fp16").intensity,
         forbid=["llmperf.matmul_cost"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: standard attention, one head (2 points)
#
# The standard algorithm computes `S = Q K^T`, writes `S` to memory, reads it back
# for `P = softmax(S)`, writes `P`, and reads it again for `O = P V`. For one head
# with N queries and N keys of dimension d, count FLOPs (the lecture charges 3 per
# element of the softmax) and bytes in fp16, step by step: each step reads its
# inputs from memory and writes its output. Return both in a dict
# `{"flops": ..., "bytes": ...}`.

# %%
def attention_cost_per_head(n, d):
    """FLOPs and fp16 bytes of standard attention for one head, N = n, head size d."""
    ### BEGIN SOLUTION
    flops = 2 * d * n * n + 3 * n * n + 2 * n * n * d
    step1 = 2 * (n * d + n * d + n * n)   # read Q and K, write S
    step2 = 2 * (n * n + n * n)           # read S, write P
    step3 = 2 * (n * n + n * d + n * d)   # read P and V, write O
    return {"flops": flops, "bytes": step1 + step2 + step3}
    ### END SOLUTION


# %%
def _attention(n, d):
    cost = lp.attention_cost(n, d, dtype="fp16")
    return {"flops": cost.flops, "bytes": cost.bytes}


question("attention_cost_per_head", points=2,
         visible=[(4096, 128)],
         hidden=[case(2048, 64, why="half the tokens, a head of 64"),
                 case(512, 128, why="a short sequence of 512"),
                 case(8192, 128, why="a long sequence: the N x N terms dominate"),
                 case(100, 96, why="sizes that are not powers of two")],
         reference=_attention, forbid=["llmperf.attention_cost"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: Llama 2's attention intensity (1 point)
#
# Set `llama2_attention_intensity` to the arithmetic intensity, in FLOP per byte,
# of standard attention for one Llama 2 head (d = 128) over N = 4096 tokens.
# Compare it with the A10's ridge point from question 1.

# %%
### BEGIN SOLUTION
llama2_attention_intensity = (attention_cost_per_head(4096, 128)["flops"]
                              / attention_cost_per_head(4096, 128)["bytes"])
### END SOLUTION

# %%
question("llama2_attention_intensity", points=1, rel=1e-3,
         reference=lambda: lp.attention_cost(4096, 128).intensity,
         forbid=["llmperf.attention_cost"], on_forbidden="fail")

# %% [markdown]
# *To think about (not graded).* Which terms make the intensity so low, and what
# would an implementation have to avoid doing to raise it?
#
# ### BEGIN SOLUTION
# The N x N matrices S and P are written to memory and read back: 8N^2 of the
# 8N^2 + 8Nd bytes. An implementation that keeps each block of S and P on chip
# (tiling with an online softmax, as FlashAttention does) moves only Q, K, V and O.
# ### END SOLUTION

# %% [markdown]
# ## Question 5: roofline time and the bound (2 points)
#
# Under the roofline model an operator takes the longer of its compute time
# (FLOPs over peak) and its memory time (bytes over bandwidth). Return a list
# `[seconds, bound]` where `bound` is `"compute"` if the compute time is the
# longer one and `"memory"` otherwise.

# %%
def roofline(flops, moved_bytes, peak_flops_per_s, bandwidth_bytes_per_s):
    """[lower bound on seconds, "compute" or "memory"]."""
    ### BEGIN SOLUTION
    compute_s = flops / peak_flops_per_s
    memory_s = moved_bytes / bandwidth_bytes_per_s
    return [max(compute_s, memory_s), "compute" if compute_s > memory_s else "memory"]
    ### END SOLUTION


# %%
def _roofline(flops, moved_bytes, peak, bw):
    acc = lp.Accelerator("datasheet", {"fp16": peak}, bw, 1.0)
    cost = lp.Cost(flops, moved_bytes)
    return [lp.roofline_time(cost, acc), lp.bound(cost, acc)]


def _op(cost, accelerator):
    return (cost.flops, cost.bytes) + _datasheet(accelerator)


question("roofline", points=2,
         visible=[_op(lp.matmul_cost(4096, 4096, 4096), "A10"),
                  _op(lp.matmul_cost(1, 4096, 4096), "A10")],
         hidden=[case(*_op(lp.attention_cost(4096, 128), "A10"),
                      why="standard attention (N 4,096, d 128) on an A10"),
                 case(*_op(lp.matmul_cost(256, 4096, 11008), "H100 SXM"),
                      why="a 256-token FFN matmul on an H100 SXM"),
                 case(*_op(lp.matmul_cost(64, 8192, 8192), "T4"),
                      why="a 64-token matmul of width 8,192 on a T4")],
         reference=_roofline,
         forbid=["llmperf.roofline_time", "llmperf.bound", "llmperf.compute_time",
                 "llmperf.memory_time"], on_forbidden="fail")

# %% [markdown]
# ## Question 6: the simple end-to-end model (2 points)
#
# The chapter's coarse model of one request: the prompt of S tokens is processed
# at the peak FLOP rate, about 2P FLOPs per token for P parameters, and yields the
# first of the G generated tokens; each of the G - 1 decode steps that follow
# reads all 2P bytes of fp16 weights once:
#
# time = S * 2P / peak + (G - 1) * 2P / bandwidth.
#
# (The lecture writes G * 2P / bandwidth, rounding the first token's step in;
# `lp.simple_latency` charges G - 1 steps, and so does this question.)
#
# Take P from `lp.get_model(model_name)`; for a mixture of experts, P is the
# number of parameters one token uses, `active_param_count()`. Take the fp16
# peak and the bandwidth from `lp.get_accelerator(accelerator_name)`.

# %%
def simple_latency_s(model_name, accelerator_name, prompt_tokens, output_tokens):
    """Seconds for one request under the simple model, fp16."""
    ### BEGIN SOLUTION
    params = lp.get_model(model_name).active_param_count()
    acc = lp.get_accelerator(accelerator_name)
    return (prompt_tokens * 2 * params / acc.peak("fp16")
            + (output_tokens - 1) * 2 * params / acc.mem_bandwidth)
    ### END SOLUTION


# %%
question("simple_latency_s", points=2,
         visible=[("llama-2-7b", "A10", 350, 150)],
         hidden=[case("llama-2-13b", "A100 SXM 80GB", 350, 150,
                      why="Llama 2 13B on an A100 SXM 80GB"),
                 case("mistral-7b", "H100 SXM", 1000, 200, why="Mistral 7B on an H100, a longer prompt"),
                 case("mixtral-8x7b", "H100 SXM", 350, 150,
                      why="a mixture of experts: the parameters one token uses"),
                 case("gpt2", "T4", 64, 32, why="a small model (GPT-2) on a T4")],
         reference=lambda m, a, s, g: lp.simple_latency(m, a, s, g, "fp16").total_s,
         forbid=["llmperf.simple_latency", "llmperf.prefill_time",
                 "llmperf.simple_decode_step_time"], on_forbidden="fail")

# %% [markdown]
# ## Question 7: the KV cache (2 points)
#
# Every token leaves a key and a value vector in each layer. With multi-head
# attention each is `d_model` long, which gives the lecture's 2 * 2 * L * D * N
# bytes for N tokens in fp16. With grouped-query attention (GQA) only
# `n_kv_heads` heads of size `d_head` are stored per layer. Return the bytes for
# `batch` sequences of `tokens` tokens each, a whole number, using the model's
# `n_layers`, `n_kv_heads` and `d_head`.

# %%
def kv_cache_bytes(model_name, tokens, batch):
    """Bytes of the fp16 KV cache of `batch` sequences of `tokens` tokens."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    per_token = 2 * 2 * m.n_layers * m.n_kv_heads * m.d_head
    return per_token * tokens * batch
    ### END SOLUTION


# %%
question("kv_cache_bytes", points=2,
         visible=[("llama-2-7b", 4096, 1)],
         hidden=[case("llama-3-8b", 8192, 4, why="Llama 3 8B (GQA): 4 sequences of 8,192"),
                 case("mistral-7b", 1000, 16, why="Mistral 7B (GQA): 16 sequences of 1,000"),
                 case("llama-2-70b", 4096, 2, why="Llama 2 70B: 8 KV heads for 64 query heads")],
         reference=lambda m, n, b: lp.get_model(m).kv_cache_bytes(n, b, "fp16"),
         forbid=["llmperf.ModelConfig.kv_cache_bytes", "llmperf.ModelConfig.kv_bytes_per_token"],
         on_forbidden="fail")

# %% [markdown]
# ## Question 8: how many requests fit (2 points)
#
# The accelerator's memory (`mem_capacity`, bytes, all of it: nothing reserved
# for ECC) holds the fp16 weights (the model's `weight_bytes("fp16")`) and then as
# many KV caches as fit in what is left. Return the largest number of sequences
# of `seq_len` tokens that fit, an int, and 0 when the weights alone do not.
# Ignore activations and the runtime's own memory.

# %%
def max_batch(model_name, accelerator_name, seq_len):
    """Sequences of seq_len tokens whose fp16 KV caches fit beside the weights."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    free = lp.get_accelerator(accelerator_name).mem_capacity - m.weight_bytes("fp16")
    if free <= 0:
        return 0
    return math.floor(free / kv_cache_bytes(model_name, seq_len, 1))
    ### END SOLUTION


# %%
question("max_batch", points=2,
         visible=[("llama-2-7b", "A10", 4096)],
         hidden=[case("llama-3-8b", "A10", 8192, why="Llama 3 8B on an A10 at its full 8,192 tokens"),
                 case("llama-2-13b", "A100 SXM 80GB", 4096, why="Llama 2 13B on an A100 SXM 80GB"),
                 case("llama-2-70b", "A10", 4096, why="Llama 2 70B on an A10: the weights do not fit"),
                 case("mixtral-8x7b", "H200 SXM", 32768, why="Mixtral 8x7B on an H200 at 32,768")],
         reference=lambda m, a, n: lp.max_batch_size(m, a, n, "fp16", ecc=False),
         forbid=["llmperf.max_batch_size", "llmperf.requests_that_fit", "llmperf.memory_report"],
         on_forbidden="fail")

# %% [markdown]
# ## Question 9: the critical decode batch (2 points)
#
# In decode, the FFN's first matmul multiplies a (batch, d_model) activation by a
# (d_model, d_ff) weight matrix. Its intensity grows with the batch. Return the
# smallest batch (an int) at which it reaches the accelerator's fp16 ridge point,
# using your `gemm_intensity` and `ridge_point`.

# %%
def critical_batch(model_name, accelerator_name):
    """Smallest decode batch whose FFN matmul is at or past the ridge point."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    acc = lp.get_accelerator(accelerator_name)
    ridge = ridge_point(acc.peak("fp16"), acc.mem_bandwidth)
    batch = 1
    while gemm_intensity(batch, m.d_model, m.d_ff) < ridge:
        batch += 1
    return batch
    ### END SOLUTION


# %%
question("critical_batch", points=2,
         visible=[("llama-2-7b", "A10")],
         hidden=[case("llama-2-7b", "H100 SXM", why="Llama 2 7B on an H100 SXM: a higher ridge"),
                 case("mistral-7b", "T4", why="Mistral 7B (a wider FFN) on a T4"),
                 case("llama-2-70b", "A100 SXM 80GB", why="Llama 2 70B on an A100 SXM 80GB")],
         reference=lambda m, a: lp.ffn_critical_batch(m, a, "fp16"),
         forbid=["llmperf.ffn_critical_batch"], on_forbidden="fail")

# %% [markdown]
# ## Question 10: tensor parallelism's traffic (2 points)
#
# Split each layer over `tp` GPUs, Megatron style: the attention block's output
# projection and the FFN's down projection each end with an all-reduce of one
# `d_model`-long fp16 vector per token. A ring all-reduce of a message of M bytes
# makes each GPU send 2 (tp - 1) / tp * M bytes. Return the bytes one GPU sends
# per token per layer (0 when tp = 1).

# %%
def tp_bytes_per_token(d_model, tp):
    """Bytes each GPU sends per token and layer for the two all-reduces, fp16."""
    ### BEGIN SOLUTION
    message = 2 * d_model
    return 2 * (2 * (tp - 1) / tp * message)
    ### END SOLUTION


# %%
question("tp_bytes_per_token", points=2,
         visible=[(4096, 2)],
         hidden=[case(8192, 8, why="8 GPUs, width 8,192"),
                 case(4096, 4, why="4 GPUs, width 4,096"),
                 case(5120, 1, why="a single GPU: nothing to send")],
         reference=lambda d, tp: lp.tensor_parallel_layer_bytes(d, tp, "fp16"),
         forbid=["llmperf.tensor_parallel_layer_bytes", "llmperf.tensor_parallel_bytes_per_token",
                 "llmperf.ring_allreduce_bytes"], on_forbidden="fail")
