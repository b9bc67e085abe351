"""Serves one fixed list of requests with vLLM's offline `LLM.generate`, round after round.

Run by `vs_vllm.py` with the Python of a separate virtual environment that holds vLLM's CPU
build (`tools/vllm_env.sh` makes it); the book's own environment never imports vllm, and this
file imports nothing of the book. It reads a JSON spec (path in argv[1]):

    model_dir            a Hugging Face Llama directory (config.json, model.safetensors)
    prompts              one list of token ids per request
    output_tokens        how many tokens each request generates (end of sequence ignored)
    threads              OpenMP/torch threads of the model (OMP_NUM_THREADS)
    max_num_seqs         the most requests in flight, as the engine's max_batch
    max_model_len        the longest prompt + output, in tokens
    kv_cache_gib         VLLM_CPU_KVCACHE_SPACE, GiB of KV cache
    seed                 vLLM's seed (sampling is greedy; it only fixes vLLM's own state)

The protocol: it loads the model, warms it up, then writes one JSON line ("ready", with the
versions and the settings it ran under) on its standard output, and answers each line "run"
on its standard input with one JSON line: the round's makespan, each request's TTFT and
finish time (seconds since the round started) and tokens. Everything vLLM itself prints goes
to standard error (the caller keeps it in a log), so standard output carries only the protocol.

The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), as the book's engine
runs in one, and its threads are not pinned to cores (VLLM_CPU_OMP_THREADS_BIND=nobind), as
torch's are not: both share the machine the same way.
"""
import json
import os
import sys
import time


def set_environment(spec: dict) -> None:
    """vLLM's CPU settings, before vllm (or torch) is imported."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(spec["kv_cache_gib"])
    os.environ["OMP_NUM_THREADS"] = str(spec["threads"])


def kernel_library() -> str:
    """Which of the wheel's three kernel builds vLLM loads on this CPU (as vllm.platforms.cpu
    chooses it)."""
    import torch

    if not torch.cpu._is_avx512_supported():
        return "vllm._C_AVX2 (AVX2)"
    if torch.cpu._is_avx512_bf16_supported():
        return "vllm._C (AVX-512 with BF16)"
    return "vllm._C_AVX512 (AVX-512)"


def one_round(llm, prompts: list, params: list) -> dict:
    """Serve every request once; times in seconds since the call to generate."""
    start = time.monotonic()  # vLLM stamps its engine-core events with time.monotonic()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    makespan_s = time.monotonic() - start
    stats = [o.metrics for o in outputs]
    return {"makespan_s": makespan_s,
            "ttft_s": [s.first_token_ts - start for s in stats],
            "finish_s": [s.last_token_ts - start for s in stats],
            "outputs": [list(o.outputs[0].token_ids) for o in outputs]}


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    set_environment(spec)
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever vLLM or its C++ kernels print goes to standard error

    import torch
    import vllm
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=spec["model_dir"], skip_tokenizer_init=True, dtype="float32",
              max_model_len=spec["max_model_len"], max_num_seqs=spec["max_num_seqs"],
              seed=spec["seed"], disable_log_stats=False)  # log stats: per-request metrics
    prompts = [{"prompt_token_ids": p} for p in spec["prompts"]]
    params = [SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True,
                             detokenize=False) for n in spec["output_tokens"]]
    warm_up = one_round(llm, prompts, params)  # first calls compile for new shapes
    config = llm.llm_engine.vllm_config
    ready = {"ready": True, "vllm": vllm.__version__, "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "kernels": kernel_library(),
             "init_s": time.perf_counter() - start - warm_up["makespan_s"],
             "warm_up_makespan_s": warm_up["makespan_s"],
             "compilation_mode": getattr(config.compilation_config.mode, "name",
                                         str(config.compilation_config.mode)),
             "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
             "block_size": config.cache_config.block_size}
    protocol.write(json.dumps(ready) + "\n")
    protocol.flush()
    for line in sys.stdin:
        if line.strip() != "run":
            break
        protocol.write(json.dumps(one_round(llm, prompts, params)) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
