# %% [markdown]
# A tiny exercise for the grader's own tests: two functions and one value.

# %%
from llmperf.grading import case, question


# %%
def add(a, b):
    ### BEGIN SOLUTION
    return a + b
    ### END SOLUTION


# %%
question("add", points=2, visible=[(1, 2)],
         hidden=[case(10, 20, why="two larger integers"),
                 case(a=1.5, b=2.5, why="two floats, given by keyword")])

# %%
def describe_bound(intensity, ridge):
    ### BEGIN SOLUTION
    return "compute" if intensity > ridge else "memory"
    ### END SOLUTION


# %%
question("describe_bound", points=1, visible=[(300, 208.3)],
         hidden=[case(1, 208.3, why="an intensity far below the ridge"),
                 case(62.4, 208.3, why="an intensity below the ridge, above 1")])

# %%
### BEGIN SOLUTION
answer = 6 * 7
### END SOLUTION

# %%
question("answer", points=1)
