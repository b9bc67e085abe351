"""The shapes of the trained models, as `ModelConfig`s the analytic layer counts like any other.

All share the character tokenizer (vocab_size ids) and a 256-token context:

- target: 4 layers, d_model 256, SwiGLU d_ff 688 (about 3.2 M parameters);
- draft: 2 layers, d_model 96 (about 13x fewer parameters), for speculative decoding;
- relu: the target with a two-matrix ReLU FFN of d_ff 1032 (the same parameter count), whose
  hidden activations are exactly zero where ReLU cuts them (contextual sparsity);
- moe: the target with 4 SwiGLU experts of d_ff 344 per layer, 2 per token, so a token runs
  as many FFN parameters as in the target;
- student: 3 layers, d_model 128 (about 5.2x fewer parameters than the target), trained twice,
  as "student" on the corpus alone and as "student-distilled" with the target as teacher.
"""
from __future__ import annotations

from ..models import ModelConfig

VOCAB_SIZE = 104  # the characters of the training split, plus the unknown id
CONTEXT = 256

_SHAPES: dict[str, dict] = {
    "target": dict(n_layers=4, d_model=256, n_heads=4, d_ff=688),
    "draft": dict(n_layers=2, d_model=96, n_heads=2, d_ff=256),
    "relu": dict(n_layers=4, d_model=256, n_heads=4, d_ff=1032, ffn_kind="mlp",
                 activation="relu"),
    "moe": dict(n_layers=4, d_model=256, n_heads=4, d_ff=344, n_experts=4,
                experts_per_token=2),
    "student": dict(n_layers=3, d_model=128, n_heads=4, d_ff=344),
    "student-distilled": dict(n_layers=3, d_model=128, n_heads=4, d_ff=344),
}
NAMES = tuple(_SHAPES)


def model_config(name: str, vocab_size: int = VOCAB_SIZE) -> ModelConfig:
    """The ModelConfig of trained model `name` (one of NAMES), named "trained-<name>"."""
    if name not in _SHAPES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    return ModelConfig(name=f"trained-{name}", vocab_size=vocab_size, max_seq_len=CONTEXT,
                       **_SHAPES[name])
