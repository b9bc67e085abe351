"""A serving engine: the simulator's driver loop and scheduler on the reference model.

Three parts, each with one job (the layout of nano-vllm):
- the driver loop and `Scheduler` of `llmperf.serving`, shared with `simulate`, decide every
  iteration: whom to admit into which slot, which prompt chunks to prefill, which requests
  decode; only the clock differs (here the wall clock, read once the model has run);
- a `ModelRunner` only runs: a prompt chunk of one request, in its slot of a KV cache
  preallocated for `max_batch` sequences, or one decode step of many requests together,
  each row at its own position;
- a `llmperf.serving.Sequence`, the scheduler's own, holds each request's state: its
  prompt, its slot, the tokens it has generated.

One iteration runs each prefill chunk alone (batch 1), then one decode step of every
decoding request, then samples every new token and waits for the device once. So a newly
admitted prompt delays that iteration's decode step of the running batch: the prefill
stall that chunked prefill bounds. Every output has exactly the requested length (the end
of sequence is ignored, as published serving studies do). `Engine.run` returns the
simulator's `RunResult`, stamped with wall-clock seconds since the run started.

    engine = Engine(Transformer("ref-tiny"), max_batch=4, policy="continuous")
    run = engine.run([Request(0.0, 8, 5), Request(0.0, 3, 2)])
    run.makespan_s, engine.outputs[1]        # seconds; the two tokens of request 1
"""
from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from ..serving import (
    Batch,
    Clock,
    PagedMemory,
    Request,
    RunResult,
    Scheduler,
    Sequence,
    WallClock,
    check_requests,
    make_memory,
    serve,
)
from ..serving.paging import blocks_needed
from ..units import check_non_negative
from .cache import KVCache, PagedKVCache
from .device import synchronize
from .generate import check_sampling, prompt_tensor, sample_next
from .model import Transformer, check_model


class ModelRunner:
    """Runs the model on a KV cache of `max_batch` slots of `max_seq_len` positions each, or,
    given a paged `memory`, on a `PagedKVCache` whose block tables that memory keeps."""

    def __init__(self, model: Transformer, max_batch: int, max_seq_len: int,
                 memory: PagedMemory | None = None, kv_dtype: str | None = None) -> None:
        self.model = model
        if memory is None:
            self.cache = KVCache(model, max_batch, max_seq_len)
        else:
            self.cache = PagedKVCache(model, memory.allocator, kv_dtype)

    def _view(self, seqs: list[Sequence], starts: list[int], tokens: int):
        if isinstance(self.cache, KVCache):
            return self.cache.slots([s.slot for s in seqs], max(starts) + tokens)
        return self.cache.view([s.id for s in seqs], starts, tokens)

    def prefill(self, seq: Sequence, start: int, tokens: int) -> torch.Tensor:
        """Tokens start..start+tokens-1 of `seq` (its prompt, and after a preemption the
        tokens it had generated) into its cache; the last logits (V,)."""
        chunk = torch.tensor([seq.tokens[start:start + tokens]], device=self.model.device)
        view = self._view([seq], [start], tokens)
        return self.model(chunk, start, view, last_only=True)[0, -1]

    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """One step of every sequence in `seqs`, each at its own position; logits (B, V)."""
        dev = self.model.device
        tokens = torch.tensor([[s.output[-1]] for s in seqs], device=dev)
        positions = [s.position for s in seqs]
        view = self._view(seqs, positions, 1)
        # rows all at one position take the model's plain path; otherwise per-row positions
        start = positions[0] if len(set(positions)) == 1 else torch.tensor(positions, device=dev)
        return self.model(tokens, start, view)[:, -1]


class Engine:
    """Serves a list of Requests on `model` under one policy of `llmperf.serving`.

    policy, max_batch and token_budget mean what they mean to `simulate`. temperature 0 is
    greedy; above 0, request i samples (with top_k) from a generator seeded with seed + i,
    so its tokens are those of `generate(model, prompt_i, n, temperature, top_k, seed + i)`.
    After `run`: `outputs[i]`, request i's tokens, and `step_samples`, one (tokens processed,
    KV tokens read, seconds) per iteration, to fit `fit_linear_step_time` to this machine.

    kv_memory "reservation" (the default) runs on a contiguous `KVCache` of max_batch slots,
    each as long as the longest request, and every running request holds a whole slot;
    "paged" on a `llmperf.measured.cache.PagedKVCache` of
    blocks of `block_size` tokens, with the simulator's paged policy and its preemptions.
    kv_capacity_tokens bounds either (None: reservation unbounded; paged, enough blocks for
    max_batch of the longest request). kv_dtype "int8" stores the paged cache in int8.
    """

    def __init__(self, model: Transformer, max_batch: int = 8, policy: str = "continuous",
                 token_budget: int | None = None, temperature: float = 0.0,
                 top_k: int | None = None, seed: int = 0, kv_memory: str = "reservation",
                 block_size: int = 16, kv_capacity_tokens: int | None = None,
                 kv_dtype: str | None = None) -> None:
        check_model(model)
        Scheduler(policy, max_batch, token_budget)  # checks the three, as `simulate` would
        make_memory(kv_memory, kv_capacity_tokens, block_size)  # checks these
        if kv_dtype not in (None, "int8") or (kv_dtype and kv_memory != "paged"):
            raise ValueError(f"kv_dtype must be None, or 'int8' with kv_memory 'paged', got "
                             f"{kv_dtype!r} with {kv_memory!r}")
        check_sampling(temperature, top_k, model.config.vocab_size)
        check_non_negative("seed", seed, integer=True)
        self.model, self.max_batch, self.policy = model, int(max_batch), policy
        self.token_budget, self.temperature, self.top_k = token_budget, temperature, top_k
        self.seed = int(seed)
        self.kv_memory, self.block_size, self.kv_dtype = kv_memory, int(block_size), kv_dtype
        self.kv_capacity_tokens = kv_capacity_tokens
        self.outputs: list[list[int]] = []
        self.step_samples: list[tuple[int, int, float]] = []
        self.cache_bytes = 0
        self.peak_kv_held_bytes = 0

    def _memory(self, max_len: int):
        """Reservation: each request holds a whole slot of max_len positions, as the
        contiguous cache lays them out; paged: blocks as the request's tokens arrive."""
        capacity = self.kv_capacity_tokens
        if self.kv_memory == "reservation":  # reservations count the never-cached last token
            return make_memory("reservation", capacity, reserve_tokens=max_len + 1)
        if capacity is None:
            capacity = self.max_batch * blocks_needed(max_len, self.block_size) * self.block_size
        return make_memory("paged", capacity, self.block_size)

    @torch.inference_mode()
    def run(self, requests: Seq[Request], prompts: Seq[Seq[int]] | None = None,
            clock: Clock | None = None) -> RunResult:
        """Serve `requests`, each arriving `arrival_s` seconds after the start.

        prompts: request i's prompt token ids (prompt_tokens of them); None draws random
        ones from `seed`. clock: None, the wall clock (seconds since the run started, read
        once each iteration has run on the model); a `llmperf.serving.SimulatedClock` runs
        the model but stamps the simulator's times instead, which makes the schedule of
        requests arriving at different times reproducible. Returns the `RunResult`,
        requests in the order given.
        """
        requests = check_requests(requests, self.model.max_seq_len,
                                  "the model's max_seq_len")
        seqs = self._sequences(requests, prompts)
        max_len = max(r.total_tokens for r in requests) - 1  # the last token is never cached
        memory = self._memory(max_len)
        paged = memory if isinstance(memory, PagedMemory) else None
        runner = ModelRunner(self.model, self.max_batch, max_len, paged, self.kv_dtype)
        scheduler = Scheduler(self.policy, self.max_batch, self.token_budget, memory)
        sizes = []

        def execute(batch: Batch) -> None:
            self._step(runner, batch, seqs)
            sizes.append((batch.tokens, batch.kv_tokens))

        result = serve(seqs, scheduler, WallClock() if clock is None else clock, execute)
        self.step_samples = [(tokens, kv_tokens, it.duration_s)
                             for (tokens, kv_tokens), it in zip(sizes, result.iterations)]
        self.outputs = [s.output for s in seqs]
        self.cache_bytes = runner.cache.nbytes
        # held slots (each reserving max_len + 1 tokens) or blocks, at their bytes in the cache
        per_token = self.cache_bytes / ((max_len + 1) * self.max_batch if paged is None else
                                        paged.allocator.num_blocks * self.block_size)
        self.peak_kv_held_bytes = int(result.peak_kv_held_tokens * per_token)
        return result

    def _step(self, runner: ModelRunner, batch: Batch, seqs: list[Sequence]) -> None:
        """Run one iteration and append each new token to its sequence. A preempted
        sequence keeps its tokens: its next prefill recomputes them (`seq.tokens`)."""
        done, logits = [], []
        for chunk in batch.prefill:
            seq = seqs[chunk.request_id]
            last = runner.prefill(seq, chunk.start_tokens, chunk.tokens)
            if chunk.completes_prompt:  # its first token comes from the prompt's last logits
                done.append(seq)
                logits.append(last[None])
        if batch.decode:
            decoding = [seqs[i] for i in batch.decode]
            done += decoding
            logits.append(runner.decode(decoding))
        if not done:  # only chunks that leave their prompt unfinished
            synchronize(self.model.device)
            return
        rows = torch.cat(logits)
        if self.temperature == 0.0:
            new = rows.float().argmax(dim=-1)
        else:
            new = torch.cat([sample_next(rows[b:b + 1], self.temperature, self.top_k,
                                         seq.generator) for b, seq in enumerate(done)])
        for seq, token in zip(done, new.tolist()):  # .tolist() waits for the device
            seq.output.append(token)

    def _sequences(self, requests: list[Request],
                   prompts: Seq[Seq[int]] | None) -> list[Sequence]:
        """A Sequence per request, with its prompt ids and its own seeded generator."""
        vocab, dev = self.model.config.vocab_size, self.model.device
        if prompts is None:
            gen = torch.Generator().manual_seed(self.seed)
            prompts = [torch.randint(0, vocab, (r.prompt_tokens,), generator=gen).tolist()
                       for r in requests]
        else:
            prompts = list(prompts)
            if len(prompts) != len(requests):
                raise ValueError(f"prompts must hold one prompt per request ({len(requests)}), "
                                 f"got {len(prompts)}")
            prompts = [prompt_tensor(p, vocab)[0].tolist() for p in prompts]
            for i, (p, r) in enumerate(zip(prompts, requests)):
                if len(p) != r.prompt_tokens:
                    raise ValueError(f"prompts[{i}] has {len(p)} tokens, requests[{i}] says "
                                     f"prompt_tokens={r.prompt_tokens}")
        return [Sequence(i, r, p, torch.Generator(device=dev).manual_seed(self.seed + i))
                for i, (r, p) in enumerate(zip(requests, prompts))]
