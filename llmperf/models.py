"""Model configurations: the shapes that determine parameter counts, FLOPs and bytes.

A `ModelConfig` describes a decoder-only transformer by its shapes. The same
config builds the PyTorch model in `llmperf.measured.model` and feeds the analytic
cost model in `llmperf.analytic.cost`, so the two can never disagree about what a model is.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .names import build_index, lookup
from .units import check_non_negative, check_positive, storage_bytes

FFN_KINDS = ("swiglu", "mlp")
NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("rope", "learned")
ACTIVATIONS = ("silu", "gelu", "relu")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of a decoder-only transformer.

    n_heads query heads of size d_head; n_kv_heads key/value heads (grouped-query
    attention when fewer than n_heads). ffn_kind "swiglu" has three matrices
    (gate, up, down), "mlp" two (up, down). An MoE model has n_experts FFNs per
    layer, of which experts_per_token run for each token, and a router.

    sliding_window: when set, each token attends to itself and at most
    sliding_window - 1 tokens before it (Mistral 7B v0.1: 4,096), and the KV cache
    keeps only the last sliding_window tokens of a sequence (a rolling buffer, as in
    Mistral's reference code). None means full causal attention.
    """

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    vocab_size: int
    n_kv_heads: int | None = None
    d_head: int | None = None
    ffn_kind: str = "swiglu"
    activation: str = "silu"
    n_experts: int = 1
    experts_per_token: int = 1
    tied_embeddings: bool = False
    norm: str = "rmsnorm"
    bias: bool = False
    position: str = "rope"
    max_seq_len: int = 4096
    learned_positions: int = 0  # rows of a learned position table (OPT adds 2 to its context)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_ff", "vocab_size", "max_seq_len",
                     "n_experts", "experts_per_token"):
            check_positive(name, getattr(self, name), integer=True)
        check_non_negative("learned_positions", self.learned_positions, integer=True)
        check_positive("rope_theta", self.rope_theta)
        check_positive("norm_eps", self.norm_eps)
        if self.sliding_window is not None:
            check_positive("sliding_window", self.sliding_window, integer=True)
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        check_positive("n_kv_heads", self.n_kv_heads, integer=True)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads}) "
                    "unless d_head is given"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        check_positive("d_head", self.d_head, integer=True)
        if self.experts_per_token > self.n_experts:
            raise ValueError(
                f"experts_per_token ({self.experts_per_token}) must be <= n_experts "
                f"({self.n_experts})"
            )
        for name, allowed in (("ffn_kind", FFN_KINDS), ("norm", NORMS),
                              ("position", POSITIONS), ("activation", ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.position == "rope" and self.d_head % 2:
            raise ValueError(f"d_head must be even for rope, got {self.d_head}")

    # ---- shapes -------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        """Width of all query heads together, n_heads * d_head (= d_model for most models)."""
        return self.n_heads * self.d_head

    @property
    def kv_dim(self) -> int:
        """Width of all key (or value) heads together, n_kv_heads * d_head."""
        return self.n_kv_heads * self.d_head

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices per FFN (expert): 3 for SwiGLU, 2 for a plain MLP."""
        return 3 if self.ffn_kind == "swiglu" else 2

    # ---- parameter counts ---------------------------------------------------------------
    def _norm_params(self) -> int:
        return self.d_model * (2 if self.norm == "layernorm" else 1)

    def attention_params(self) -> int:
        """Parameters of one layer's attention: Wq, Wk, Wv, Wo (and their biases)."""
        weights = self.d_model * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.d_model
        biases = (self.q_dim + 2 * self.kv_dim + self.d_model) if self.bias else 0
        return weights + biases

    def expert_params(self) -> int:
        """Parameters of one FFN (one expert, for MoE)."""
        weights = self.ffn_matrices * self.d_model * self.d_ff
        biases = ((self.ffn_matrices - 1) * self.d_ff + self.d_model) if self.bias else 0
        return weights + biases

    def router_params(self) -> int:
        """Parameters of one layer's MoE router (0 for a dense model)."""
        return self.d_model * self.n_experts if self.is_moe else 0

    def layer_params(self, experts: int | None = None) -> int:
        """Parameters of one decoder layer, counting `experts` FFNs (default: all)."""
        experts = self.n_experts if experts is None else experts
        return (self.attention_params() + experts * self.expert_params()
                + self.router_params() + 2 * self._norm_params())

    def embedding_params(self) -> int:
        """Token embedding plus any learned position table."""
        return self.vocab_size * self.d_model + self.learned_positions * self.d_model

    def lm_head_params(self) -> int:
        """Output projection to the vocabulary (0 when tied to the embedding)."""
        return 0 if self.tied_embeddings else self.vocab_size * self.d_model

    def param_breakdown(self) -> dict[str, int]:
        """Parameters by component, summing to `param_count()`."""
        per_layer_norms = 2 * self._norm_params()
        return {
            "embedding": self.embedding_params(),
            "attention": self.n_layers * self.attention_params(),
            "ffn": self.n_layers * (self.n_experts * self.expert_params() + self.router_params()),
            "norms": self.n_layers * per_layer_norms + self._norm_params(),
            "lm_head": self.lm_head_params(),
        }

    def param_count(self) -> int:
        """All parameters: embeddings, every layer, the final norm, the LM head."""
        return sum(self.param_breakdown().values())

    def active_param_count(self) -> int:
        """Parameters one token uses: experts_per_token of the experts (param_count if dense)."""
        inactive = (self.n_experts - self.experts_per_token) * self.expert_params()
        return self.param_count() - self.n_layers * inactive

    def weight_bytes(self, dtype: str = "fp16") -> int:
        """Whole bytes of all parameters stored in `dtype` (int4: two per byte, rounded up)."""
        return storage_bytes(self.param_count(), dtype)

    # ---- KV cache -------------------------------------------------------------------------
    def kv_bytes_per_token(self, dtype: str = "fp16") -> int:
        """Bytes of K and V one token leaves in the cache: 2 n_layers n_kv_heads d_head bytes."""
        return storage_bytes(2 * self.n_layers * self.kv_dim, dtype)

    def cached_tokens(self, tokens: int) -> int:
        """Tokens of one sequence of `tokens` tokens that the KV cache holds.

        All of them, or the last sliding_window of them under a sliding window.
        """
        check_positive("tokens", tokens, integer=True)
        if self.sliding_window is None:
            return int(tokens)
        return min(int(tokens), self.sliding_window)

    def kv_cache_bytes(self, tokens: int, batch: int = 1, dtype: str = "fp16") -> int:
        """Bytes of the KV cache for `batch` sequences of `tokens` tokens each.

        batch * cached_tokens(tokens) * kv_bytes_per_token(dtype): a sliding window caps
        the tokens each sequence keeps.
        """
        check_positive("batch", batch, integer=True)
        return int(batch) * self.cached_tokens(tokens) * self.kv_bytes_per_token(dtype)

    def with_(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # ---- Hugging Face configs -----------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str | None = None) -> ModelConfig:
        """Read a Hugging Face `config.json` dict (llama, mistral, mixtral, gpt2, opt)."""
        if not isinstance(config, Mapping):
            raise ValueError("config must be a dict read from config.json, "
                             f"got {type(config).__name__}")
        kind = config.get("model_type")
        readers = {"llama": _from_llama, "mistral": _from_llama, "mixtral": _from_llama,
                   "gpt2": _from_gpt2, "opt": _from_opt}
        if kind not in readers:
            raise ValueError(f"config['model_type'] must be one of {sorted(readers)}, got {kind!r}")
        fields = readers[kind](config)
        return cls(name=name or config.get("_name_or_path") or kind, **fields)


def _from_llama(c: Mapping[str, Any]) -> dict[str, Any]:
    heads = c["num_attention_heads"]
    return dict(
        n_layers=c["num_hidden_layers"], d_model=c["hidden_size"], n_heads=heads,
        n_kv_heads=c.get("num_key_value_heads") or heads,
        d_head=c.get("head_dim") or c["hidden_size"] // heads,
        d_ff=c["intermediate_size"], vocab_size=c["vocab_size"],
        n_experts=c.get("num_local_experts", 1), experts_per_token=c.get("num_experts_per_tok", 1),
        tied_embeddings=c.get("tie_word_embeddings", False), bias=c.get("attention_bias", False),
        max_seq_len=c.get("max_position_embeddings", 4096), rope_theta=c.get("rope_theta", 10000.0),
        norm_eps=c.get("rms_norm_eps", 1e-5),
        sliding_window=c.get("sliding_window"),  # Mistral's; null or absent means none
    )


def _from_gpt2(c: Mapping[str, Any]) -> dict[str, Any]:
    d = c["n_embd"]
    return dict(
        n_layers=c["n_layer"], d_model=d, n_heads=c["n_head"], d_ff=c.get("n_inner") or 4 * d,
        vocab_size=c["vocab_size"], ffn_kind="mlp", activation="gelu", tied_embeddings=True,
        norm="layernorm", bias=True, position="learned", max_seq_len=c["n_positions"],
        learned_positions=c["n_positions"], norm_eps=c.get("layer_norm_epsilon", 1e-5),
    )


def _from_opt(c: Mapping[str, Any]) -> dict[str, Any]:
    if c.get("word_embed_proj_dim", c["hidden_size"]) != c["hidden_size"]:
        raise ValueError("config: OPT variants with word_embed_proj_dim != hidden_size "
                         "are not supported")
    context = c["max_position_embeddings"]
    return dict(
        n_layers=c["num_hidden_layers"], d_model=c["hidden_size"], n_heads=c["num_attention_heads"],
        d_ff=c["ffn_dim"], vocab_size=c["vocab_size"], ffn_kind="mlp", activation="relu",
        tied_embeddings=c.get("tie_word_embeddings", True), norm="layernorm",
        bias=c.get("enable_bias", True), position="learned", max_seq_len=context,
        learned_positions=context + 2,  # OPT's position table is offset by 2 rows
    )


def _llama(name, layers, d, heads, kv, ff, vocab, context, theta=10000.0, **kw):
    return ModelConfig(name=name, n_layers=layers, d_model=d, n_heads=heads, n_kv_heads=kv,
                       d_ff=ff, vocab_size=vocab, max_seq_len=context, rope_theta=theta, **kw)


def _gpt2(name, layers, d, heads):
    return ModelConfig(name=name, n_layers=layers, d_model=d, n_heads=heads, d_ff=4 * d,
                       vocab_size=50257, ffn_kind="mlp", activation="gelu", tied_embeddings=True,
                       norm="layernorm", bias=True, position="learned", max_seq_len=1024,
                       learned_positions=1024)


# Shapes from each model's Hugging Face config.json (linked).
CATALOG: tuple[ModelConfig, ...] = (
    # https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
    _llama("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 4096),
    # https://huggingface.co/meta-llama/Llama-2-13b-hf/blob/main/config.json
    _llama("llama-2-13b", 40, 5120, 40, 40, 13824, 32000, 4096),
    # https://huggingface.co/meta-llama/Llama-2-70b-hf/blob/main/config.json
    _llama("llama-2-70b", 80, 8192, 64, 8, 28672, 32000, 4096),
    # https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    _llama("llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 8192, theta=500000.0),
    # https://huggingface.co/meta-llama/Meta-Llama-3-70B/blob/main/config.json
    _llama("llama-3-70b", 80, 8192, 64, 8, 28672, 128256, 8192, theta=500000.0),
    # https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
    # ("sliding_window": 4096: each token attends to at most 4,096 tokens)
    _llama("mistral-7b", 32, 4096, 32, 8, 14336, 32000, 32768, sliding_window=4096),
    # https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
    # ("sliding_window": null: full attention)
    _llama("mixtral-8x7b", 32, 4096, 32, 8, 14336, 32000, 32768, theta=1e6,
           n_experts=8, experts_per_token=2),
    # https://huggingface.co/facebook/opt-13b/blob/main/config.json
    ModelConfig(name="opt-13b", n_layers=40, d_model=5120, n_heads=40, d_ff=20480,
                vocab_size=50272, ffn_kind="mlp", activation="relu", tied_embeddings=True,
                norm="layernorm", bias=True, position="learned", max_seq_len=2048,
                learned_positions=2050),
    # https://huggingface.co/openai-community/gpt2 (and -medium, -large, -xl) config.json
    _gpt2("gpt2", 12, 768, 12),
    _gpt2("gpt2-medium", 24, 1024, 16),
    _gpt2("gpt2-large", 36, 1280, 20),
    _gpt2("gpt2-xl", 48, 1600, 25),
    # The course's own small Llama-style configs, sized to run on a laptop CPU.
    # ref-tiny: tests and instant demos (about 0.5 M parameters).
    _llama("ref-tiny", 2, 128, 4, 2, 352, 512, 512),
    # ref-small: the chapters' default measured model (about 20 M parameters).
    _llama("ref-small", 4, 512, 8, 4, 1408, 8000, 2048),
    # ref-medium: weights (about 156 M parameters, 0.62 GB in fp32) far beyond any CPU cache,
    # so batch-1 decode is bound by memory bandwidth.
    _llama("ref-medium", 8, 1024, 16, 4, 2816, 32000, 2048),
    # ref-moe-tiny: a small mixture of experts (4 experts, 2 per token).
    _llama("ref-moe-tiny", 2, 128, 4, 2, 352, 512, 512, n_experts=4, experts_per_token=2),
)


_INDEX = build_index((m.name, m) for m in CATALOG)


def list_models() -> list[str]:
    """Names of the catalog models, in catalog order."""
    return [m.name for m in CATALOG]


def get_model(name: str | ModelConfig) -> ModelConfig:
    """Look up a catalog model, ignoring case and punctuation; a ModelConfig passes through."""
    if isinstance(name, ModelConfig):
        return name
    return lookup("model", name, _INDEX, list_models())
