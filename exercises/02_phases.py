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
# # Exercises 2: prefill and autoregression
#
# Fill in each function where it says so, then run the cell below it: the visible checks print
# PASS or FAIL at once. The grader runs further, hidden checks with other arguments. Use plain
# Python (and `math`); `llmperf` is imported for catalog look-ups only.
#
# Timestamps follow `generate`: `timestamps[i]` is the time in seconds, from the arrival of the
# request, at which output token `i` was available; `timestamps[0]` is the time to first token.
# Every answer is in seconds (or tokens per second) as a float. `llmperf`'s own latency model
# (`lp.simple_latency` and its parts) and its `Generation` record answer some of these questions
# for you: the grader reports calls of them, and the checks that make one fail.

# %%
import math

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: time to first token (1 point)
#
# Return the TTFT, in seconds, of a request from its token timestamps.

# %%
def ttft(timestamps: list) -> float:
    ### BEGIN SOLUTION
    return timestamps[0]
    ### END SOLUTION

# %%
def _generation(timestamps):
    """The record `generate` returns, holding these timestamps (token ids do not matter)."""
    import torch

    from llmperf.measured.generate import Generation
    return Generation(torch.zeros(1, len(timestamps), dtype=torch.int64), list(timestamps),
                      prompt_len=1)


question("ttft", points=1,
         visible=[[0.42, 0.47, 0.52, 0.58, 0.63]],
         hidden=[case([1.5], why="a single output token"),
                 case([0.05, 0.1, 0.2], why="three tokens, unevenly spaced"),
                 case([3.0, 3.001, 3.002, 3.5], why="a slow first token, then fast ones")],
         reference=lambda t: _generation(t).ttft_s, forbid=["llmperf.measured.generate.Generation"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: time per output token (1 point)
#
# Return the TPOT, in seconds: the mean time between consecutive output tokens after the first.
# With a single output token there is no such gap: return 0.0.

# %%
def tpot(timestamps: list) -> float:
    ### BEGIN SOLUTION
    n = len(timestamps) - 1
    return (timestamps[-1] - timestamps[0]) / n if n else 0.0
    ### END SOLUTION

# %%
question("tpot", points=1,
         visible=[[0.42, 0.47, 0.52, 0.58, 0.63], [1.5]],
         hidden=[case([0.05, 0.1, 0.2], why="three tokens, unevenly spaced: the mean of two gaps"),
                 case([3.0, 3.001, 3.002, 3.5], why="a long last gap pulls the mean up"),
                 case([0.2, 0.21], why="two tokens: a single gap")],
         reference=lambda t: _generation(t).tpot_s, abs=1e-12, forbid=["llmperf.measured.generate.Generation"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: tokens per second (1 point)
#
# Return two rates as a list `[request_rate, decode_rate]`: the request's output tokens per second
# of its end-to-end latency, and the steady decode rate $1/\text{TPOT}$ (0.0 when there is only
# one token).

# %%
def token_rates(timestamps: list) -> list:
    ### BEGIN SOLUTION
    gap = tpot(timestamps)
    return [len(timestamps) / timestamps[-1], 1.0 / gap if gap else 0.0]
    ### END SOLUTION

# %%
question("token_rates", points=1,
         visible=[[0.42, 0.47, 0.52, 0.58, 0.63]],
         hidden=[case([1.5], why="a single output token: the decode rate is 0.0"),
                 case([0.05, 0.1, 0.2], why="three tokens, unevenly spaced"),
                 case([3.0, 3.001, 3.002, 3.5],
                      why="a slow first token: it lowers the request rate, not the decode rate")],
         reference=lambda t: [len(t) / t[-1],
                              1 / _generation(t).tpot_s if _generation(t).tpot_s else 0.0], forbid=["llmperf.measured.generate.Generation"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: the lecture's simple latency model (2 points)
#
# Return the predicted end-to-end seconds of one request with the lecture's model: the prefill of
# `prompt_tokens` is compute bound ($2P$ FLOPs per token at `peak_flops` FLOP/s) and yields the
# first output token; each of the `output_tokens` $- 1$ decode steps that follow reads all `params`
# parameters of `bytes_per_param` bytes at `bandwidth` B/s. (The lecture writes $G \cdot bP/\beta$
# for $G$ tokens, rounding the first token's step in; `lp.simple_latency` and this question charge
# $G - 1$ steps.)

# %%
def simple_latency_s(params: float, prompt_tokens: int, output_tokens: int, peak_flops: float,
                     bandwidth: float, bytes_per_param: float = 2.0) -> float:
    ### BEGIN SOLUTION
    prefill = prompt_tokens * 2 * params / peak_flops
    decode = (output_tokens - 1) * params * bytes_per_param / bandwidth
    return prefill + decode
    ### END SOLUTION

# %%
def _simple_reference(params, s, g, peak, bw, bytes_per_param=2.0):
    b = bytes_per_param
    acc = lp.Accelerator("q", {"fp16": peak, "fp32": peak}, bw, 1e12)
    model = lp.get_model("llama-2-7b")
    scale = params / model.param_count()  # the same formula, through llmperf
    est = lp.simple_latency(model, acc, s, g, dtype="fp16" if b == 2.0 else "fp32")
    return est.total_s * scale


question("simple_latency_s", points=2,
         visible=[(6_738_415_616, 350, 150, 125e12, 600e9)],
         hidden=[case(13_015_864_320, 1000, 200, 312e12, 2039e9,
                      why="a 13B model on an A100's figures"),
                 case(6_738_415_616, 4096, 1, 989.5e12, 3350e9,
                      why="one output token: the prefill alone, no decode step"),
                 case(19_993_088, 256, 32, 60e9, 15e9, bytes_per_param=4.0,
                      why="fp32 weights, bytes_per_param=4.0 given by keyword")],
         reference=_simple_reference, rel=1e-9,
         forbid=["llmperf.simple_latency", "llmperf.prefill_time",
                 "llmperf.simple_decode_step_time"], on_forbidden="fail")

# %% [markdown]
# ## Question 5: one decode token, in prompt tokens (1 point)
#
# By the simple model, how many prompt tokens does a prefill process in the time of one decode
# step? Return it as a float, from the machine's peak FLOP/s, its bandwidth in B/s and the bytes
# per parameter. (It does not depend on the model.)

# %%
def prompt_tokens_per_decode_step(peak_flops: float, bandwidth: float, bytes_per_param: float = 2.0) -> float:
    ### BEGIN SOLUTION
    return (bytes_per_param / bandwidth) / (2 / peak_flops)
    ### END SOLUTION

# %%
question("prompt_tokens_per_decode_step", points=1,
         visible=[(125e12, 600e9)],
         hidden=[case(989.5e12, 3350e9, why="an H100 SXM's datasheet"),
                 case(60e9, 15e9, bytes_per_param=4.0,
                      why="fp32 weights, bytes_per_param=4.0 given by keyword"),
                 case(65e12, 320e9, 1.0, why="int8 weights (1 byte per parameter) on a T4")],
         reference=lambda peak, bw, bytes_per_param=2.0: peak * bytes_per_param / (2 * bw))

# %% [markdown]
# ## Question 6: the longest prompt within a TTFT objective (1 point)
#
# A service promises a TTFT of at most `ttft_slo_s` seconds. With the simple model's compute-bound
# prefill (no queueing), return the longest prompt, in whole tokens, that catalog model
# `model_name` on catalog accelerator `accelerator_name` (fp16 peak) can accept. Use the model's
# `active_param_count()`.

# %%
def max_prompt_tokens(model_name: str, accelerator_name: str, ttft_slo_s: float) -> int:
    ### BEGIN SOLUTION
    m, acc = lp.get_model(model_name), lp.get_accelerator(accelerator_name)
    return math.floor(ttft_slo_s * acc.peak("fp16") / (2 * m.active_param_count()))
    ### END SOLUTION

# %%
question("max_prompt_tokens", points=1,
         visible=[("llama-2-7b", "A10", 0.5)],
         hidden=[case("llama-2-70b", "H100 SXM", 0.2, why="a 70B model on an H100, within 0.2 s"),
                 case("mixtral-8x7b", "A100 SXM 80GB", 0.25,
                      why="a mixture of experts: only the active parameters count"),
                 case("mistral-7b", "L4", 1.0, why="Mistral 7B on an L4, within a second")],
         reference=lambda m, a, t: math.floor(
             t / lp.simple_latency(m, a, 1, 1, dtype="fp16").prefill_s),
         forbid=["llmperf.simple_latency", "llmperf.prefill_time"], on_forbidden="fail")

# %% [markdown]
# ## Question 7: temperature and top-k (2 points)
#
# Return the probabilities (a list of floats, one per logit, in the input's order) with which a
# sampler picks each token from `logits` at `temperature` > 0, keeping only the `top_k` largest
# logits when `top_k` is not None (assume no ties at the cut). Dropped tokens get probability 0.

# %%
def sampling_probs(logits: list, temperature: float, top_k: int | None = None) -> list:
    ### BEGIN SOLUTION
    z = [v / temperature for v in logits]
    if top_k is not None:
        cut = sorted(z, reverse=True)[top_k - 1]
        z = [v if v >= cut else -math.inf for v in z]
    top = max(z)
    w = [math.exp(v - top) for v in z]
    total = sum(w)
    return [v / total for v in w]
    ### END SOLUTION

# %%
question("sampling_probs", points=2,
         visible=[([2.0, 1.0, 0.0], 0.5), ([2.0, 1.0, 0.0], 1.0, 2)],
         hidden=[case([0.1, 3.0, -1.0, 2.5, 0.0], 0.7, 3,
                      why="top 3 of 5 logits in mixed order, temperature 0.7"),
                 case([1000.0, 999.0], 1.0, why="huge logits: exp overflows unless the max is subtracted"),
                 case([2.0, 1.0, 0.0], 1.0, why="temperature 1 and no top-k: the plain softmax"),
                 case([0.0, 0.0, 5.0, 0.0], 10.0, why="a high temperature flattens the distribution"),
                 case([3.0, 1.0, 2.0], 0.2, top_k=1, why="top_k=1 given by keyword")],
         rel=1e-6, abs=1e-12)
