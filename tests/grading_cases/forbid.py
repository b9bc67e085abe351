# %% [markdown]
# An exercise for the grader's tests of `forbid`: questions that name library calls the
# answer must not make, one that only reports them and two whose checks fail.

# %%
import llmperf as lp
from llmperf.grading import case, question


# %%
def weights_gib(name):
    ### BEGIN SOLUTION
    return lp.get_model(name).weight_bytes("fp16") / 2**30
    ### END SOLUTION


# %%
question("weights_gib", points=1, visible=["llama-2-7b"],
         hidden=[case("gpt2", why="a small model")],
         forbid=["llmperf.ModelConfig.param_count"])

# %%
def fit(name, accelerator, tokens):
    ### BEGIN SOLUTION
    m, a = lp.get_model(name), lp.get_accelerator(accelerator)
    free = a.mem_capacity - m.weight_bytes("fp16")
    return max(0, int(free // (tokens * m.kv_bytes_per_token("fp16"))))
    ### END SOLUTION


# %%
question("fit", points=2, visible=[("llama-2-7b", "A10", 4096)],
         hidden=[case("llama-3-8b", "A10", 8192, why="a GQA model at 8,192 tokens")],
         reference=lambda m, a, n: lp.max_batch_size(m, a, n, ecc=False),
         forbid=["llmperf.max_batch_size"], on_forbidden="fail")

# %%
### BEGIN SOLUTION
_m, _a = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
tokens = int((_a.mem_capacity - _m.weight_bytes("fp16")) // _m.kv_bytes_per_token("fp16"))
### END SOLUTION

# %%
question("tokens", points=1, reference=lambda: lp.max_batch_size("llama-2-7b", "A10", 1, ecc=False),
         forbid=["llmperf.analytic.perfmodel"], on_forbidden="fail")
