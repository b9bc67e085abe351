"""Hugging Face Llama weights to and from the reference model (tests and benchmarks use it).

Names and shapes are those of transformers' `LlamaForCausalLM`. The reference model
stores Wq, Wk, Wv as one matrix `wqkv` and the SwiGLU gate and up matrices as one
matrix `w13`; here they are split apart and joined back along the output dimension.
transformers itself is needed only by `llama_config`.
"""
from __future__ import annotations

import torch

from ..models import ModelConfig, get_model
from .model import Transformer

_QKV = ("q_proj", "k_proj", "v_proj")


def llama_config(config: ModelConfig | str):
    """A transformers.LlamaConfig with the shapes of a dense, Llama-style `config`."""
    import transformers

    c = get_model(config)
    if c.is_moe:
        raise ValueError(f"config must be a dense model for LlamaConfig, got {c.name} with "
                         f"{c.n_experts} experts")
    return transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, head_dim=c.d_head,
        max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta, tie_word_embeddings=c.tied_embeddings,
        attention_bias=c.bias, mlp_bias=c.bias)


def _layer_tensors(model: Transformer, i: int, kind: str) -> dict[str, torch.Tensor]:
    """One layer's `kind` ("weight" or "bias") tensors under Llama's names (views, no copies)."""
    c, layer = model.config, model.layers[i]
    attn, ffn = layer.attention, layer.feed_forward
    qkv = getattr(attn.wqkv, kind).split([c.q_dim, c.kv_dim, c.kv_dim])
    gate, up = getattr(ffn.w13, kind).chunk(2)
    out = {f"self_attn.{name}": t for name, t in zip(_QKV, qkv)}
    out |= {"self_attn.o_proj": getattr(attn.wo, kind), "mlp.gate_proj": gate,
            "mlp.up_proj": up, "mlp.down_proj": getattr(ffn.w2, kind)}
    if kind == "weight":
        out |= {"input_layernorm": layer.attention_norm.weight,
                "post_attention_layernorm": layer.ffn_norm.weight}
    return {f"model.layers.{i}.{name}.{kind}": t for name, t in out.items()}


def _named_views(model: Transformer) -> dict[str, torch.Tensor]:
    if model.config.is_moe:
        raise ValueError("model must be dense: MoE models have no LlamaForCausalLM layout")
    out = {"model.embed_tokens.weight": model.tok_embeddings.weight,
           "model.norm.weight": model.norm.weight}
    if model.output is not None:
        out["lm_head.weight"] = model.output.weight
    kinds = ("weight", "bias") if model.config.bias else ("weight",)
    for i in range(model.config.n_layers):
        for kind in kinds:
            out |= _layer_tensors(model, i, kind)
    return out


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's weights under the names and shapes of transformers' LlamaForCausalLM (copies)."""
    return {name: t.detach().clone() for name, t in _named_views(model).items()}


@torch.no_grad()
def load_hf_state_dict(model: Transformer, state: dict[str, torch.Tensor]) -> None:
    """Copy weights named and shaped as in LlamaForCausalLM into `model` (the inverse of
    `to_hf_state_dict`); ValueError naming a missing or misshapen tensor."""
    views = _named_views(model)
    missing = sorted(set(views) - set(state))
    if missing:
        raise ValueError(f"state is missing {len(missing)} tensors, e.g. {missing[:3]}")
    for name, view in views.items():
        if tuple(state[name].shape) != tuple(view.shape):
            raise ValueError(f"state[{name!r}] has shape {tuple(state[name].shape)}, "
                             f"expected {tuple(view.shape)}")
    for name, view in views.items():
        view.copy_(state[name])  # views of the fused matrices write through to them
