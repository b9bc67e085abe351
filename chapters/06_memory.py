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
# # Chapter 6: Fewer bytes: KV cache management and quantization
#
# Chapters 4 and 5 showed that decode is bound by the bytes it reads: every weight once per
# step, and every cached key and value of every sequence in the batch. This chapter takes
# the first optimizations that shrink those bytes or use them better: managing the KV cache
# so that the memory reserved for it holds real tokens, making each token's KV smaller, and
# storing the weights in fewer bits.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - measure how much of the memory reserved for KV holds token states, under whole-request
#   reservation and under paged allocation, and count the blocks a request needs;
# - explain block tables, preemption by recompute, and prefix sharing with copy on write;
# - compare the requests in flight and the throughput that reservation and paging allow;
# - compute the KV bytes per token of multi-head, grouped-query and multi-query attention,
#   and the error an int8 KV cache adds;
# - quantize weights to int8 per channel and to int4 per group, predict the error and the
#   speedup from the bytes, and measure both.
# :::
#
# Notation follows chapters 4 and 5. New here:
#
# | symbol | meaning |
# |---|---|
# | $s$ | block size: tokens per KV block |
# | $n$ | tokens a request holds in the cache (prompt plus output so far) |
# | $\lceil n/s \rceil$ | blocks a request of $n$ tokens needs |

# %%
import llmperf as lp

# %% [markdown]
# ## 1. KV cache management
#
# (placeholder: bridge from chapter 3, paged allocation, prefix sharing, published figures,
# what paging buys, smaller KV per token)

# %% [markdown]
# ## 2. Weight quantization

# %% [markdown]
# <!-- QUANTIZATION SECTION: cells go here -->

# %% [markdown]
# ## Worked problems
#
# (placeholder)

# %% [markdown]
# ## Summary
#
# (placeholder)
#
# ## Exercises
#
# `exercises/06_memory.py`: blocks needed and internal fragmentation, requests that fit
# under reservation and paging, the scale and error of quantizing a small vector, int4 bytes
# with group scales, and a small implementation.
#
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
