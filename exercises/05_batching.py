# %% [markdown]
# # Exercises 5: batching
#
# These questions follow chapter 5. They ask how far batching raises a decode
# step's arithmetic intensity, how many requests fit beside the weights, and how
# static and continuous batching lay requests out in time; the last asks for a
# piece of a scheduler. Write each answer where the cell says
# `raise NotImplementedError(...)`, run the cell, then run the check cell below
# it: it calls your function on a few inputs and prints PASS or FAIL with the
# expected answer, what you returned and the tolerance. The grader runs the same
# checks plus hidden ones on other inputs, so write the general rule rather than
# the numbers of the visible examples.
#
# Conventions, as in the chapter: weights, activations and the KV cache are fp16
# (2 bytes per element); a multiply-add counts as 2 FLOPs. You may use `llmperf`
# to look up models and accelerators (`lp.get_model`, `lp.get_accelerator`, a
# model's `param_count()`, `weight_bytes()`, `kv_bytes_per_token()`, an
# accelerator's `peak("fp16")`, `mem_bandwidth`, `mem_capacity`), but write the
# formulas and the schedules yourself: `llmperf.analytic.batching`, `lp.max_batch_size`
# and `llmperf.serving` answer these questions for you and teach you nothing. The grader
# reports calls of them from your answers, and the checks that make one fail.

# %%
import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: a decode step's intensity (2 points)
#
# One decode step of `batch` sequences that each hold `context` tokens in their
# KV cache. Count, as the chapter does, 2P FLOPs per sequence for the weights plus
# 4 L N h d for attention (N = context, h query heads of size d, L layers), and the
# bytes of the weights read once (2P in fp16) plus each sequence's keys and values
# (2 L N h_kv d elements, 2 bytes each). Return FLOPs over bytes, a float.
# `lp.get_model(model_name)` returns the model's config (a `ModelConfig`): use its
# `param_count()` for P and its fields `n_layers`, `n_heads`, `n_kv_heads` and
# `d_head`, as in `lp.get_model(model_name).n_layers`. (All the models checked are
# dense and have no sliding window.)

# %%
def step_intensity(model_name, batch, context):
    """FLOP per byte of one decode step: B(2P + 4LNhd) / (2P + 2*2*L*N*h_kv*d*B)."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    P, L, d = m.param_count(), m.n_layers, m.d_head
    flops = batch * (2 * P + 4 * L * context * m.n_heads * d)
    moved = 2 * P + 2 * 2 * L * context * m.n_kv_heads * d * batch
    return flops / moved
    ### END SOLUTION


# %%
from llmperf.analytic import batching as _bt

question("step_intensity", points=2,
         visible=[("llama-2-7b", 16, 1024)],
         hidden=[case("llama-2-7b", 1, 1, why="batch 1, context 1: the weights dominate"),
                 case("llama-3-8b", 64, 2048, why="GQA: a quarter of the KV bytes per token"),
                 case("opt-13b", 256, 512, why="a batch of 256: the KV reads weigh"),
                 case("llama-2-70b", 8, 4000, why="Llama 2 70B: 8 sequences of 4,000 tokens")],
         reference=lambda m, b, n: _bt.decode_step_intensity(m, b, n),
         forbid=["llmperf.analytic.batching"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: the critical batch of a whole decode step (2 points)
#
# Return the smallest batch (an int) whose decode step (question 1) reaches the
# accelerator's fp16 ridge point, `peak("fp16")` over `mem_bandwidth`, at the
# given context; return `None` if no batch does. Hint: as the batch grows the intensity
# approaches (2P + 4LNhd) / (2*2*L*N*h_kv*d); if that ceiling is not above the
# ridge, no batch is enough. Otherwise solve for B, or search.

# %%
def whole_step_critical_batch(model_name, accelerator_name, context):
    """Smallest B with step_intensity >= ridge, or None."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    acc = lp.get_accelerator(accelerator_name)
    ridge = acc.peak("fp16") / acc.mem_bandwidth
    P, L, d, n = m.param_count(), m.n_layers, m.d_head, context
    denominator = 2 * P + 4 * L * n * m.n_heads * d - ridge * 2 * 2 * L * n * m.n_kv_heads * d
    if denominator <= 0:
        return None
    batch = max(1, int(ridge * 2 * P / denominator))
    while step_intensity(model_name, batch, context) < ridge:
        batch += 1
    while batch > 1 and step_intensity(model_name, batch - 1, context) >= ridge:
        batch -= 1
    return batch
    ### END SOLUTION


# %%
question("whole_step_critical_batch", points=2,
         visible=[("llama-2-7b", "A10", 64), ("llama-2-7b", "A10", 4096)],
         hidden=[case("llama-3-8b", "A10", 256, why="Llama 3 8B (GQA) on an A10, context 256"),
                 case("llama-3-8b", "H100 SXM", 128, why="Llama 3 8B on an H100 SXM: a higher ridge"),
                 case("llama-2-13b", "A100 SXM 80GB", 32, why="Llama 2 13B on an A100, context 32"),
                 case("llama-3-70b", "L4", 2048,
                      why="Llama 3 70B on an L4 at 2,048: is the ceiling above the ridge?")],
         reference=lambda m, a, n: _bt.step_critical_batch(m, a, n),
         forbid=["llmperf.analytic.batching"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: requests that fit (1 point)
#
# How many requests of `tokens` tokens each can keep their whole KV cache in the
# accelerator's memory beside the fp16 weights? Use the catalog's `mem_capacity`
# (bytes) as it is, with nothing reserved; return 0 when the weights alone do not
# fit. Return an int.

# %%
def requests_that_fit(model_name, accelerator_name, tokens):
    """floor((capacity - weights) / (tokens * KV bytes per token)), at least 0."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    acc = lp.get_accelerator(accelerator_name)
    free = acc.mem_capacity - m.weight_bytes("fp16")
    return max(0, int(free // (tokens * m.kv_bytes_per_token("fp16"))))
    ### END SOLUTION


# %%
question("requests_that_fit", points=1,
         visible=[("llama-2-7b", "A10", 4096)],
         hidden=[case("opt-13b", "A100 SXM 40GB", 2048, why="OPT-13B on an A100 SXM 40GB"),
                 case("llama-3-8b", "L4", 8192, why="Llama 3 8B (GQA) on an L4 at 8,192 tokens"),
                 case("llama-2-70b", "A10", 100, why="Llama 2 70B on an A10: the weights do not fit"),
                 case("llama-2-13b", "H100 SXM", 1, why="requests of one token: tens of thousands")],
         reference=lambda m, a, n: lp.max_batch_size(m, a, n, "fp16", ecc=False),
         forbid=["llmperf.max_batch_size", "llmperf.requests_that_fit",
                 "llmperf.analytic.batching"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: the study's memory arithmetic, in the library's units (1 point)
#
# Set `opt13b_kv_tokens` to the number of tokens of KV cache that fit beside the
# fp16 weights of OPT-13B on an A100 SXM 40GB, from the catalog's figures
# (capacity in bytes, `weight_bytes("fp16")`, `kv_bytes_per_token("fp16")`).
# Compare it with the study's "40 GB − 26 GB = 14 GB, about 14k tokens at 1 MB".

# %%
### BEGIN SOLUTION
_opt, _a100 = lp.get_model("opt-13b"), lp.get_accelerator("A100 SXM 40GB")
opt13b_kv_tokens = int((_a100.mem_capacity - _opt.weight_bytes("fp16"))
                       // _opt.kv_bytes_per_token("fp16"))
### END SOLUTION

# %%
question("opt13b_kv_tokens", points=1,
         reference=lambda: _bt.kv_capacity_tokens("opt-13b", "A100 SXM 40GB"),
         forbid=["llmperf.analytic.batching", "llmperf.max_batch_size"], on_forbidden="fail")

# %% [markdown]
# ## Question 5: a static batching timeline (2 points)
#
# All requests arrive at time 0, in the order given; `outputs[i]` is request i's
# output length in tokens. Every iteration takes exactly 1 second, whatever it
# holds. Static batching takes the first `max_batch` waiting requests, prefills
# them in one iteration (which yields each one's first token), then decodes them
# one token per iteration until the longest of them has finished; only then does
# it take the next group. A request finishes at the end of the iteration that
# yields its last token. Return every request's finish time in seconds (a list
# of numbers), in the given order. (Request i with a 1-token output finishes with
# its prefill, at 1 s if it is in the first group.)

# %%
def static_finish_times(outputs, max_batch):
    """Finish time (s) of each request under static batching, 1 s per iteration."""
    ### BEGIN SOLUTION
    finish, start = [], 0
    for first in range(0, len(outputs), max_batch):
        group = outputs[first:first + max_batch]
        finish += [start + g for g in group]
        start += max(group)
    return finish
    ### END SOLUTION


# %%
from llmperf import serving as _sv

_ONE_SECOND = _sv.LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)


def _finish_times(outputs, max_batch, policy):
    requests = [_sv.Request(0.0, 1, g) for g in outputs]
    run = _sv.simulate(requests, policy, max_batch=max_batch, step_time=_ONE_SECOND)
    return [r.finish_s for r in run.requests]


question("static_finish_times", points=2,
         visible=[([5, 2, 3, 1], 2)],
         hidden=[case([6, 2, 3, 8, 2, 5, 4, 1], 4,
                      why="two groups of 4: the second waits for the first's longest"),
                 case([1, 1, 1], 1, why="max_batch 1 and one-token outputs"),
                 case([7], 3, why="a single request, fewer than max_batch"),
                 case([3, 9, 2, 2, 4, 1, 1], 3, why="7 requests in groups of 3: the last group is short")],
         reference=lambda outputs, b: _finish_times(outputs, b, "static"), forbid=["llmperf.serving"], on_forbidden="fail")

# %% [markdown]
# ## Question 6: a continuous batching timeline (2 points)
#
# Same requests and clock, now with continuous batching: at the start of every
# iteration, requests that finished in the previous one have left, and waiting
# requests (in order) take the free slots; a newly admitted request is prefilled
# in that iteration (its first token comes at its end) while every running request
# decodes one token. Return the finish times, in the given order.

# %%
def continuous_finish_times(outputs, max_batch):
    """Finish time (s) of each request under continuous batching, 1 s per iteration."""
    ### BEGIN SOLUTION
    finish = [0] * len(outputs)
    running, waiting, t = [], list(range(len(outputs))), 0
    while waiting:  # a finish time is known at admission: stop once everyone is admitted
        running = [i for i in running if finish[i] > t]  # those that finished have left
        while waiting and len(running) < max_batch:
            i = waiting.pop(0)
            finish[i] = t + outputs[i]  # first token at t + 1, then one more per iteration
            running.append(i)
        t += 1
    return finish
    ### END SOLUTION


# %%
question("continuous_finish_times", points=2,
         visible=[([5, 2, 3, 1], 2)],
         hidden=[case([6, 2, 3, 8, 2, 5, 4, 1], 4,
                      why="8 requests, 4 slots: each freed slot is taken at the next iteration"),
                 case([1, 1, 1], 1, why="max_batch 1 and one-token outputs"),
                 case([7], 3, why="a single request, fewer than max_batch"),
                 case([3, 9, 2, 2, 4, 1, 1], 3, why="a long request holds a slot while short ones cycle")],
         reference=lambda outputs, b: _finish_times(outputs, b, "continuous"), forbid=["llmperf.serving"], on_forbidden="fail")

# %% [markdown]
# ## Question 7: TTFT and TPOT from a timeline (1 point)
#
# A request arrives at `arrival_s`; `token_times_s` lists the times at which each
# of its output tokens became available (at least one). Return
# `[ttft_s, tpot_s]`: the time to first token, and the mean gap between the later
# tokens, (last - first) / (number of tokens - 1), or `None` for a one-token output.

# %%
def ttft_tpot(arrival_s, token_times_s):
    """[TTFT, TPOT or None] in seconds."""
    ### BEGIN SOLUTION
    ttft = token_times_s[0] - arrival_s
    n = len(token_times_s)
    tpot = None if n == 1 else (token_times_s[-1] - token_times_s[0]) / (n - 1)
    return [ttft, tpot]
    ### END SOLUTION


# %%
def _ttft_tpot(arrival, times):
    result = _sv.RequestResult(_sv.Request(arrival, 1, len(times)), 0, arrival, times[0], times[-1])
    return [result.ttft_s, result.tpot_s]


question("ttft_tpot", points=1,
         visible=[(0.5, [1.2, 1.25, 1.31, 1.34])],
         hidden=[case(0.0, [3.0], why="a one-token output: TPOT is None"),
                 case(2.0, [2.4, 2.5, 2.6, 2.7, 3.9], why="a stall before the last token"),
                 case(10.0, [10.05, 10.08], why="an arrival at 10 s: the TTFT counts from it")],
         reference=_ttft_tpot, forbid=["llmperf.serving"], on_forbidden="fail")

# %% [markdown]
# ## Question 8: admission, the heart of a scheduler (3 points)
#
# A continuous-batching scheduler admits waiting requests first come, first
# served, into free slots, reserving each request's whole KV cache (prompt plus
# output tokens) when it is admitted. It stops at the first waiting request that
# does not fit, even if a later one would: no request overtakes another. `waiting`
# lists `[prompt_tokens, output_tokens]` pairs in arrival order; `free_slots` is
# the number of free batch slots and `free_kv_tokens` the KV memory left, in
# tokens. Return how many requests, from the head of the queue, are admitted.

# %%
def admitted(waiting, free_slots, free_kv_tokens):
    """Number of requests admitted from the head of `waiting`."""
    ### BEGIN SOLUTION
    count = 0
    for prompt, output in waiting:
        if count == free_slots or prompt + output > free_kv_tokens:
            break
        free_kv_tokens -= prompt + output
        count += 1
    return count
    ### END SOLUTION


# %%
def _admitted(waiting, free_slots, free_kv_tokens):
    if free_slots == 0 or free_kv_tokens == 0:
        return 0
    scheduler = _sv.Scheduler("continuous", max_batch=free_slots,
                              memory=_sv.ReservationMemory(free_kv_tokens))
    for i, (prompt, output) in enumerate(waiting):
        request = _sv.Request(0.0, prompt, output)
        if not scheduler.memory.can_ever_fit(request):
            break  # it would block the head of the queue: nobody behind it is admitted
        scheduler.add(i, request)
    batch = scheduler.schedule()
    return 0 if batch is None else len(batch.admitted)


question("admitted", points=3,
         visible=[([[100, 50], [200, 100], [50, 50]], 4, 1000),
                  ([[100, 50], [900, 100], [50, 50]], 4, 1000)],
         hidden=[case([[10, 10]] * 10, 3, 10_000, why="slots run out before KV memory"),
                 case([[512, 128]] * 40, 64, 21_048, why="KV memory runs out before slots"),
                 case([[600, 600], [1, 1]], 2, 1000,
                      why="a request that does not fit must wait, and so must a smaller one behind it"),
                 case([], 4, 1000, why="an empty queue"),
                 case([[5, 5]], 0, 1000, why="no free slot")],
         reference=_admitted, forbid=["llmperf.serving"], on_forbidden="fail")
