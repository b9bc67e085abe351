"""A serving engine: the simulator's driver loop and scheduler on the reference model.

Three parts, each with one job (the layout of nano-vllm):
- the driver loop and `Scheduler` of `llmperf.serving`, shared with `simulate`, decide every
  iteration: whom to admit, which prompt chunks to prefill, which requests decode; only the
  clock differs (here the wall clock, read once the model has run);
- a `ModelRunner` only runs: ONE forward pass per iteration over the iteration's tokens,
  every prefill chunk and every decode token flattened into one ragged batch (the varlen
  layout: per-token positions, no padding), each request attending to its own context only;
- a `llmperf.serving.Sequence`, the scheduler's own, holds each request's state: its
  prompt, its slot, the tokens it has generated.

After the pass, every request that completed its prompt or decoded samples its next token;
one that drew a stop token (`stop_tokens`) finishes there, keeping it as its last output
token, and a request that reaches its `output_tokens` (the most it may generate) finishes
too. The scheduler is told which stopped (`Scheduler.finish_early`); it never needs a
request's real length. `Engine.run` returns the simulator's `RunResult`, stamped with
wall-clock seconds since the run started.

    engine = Engine(Transformer("ref-tiny"), max_batch=4, policy="continuous")
    run = engine.run([Request(0.0, 8, 5), Request(0.0, 3, 2)])
    run.makespan_s, engine.outputs[1]        # seconds; the two tokens of request 1
"""
from __future__ import annotations

import operator
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import replace

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
from .generate import check_sampling, prompt_tensor, sample_next
from .model import Transformer, check_model
from .varlen import DECODE_KERNELS, RaggedBatch


class ModelRunner:
    """Runs one iteration as one forward pass of the model over a ragged batch.

    The KV store is a `KVCache` of `max_batch` rows of `max_seq_len` positions, a request
    in the row of its slot, or, given a paged `memory`, a `PagedKVCache` whose block tables
    that memory keeps (a request under its own id). Either way each request attends to its
    own context only (`llmperf.measured.varlen.RaggedBatch`).
    """

    def __init__(self, model: Transformer, max_batch: int, max_seq_len: int,
                 memory: PagedMemory | None = None, kv_dtype: str | None = None,
                 decode: str = "per_piece") -> None:
        self.model, self.decode = model, decode
        if memory is None:
            self.cache = KVCache(model, max_batch, max_seq_len)
        else:
            self.cache = PagedKVCache(model, memory.allocator, kv_dtype)
        self.forward_passes = 0
        self.last_batch: RaggedBatch | None = None

    def run(self, pieces: list[tuple[Sequence, int, int]]) -> torch.Tensor:
        """Tokens start..start+n-1 of each (seq, start, n) -- a prompt chunk (after a
        preemption, the prompt and the tokens it had generated), or n = 1, the last
        generated token -- through the model at once; the logits of each piece's last
        token, (pieces, vocab)."""
        paged = isinstance(self.cache, PagedKVCache)
        batch = RaggedBatch(self.cache, [(seq.id if paged else seq.slot, start, n)
                                         for seq, start, n in pieces], self.decode)
        ids = [t for seq, start, n in pieces for t in seq.tokens[start:start + n]]
        tokens = torch.tensor([ids], device=self.model.device)
        self.forward_passes += 1
        self.last_batch = batch
        return self.model(tokens, batch.positions, batch, last_only=True)


class Engine:
    """Serves a list of Requests on `model` under one policy of `llmperf.serving`.

    policy, max_batch and token_budget mean what they mean to `simulate`. temperature 0 is
    greedy; above 0, request i samples (with top_k) from a generator seeded with seed + i,
    so its tokens are those of `generate(model, prompt_i, n, temperature, top_k, seed + i)`.
    After `run`: `outputs[i]`, request i's tokens; `step_samples`, one (tokens processed,
    KV tokens read, seconds, after_idle) per iteration, to fit `fit_linear_step_time` to
    this machine;
    `keys_attended`, per iteration the keys each row (prefill chunk, then decode) attended.

    stop_tokens: token ids that end a request (kept as its last output token); a request
    also ends at its `output_tokens`, the most it may generate. The scheduler learns of a
    stop when it happens, as a real server does.

    kv_memory "reservation" (the default) runs on a contiguous `KVCache` of max_batch slots,
    each as long as the longest request may grow (prompt plus cap), and every running
    request holds a whole slot; "paged" on a `llmperf.measured.cache.PagedKVCache` of
    blocks of `block_size` tokens, with the simulator's paged policy and its preemptions.
    kv_capacity_tokens bounds either (None: reservation unbounded; paged, enough blocks for
    max_batch of the longest request). kv_dtype "int8" stores the paged cache in int8.
    prefix_caching (paged only): full prompt blocks stay cached by a hash of their tokens
    and of everything before them, so a request whose prompt starts like an earlier one
    computes only the rest (`RunResult.prefix_hit_rate`); blocks of finished requests are
    evicted least recently used first, when memory is needed.
    decode: how the decode rows attend (`llmperf.measured.varlen`): "per_piece", each on its
    own (a paged request's scattered blocks gathered once per layer), or "compiled", all in
    one gather-and-attend compiled by torch.compile that reads the blocks in place (its
    first call in a process compiles it, seconds).
    """

    def __init__(self, model: Transformer, max_batch: int = 8, policy: str = "continuous",
                 token_budget: int | None = None, temperature: float = 0.0,
                 top_k: int | None = None, seed: int = 0, kv_memory: str = "reservation",
                 block_size: int = 16, kv_capacity_tokens: int | None = None,
                 kv_dtype: str | None = None, stop_tokens: Iterable[int] = (),
                 prefix_caching: bool = False, decode: str = "per_piece") -> None:
        check_model(model)
        Scheduler(policy, max_batch, token_budget)  # checks the three, as `simulate` would
        make_memory(kv_memory, kv_capacity_tokens, block_size,  # checks these
                    prefix_caching=prefix_caching)
        if kv_dtype not in (None, "int8") or (kv_dtype and kv_memory != "paged"):
            raise ValueError(f"kv_dtype must be None, or 'int8' with kv_memory 'paged', got "
                             f"{kv_dtype!r} with {kv_memory!r}")
        check_sampling(temperature, top_k, model.config.vocab_size)
        check_non_negative("seed", seed, integer=True)
        self.stop_tokens = check_stop_tokens(stop_tokens, model.config.vocab_size)
        if decode not in DECODE_KERNELS:
            raise ValueError(f"decode must be one of {DECODE_KERNELS}, got {decode!r}")
        self.prefix_caching, self.decode = prefix_caching, decode
        self.model, self.max_batch, self.policy = model, int(max_batch), policy
        self.token_budget, self.temperature, self.top_k = token_budget, temperature, top_k
        self.seed = int(seed)
        self.kv_memory, self.block_size, self.kv_dtype = kv_memory, int(block_size), kv_dtype
        self.kv_capacity_tokens = kv_capacity_tokens
        self.outputs: list[list[int]] = []
        self.step_samples: list[tuple[int, int, float, bool]] = []
        self.keys_attended: list[list[int]] = []
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
        return make_memory("paged", capacity, self.block_size,
                           prefix_caching=self.prefix_caching)

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
        runner = ModelRunner(self.model, self.max_batch, max_len, paged, self.kv_dtype,
                             self.decode)
        scheduler = Scheduler(self.policy, self.max_batch, self.token_budget, memory)
        sizes = []

        self.keys_attended = []

        def execute(batch: Batch) -> None:
            self._step(runner, scheduler, batch, seqs)
            sizes.append((batch.tokens, batch.kv_tokens))
            self.keys_attended.append(runner.last_batch.keys_attended)

        result = serve(seqs, scheduler, WallClock() if clock is None else clock, execute)
        self.step_samples = [(tokens, kv_tokens, it.duration_s, it.after_idle)
                             for (tokens, kv_tokens), it in zip(sizes, result.iterations)]
        self.outputs = [s.output for s in seqs]
        self.cache_bytes = runner.cache.nbytes
        # held slots (each reserving max_len + 1 tokens) or blocks, at their bytes in the cache
        per_token = self.cache_bytes / ((max_len + 1) * self.max_batch if paged is None else
                                        paged.allocator.num_blocks * self.block_size)
        self.peak_kv_held_bytes = int(result.peak_kv_held_tokens * per_token)
        return result

    def _step(self, runner: ModelRunner, scheduler: Scheduler, batch: Batch,
              seqs: list[Sequence]) -> None:
        """Run one iteration in one forward pass and append each new token to its
        sequence; tell the scheduler which drew a stop token. A preempted sequence keeps
        its tokens: its next prefill recomputes them (`seq.tokens`)."""
        pieces = [(seqs[c.request_id], c.start_tokens, c.tokens) for c in batch.prefill]
        pieces += [(seqs[i], seqs[i].position, 1) for i in batch.decode]
        logits = runner.run(pieces)
        # rows that yield a token: chunks that complete their prompt, and every decode
        rows = [r for r, c in enumerate(batch.prefill) if c.completes_prompt]
        rows += range(len(batch.prefill), len(pieces))
        if not rows:  # only chunks that leave their prompt unfinished
            return
        logits = logits[rows]
        done = [pieces[r][0] for r in rows]
        if self.temperature == 0.0:
            new = logits.float().argmax(dim=-1)
        else:
            new = torch.cat([sample_next(logits[b:b + 1], self.temperature, self.top_k,
                                         seq.generator) for b, seq in enumerate(done)])
        for seq, token in zip(done, new.tolist()):  # .tolist() waits for the device
            seq.output.append(token)
            if token in self.stop_tokens and len(seq.output) < seq.request.output_tokens:
                scheduler.finish_early(seq.id)

    def _sequences(self, requests: list[Request],
                   prompts: Seq[Seq[int]] | None) -> list[Sequence]:
        """A Sequence per request, with its prompt ids and its own seeded generator."""
        vocab, dev = self.model.config.vocab_size, self.model.device
        if prompts is None and all(r.prompt_ids is not None for r in requests):
            prompts = [r.prompt_ids for r in requests]
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
        if self.prefix_caching:  # the memory hashes each prompt's blocks from its ids
            requests = [replace(r, prompt_ids=tuple(p)) for r, p in zip(requests, prompts)]
        return [Sequence(i, r, p, torch.Generator(device=dev).manual_seed(self.seed + i))
                for i, (r, p) in enumerate(zip(requests, prompts))]


def check_stop_tokens(stop_tokens: Iterable[int], vocab_size: int) -> frozenset[int]:
    """`stop_tokens` as a frozenset of token ids in [0, vocab_size)."""
    if isinstance(stop_tokens, (int, str, bytes)) or not isinstance(stop_tokens, Iterable):
        raise ValueError(f"stop_tokens must be a collection of token ids, got {stop_tokens!r}")
    ids = set()
    for t in stop_tokens:
        try:
            token = operator.index(t)
        except TypeError:
            token = None
        if isinstance(t, bool) or token is None or not 0 <= token < vocab_size:
            raise ValueError(f"stop_tokens must hold token ids in [0, {vocab_size}), got {t!r}")
        ids.add(token)
    return frozenset(ids)
