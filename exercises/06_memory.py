# %% [markdown]
# # Exercises 6: KV cache management and quantization
#
# These questions follow chapter 6. Write each answer where the cell says
# `raise NotImplementedError(...)`, run the cell, then run the check cell below it: it
# calls your function on a few inputs and prints PASS or FAIL with the expected answer,
# what you returned and the tolerance. The grader runs the same checks plus hidden ones on
# other inputs, so write the general rule rather than the numbers of the visible examples.

# %%
import math

import llmperf as lp
from llmperf.grading import question

# %% [markdown]
# <!-- KV QUESTIONS -->

# %% [markdown]
# <!-- QUANTIZATION QUESTIONS -->
