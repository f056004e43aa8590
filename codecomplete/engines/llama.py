"""Run a GGUF model through llama.cpp: load once, evaluate token ids, stream greedy tokens with stop checks.

We drive llama.cpp's C API token by token ourselves instead of using ``Llama.create_completion`` because the stop
decision (end of block, cancel flag, wall-time budget) must be taken after every token, the prompt must be
exact token ids (FIM special tokens), and the KV cache is reused across requests: only the tokens after the
longest common prefix with what the cache already holds are evaluated.

Each recent document has a sequence of its own in the KV cache (``slots``: llama.cpp sequences with separate KV
streams), so switching between files, or serving several editors, does not throw a document's evaluated prompt
away. Greedy choice is llama.cpp's sampler chain, in C: no logits are copied to Python per token, except while
token healing constrains the first tokens.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import ctypes
import io
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals

from codecomplete.core.interrupt import Interrupt
from codecomplete.errors import ModelLoadError
from codecomplete.types import Generation, ModelInfo, StopCheck, StopReason

_log = logging.getLogger("codecomplete.engines.llama")

# A cached run must be at least this long to be shifted into place rather than evaluated again
# (llama-server's --cache-reuse; shorter runs are cheaper to recompute than to look for).
SHIFT_MIN_TOKENS = 64
# Prompts are evaluated in blocks that start at multiples of this position. llama.cpp's numbers depend slightly
# on how a prompt is split into batches, so a token's KV entry is only identical to a fresh evaluation's when
# it was computed in the same block: reuse keeps whole blocks and re-evaluates from the block the edit is in
# (measured: 21 of 54 typing steps changed a 64-token answer with unaligned reuse, 0 with blocks). Small
# blocks also let a cancel or the time budget be seen every few tokens; they cost ~5 % of throughput.
EVAL_BLOCK_TOKENS = 16
_BATCH_TOKENS = 512  # llama.cpp's batch: our blocks and single generated tokens fit it
# Documents kept side by side in the KV cache by default: as many as this much KV memory holds, 1 to MAX_SLOTS
# (SmolLM2-135M at n_ctx 4096: 94 MB a slot, so 4; Code Llama 7B: 2 GB a slot, so 1).
KV_BUDGET_BYTES = 512 << 20
MAX_SLOTS = 4

_VOCAB_TYPES = {0: "none", 1: "spm", 2: "bpe", 3: "wpm", 4: "ugm", 5: "rwkv", 6: "plamo2"}

# Code Llama's 2023 GGUF conversions have no EOT metadata: llama.cpp reports none and does not treat
# `▁<EOT>` as end-of-generation, so an engine that only stops on EOG runs straight past it.
_EOT_TEXTS = ("▁<EOT>", "<EOT>")
# What llama.cpp logs as errors when an Interrupt stops it (GGML_STATUS_ABORTED, llama_decode's 2): we asked.
_ABORTED = re.compile(r"compute status: 1$|failed to decode, ret = 2$|compute_async failed with error 1$")


def _abort_if_nonempty() -> Any:
    """libc's strlen as llama.cpp's abort callback, on an Interrupt's byte. llama.cpp calls it between graph nodes
    in its own thread: a Python callback would take the GIL hundreds of times per evaluation, strlen says "set?"
    without it (nonzero: abort)."""
    libc = ctypes.cdll.msvcrt if os.name == "nt" else ctypes.CDLL(None)
    return llama_cpp.ggml_abort_callback(ctypes.cast(libc.strlen, ctypes.c_void_p).value)


_ABORT_IF_NONEMPTY = _abort_if_nonempty()
_NEVER = ctypes.create_string_buffer(2)  # the callback's data when a request has no Interrupt


def _none_if_negative(token: int) -> int | None:
    return None if token < 0 else token


@llama_cpp.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log lines, into Python logging: errors only, never onto stdout (the LSP channel)."""
    if level == 4:  # GGML_LOG_LEVEL_ERROR (ggml: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 cont)
        line = text.decode("utf-8", "replace").rstrip()
        _log.log(logging.DEBUG if _ABORTED.search(line) else logging.ERROR, "llama.cpp: %s", line)


llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))


def kv_bytes_per_token(model: Any) -> int:
    """KV cache bytes per token position (K and V, every layer, f16)."""
    n_layer = llama_cpp.llama_model_n_layer(model)
    n_head, n_head_kv = llama_cpp.llama_model_n_head(model), llama_cpp.llama_model_n_head_kv(model)
    head_dim = llama_cpp.llama_model_n_embd(model) // max(1, n_head)
    return 2 * n_layer * n_head_kv * head_dim * 2


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux: MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def compiled_backends() -> list[str]:
    """The llama.cpp backends compiled in, read from llama.cpp's own system info ("CUDA : ... | CPU : ...")."""
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return [m.group(1) for m in re.finditer(r"(?:^|\|)\s*([A-Za-z]+) :", info)]


def gpu_backend() -> str:
    """The accelerator backend layers are offloaded to, or CPU."""
    gpus = [b for b in compiled_backends() if b.upper() != "CPU"]
    return gpus[0] if gpus and llama_cpp.llama_supports_gpu_offload() else "CPU"


class LlamaEngine:
    """One loaded model and its KV cache (an ``Engine``). Thread-safe by serialising every call on one lock."""

    tokenizes_locally = True
    avoids_tokens = True

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        main_gpu: int = 0,
        flash_attn: bool = False,
        slots: int | None = 1,
    ) -> None:
        """``n_ctx`` is each slot's context (a request's prompt and answer); ``slots`` documents keep theirs
        (None: as many as ``KV_BUDGET_BYTES`` hold, 1 to ``MAX_SLOTS``)."""
        path = Path(path)
        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        # Half the logical CPUs (about the physical cores): the editor needs the rest, and llama.cpp's
        # spinning thread barriers slow down badly once its threads outnumber the free cores.
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = n_gpu_layers
        model_params.main_gpu = main_gpu
        self._stack = contextlib.ExitStack()

        def loaded(make: Any) -> Any:
            """A llama.cpp object owned by this engine (freed by ``close``); a failure frees what came before.

            verbose=False would make llama-cpp-python point file descriptors 1 and 2 at /dev/null while loading,
            swallowing whatever the language server writes to stdout meanwhile (an answer to the editor). Logs go
            through _llama_log instead, and the Python-level chatter of verbose mode into a throwaway buffer."""
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    return self._stack.enter_context(contextlib.closing(make()))
            except (ValueError, RuntimeError, OSError) as exc:
                self._stack.close()
                raise ModelLoadError(f"cannot load model {path}: llama.cpp rejected it ({exc})") from None

        self._model = loaded(lambda: _internals.LlamaModel(path_model=str(path), params=model_params, verbose=True))
        per_slot = kv_bytes_per_token(self._model.model) * n_ctx
        if slots is None:
            slots = max(1, min(MAX_SLOTS, KV_BUDGET_BYTES // max(1, per_slot)))
        self._check_fits(path, n_ctx, slots * per_slot)
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx * slots
        ctx_params.n_batch = ctx_params.n_ubatch = _BATCH_TOKENS
        ctx_params.n_seq_max = slots
        ctx_params.kv_unified = False  # a KV stream per document: attention never runs over other documents
        ctx_params.n_threads = ctx_params.n_threads_batch = threads
        ctx_params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                      else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        ctx_params.no_perf = True
        self._ctx = loaded(lambda: _internals.LlamaContext(model=self._model, params=ctx_params, verbose=True))
        self._lock = threading.Lock()
        self._vocab = self._model.vocab
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(_BATCH_TOKENS, 0, 1)
        self._stack.callback(llama_cpp.llama_batch_free, self._batch)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        self._greedy = chain
        self._stack.callback(llama_cpp.llama_sampler_free, chain)
        self.n_ctx = llama_cpp.llama_n_ctx_seq(self._ctx.ctx)
        self.slots = [_Slot(seq) for seq in range(slots)]
        self._clock = itertools.count(1)
        self._text_index: dict[str, int] | None = None
        self._pieces: tuple[list[bytes], list[bytes], list[int], dict[bytes, int]] | None = None
        self.info = self._read_info(path, n_gpu_layers)
        self._piece_table()  # at load, not in the first request's latency
        self._can_shift = self._memory is not None and bool(llama_cpp.llama_memory_can_shift(self._memory))

    def _check_fits(self, path: Path, n_ctx: int, kv_bytes: int) -> None:
        """n_ctx within what the model was trained for, and a KV cache the machine's free memory holds: refused in
        one line before llama.cpp allocates it (an n_ctx of 10^9 grew a daemon's memory without bound)."""
        trained = llama_cpp.llama_model_n_ctx_train(self._model.model)
        problem = None
        if trained > 0 and n_ctx > trained:
            problem = f"n_ctx {n_ctx} is more than {path.name} was trained for ({trained})"
        else:
            free = available_memory()
            if free is not None and kv_bytes > free * 0.8:
                problem = (f"n_ctx {n_ctx} needs {kv_bytes / (1 << 30):.1f} GiB of KV cache and this machine has "
                           f"{free / (1 << 30):.1f} GiB free: lower n_ctx (or kv_slots)")
        if problem is not None:
            self._stack.close()
            raise ModelLoadError(f"cannot load model {path}: {problem}")

    # --- model facts -------------------------------------------------------------------------------

    def _read_info(self, path: Path, n_gpu_layers: int) -> ModelInfo:
        v = self._vocab
        meta = self._model.metadata()
        eot = _none_if_negative(llama_cpp.llama_vocab_eot(v))
        if eot is None:
            eot = next((t for t in map(self.find_token, _EOT_TEXTS) if t is not None), None)
        n_vocab = llama_cpp.llama_vocab_n_tokens(v)
        fim = {
            name: _none_if_negative(getattr(llama_cpp, f"llama_vocab_fim_{name}")(v))
            for name in ("pre", "suf", "mid", "pad", "rep", "sep")
        }
        stops = {t for t in (eot, _none_if_negative(llama_cpp.llama_vocab_eos(v))) if t is not None}
        stops |= {t for t in self._eog_candidates(fim) if llama_cpp.llama_vocab_is_eog(v, t)}
        return ModelInfo(
            path=str(path),
            name=meta.get("general.name") or path.stem,
            architecture=meta.get("general.architecture", "unknown"),
            description=self._model.desc(),
            vocab_type=_VOCAB_TYPES.get(llama_cpp.llama_vocab_type(v), "unknown"),
            n_vocab=n_vocab,
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(self._model.model),
            n_ctx=self.n_ctx,
            bos=_none_if_negative(llama_cpp.llama_vocab_bos(v)),
            eos=_none_if_negative(llama_cpp.llama_vocab_eos(v)),
            add_bos=bool(llama_cpp.llama_vocab_get_add_bos(v)),
            eot=eot,
            fim_pre=fim["pre"],
            fim_suf=fim["suf"],
            fim_mid=fim["mid"],
            fim_pad=fim["pad"],
            fim_rep=fim["rep"],
            fim_sep=fim["sep"],
            stop_ids=frozenset(stops),
            n_gpu_layers=n_gpu_layers,
            backend=gpu_backend() if n_gpu_layers else "CPU",
        )

    def _eog_candidates(self, fim: dict[str, int | None]) -> list[int]:
        """Tokens that llama.cpp may flag as end-of-generation: FIM pad/rep/sep and the well-known stop texts."""
        texts = ("<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<file_sep>", "<｜end▁of▁sentence｜>", "<EOT>")
        found = [fim[k] for k in ("pad", "rep", "sep") if fim[k] is not None]
        found += [t for t in map(self.find_token, texts) if t is not None]
        return found

    def token_text(self, token: int) -> str:
        """The token's text as written in the vocabulary (special tokens included, `▁` kept)."""
        return llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")

    def find_token(self, text: str) -> int | None:
        """The id of the token whose vocabulary text is exactly ``text``; built once on first use."""
        if self._text_index is None:
            n = llama_cpp.llama_vocab_n_tokens(self._vocab)
            index: dict[str, int] = {}
            for i in range(n):
                index.setdefault(self.token_text(i), i)
            self._text_index = index
        return self._text_index.get(text)

    # --- tokens ------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Tokenize without taking the generation lock: the vocabulary is read-only in llama.cpp."""
        if not text and not add_bos:
            return []
        return self._model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for, without llama.cpp's strip of a leading space (lstrip=0)."""
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def detokenize(self, tokens: Sequence[int]) -> str:
        """From the piece table: a ctypes call per token would cost milliseconds on a whole window."""
        pieces = self._piece_table()[0]
        return b"".join(pieces[t] for t in tokens).decode("utf-8", "replace")

    def _piece_table(self) -> tuple[list[bytes], list[bytes], list[int], dict[bytes, int]]:
        """Every token's bytes, also sorted (for prefix ranges) and by value; built once, for token healing."""
        if self._pieces is None:
            pieces = [self.piece(t) for t in range(self.info.n_vocab)]
            order = sorted((i for i, p in enumerate(pieces) if p), key=pieces.__getitem__)
            by_bytes: dict[bytes, int] = {}
            for i in order:
                by_bytes.setdefault(pieces[i], i)
            self._pieces = (pieces, [pieces[i] for i in order], order, by_bytes)
        return self._pieces

    def healing_candidates(self, need: bytes) -> np.ndarray:
        """Tokens that agree with the healed bytes ``need``: those starting with it, and its proper prefixes."""
        pieces, sorted_pieces, order, by_bytes = self._piece_table()
        ids = []
        i = bisect.bisect_left(sorted_pieces, need)
        while i < len(sorted_pieces) and sorted_pieces[i].startswith(need):
            ids.append(order[i])
            i += 1
        ids += [t for j in range(1, len(need)) if (t := by_bytes.get(need[:j])) is not None]
        return np.asarray(ids, dtype=np.int64)

    # --- generation --------------------------------------------------------------------------------

    @property
    def cached_tokens(self) -> int:
        """Tokens the most recently used slot holds (tests and figures)."""
        return len(max(self.slots, key=lambda s: s.used).tokens)

    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_tokens: int,
        time_budget_s: float | None = None,
        cancel: threading.Event | None = None,
        stop: StopCheck | None = None,
        reuse: bool = True,
        shift: bool = False,
        heal: bytes = b"",
        key: str | None = None,
        avoid: frozenset[int] = frozenset(),
    ) -> Generation:
        """Greedy generation after ``prompt``, reusing the KV cache of document ``key`` for the longest common
        prefix; ``max_tokens`` 0 evaluates the prompt only (to have it cached for the requests that follow).

        Checks after every token (and between prompt blocks): the stop ids, ``max_tokens``, the wall-time
        budget, the ``cancel`` flag (set by the LSP layer on ``$/cancelRequest``) and ``stop(text_so_far)``.
        ``heal``: bytes the prompt builder took off the end of the prompt (token healing); the first tokens are
        constrained to reproduce them, and they are not part of the returned text.
        ``avoid``: token ids the answer's first token (the first beyond the healed bytes) may not be: the next
        choice after a rejected answer; the KV cache makes asking again cost one prompt block.
        ``shift``: also reuse cached chunks that moved (see ``_reuse_cache``). Approximate: a shifted chunk keeps
        the attention to whatever preceded it when it was computed, so outputs can differ from a fresh
        evaluation. Prefix reuse alone is exact (see ``EVAL_BLOCK_TOKENS``).
        """
        prompt = list(prompt)
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit the {self.n_ctx}-token context")
        max_tokens = max(0, min(max_tokens, self.n_ctx - len(prompt)))
        flag = cancel.c_flag if isinstance(cancel, Interrupt) else _NEVER
        with self._lock:
            llama_cpp.llama_set_abort_callback(self._ctx.ctx, _ABORT_IF_NONEMPTY, ctypes.addressof(flag))
            try:
                slot = self._slot_for(key or "")
                return self._generate_locked(slot, prompt, max_tokens, time_budget_s, cancel, stop, reuse, shift,
                                             heal, avoid)
            finally:  # the flag may be freed once this request is done
                llama_cpp.llama_set_abort_callback(self._ctx.ctx, _ABORT_IF_NONEMPTY, ctypes.addressof(_NEVER))

    def reusable(self, prompt: Sequence[int], key: str | None = None) -> int:
        slot = next((s for s in self.slots if s.key == (key or "")), None)
        if slot is None:
            return 0
        reused = min(_common_prefix(slot.tokens, prompt), slot.blocks_done) // EVAL_BLOCK_TOKENS * EVAL_BLOCK_TOKENS
        return reused if reused < len(prompt) else (reused - 1) // EVAL_BLOCK_TOKENS * EVAL_BLOCK_TOKENS

    def adopt(self, source: str, target: str) -> None:
        with self._lock:
            slot = next((s for s in self.slots if s.key == source), None)
            if slot is None:
                return
            for other in self.slots:
                if other.key == target:
                    self._forget(other)
                    other.key, other.used = None, 0
            slot.key, slot.used = target, next(self._clock)

    def _slot_for(self, key: str) -> _Slot:
        """The document's own slot, or for a new document the slot used longest ago, emptied."""
        slot = next((s for s in self.slots if s.key == key), None)
        if slot is None:
            slot = min(self.slots, key=lambda s: s.used)
            self._forget(slot)
            slot.key = key
        slot.used = next(self._clock)
        return slot

    def _forget(self, slot: _Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        slot.tokens, slot.blocks_done = [], 0

    def _decode(self, tokens: Sequence[int], slot: _Slot, logits: bool) -> bool:
        """Evaluate ``tokens`` after what ``slot`` holds; False when an Interrupt stopped llama.cpp midway (it
        drops the partial batch from the KV cache itself)."""
        batch = self._batch
        start = len(slot.tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot.seq
            batch.logits[i] = False
        batch.logits[len(tokens) - 1] = logits
        batch.n_tokens = len(tokens)
        status = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if status == 2:  # GGML_STATUS_ABORTED: our Interrupt
            return False
        if status != 0:
            raise RuntimeError(f"llama_decode failed ({status})")
        slot.tokens.extend(tokens)
        return True

    def _generate_locked(self, slot, prompt, max_tokens, time_budget_s, cancel, stop, reuse, shift, heal,
                         avoid) -> Generation:
        start = time.perf_counter()
        deadline = None if time_budget_s is None else start + time_budget_s
        reused, shifted = self._reuse_cache(slot, prompt, shift) if reuse else (0, 0)
        block = EVAL_BLOCK_TOKENS
        if not shifted:  # exact reuse: whole blocks of an earlier prompt evaluation only
            reused = min(reused, slot.blocks_done) // block * block
        if reused == len(prompt) and max_tokens:  # logits of the last prompt token are needed again: redo its block
            reused = (reused - 1) // block * block
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, reused, -1)
        del slot.tokens[reused:]

        def interrupted() -> StopReason | None:
            if cancel is not None and cancel.is_set():
                return StopReason.CANCELLED
            if deadline is not None and time.perf_counter() >= deadline:
                return StopReason.TIME_BUDGET
            return None

        reason: StopReason | None = None
        evaluated = 0
        position = reused
        while position < len(prompt):
            reason = interrupted()
            if reason:
                break
            end = min(len(prompt), (position // block + 1) * block)
            if not self._decode(prompt[position:end], slot, logits=end == len(prompt)):
                reason = StopReason.CANCELLED
                break
            evaluated += end - position
            position = end
        slot.blocks_done = position // block * block  # generated tokens are evaluated one by one: never reused
        prompt_done = time.perf_counter()
        if reason is None and not max_tokens:
            reason = StopReason.MAX_TOKENS

        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = ""
        generated: list[int] = []
        stop_ids = self.info.stop_ids
        eot = self.info.eot
        pieces = self._piece_table()[0]
        while reason is None:
            if heal or avoid:  # constrained (the only times logits are read from Python)
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx.ctx, -1),
                                               shape=(self.info.n_vocab,))
                if avoid:
                    logits = logits.copy()
                    logits[[t for t in avoid if 0 <= t < logits.size]] = -np.inf
                allowed = self.healing_candidates(heal) if heal else np.empty(0, dtype=np.int64)
                if avoid and allowed.size:
                    allowed = allowed[np.isfinite(logits[allowed])]
                token = int(allowed[logits[allowed].argmax()]) if allowed.size else int(logits.argmax())
            else:
                token = llama_cpp.llama_sampler_sample(self._greedy, self._ctx.ctx, -1)
            if token in stop_ids:
                reason = StopReason.EOT if token == eot else StopReason.EOS
                break
            generated.append(token)
            piece = pieces[token]
            if heal:  # still re-typing what the prompt builder took off: emit only what goes beyond it
                taken = min(len(heal), len(piece))
                piece, heal = piece[taken:], heal[taken:]
            if piece:  # the first token of the answer is chosen
                avoid = frozenset()
            text += decoder.decode(piece)
            reason = (stop(text) if stop else None) or interrupted()
            if reason is None and len(generated) >= max_tokens:
                reason = StopReason.MAX_TOKENS
            if reason is None and not self._decode([token], slot, logits=True):
                reason = StopReason.CANCELLED
        text += decoder.decode(b"", final=True)
        end = time.perf_counter()
        return Generation(
            text=text,
            token_ids=generated,
            stop_reason=reason,
            n_prompt=len(prompt),
            n_reused=reused,
            n_evaluated=evaluated,
            n_shifted=min(shifted, reused),
            timings_ms={
                "prompt_eval": (prompt_done - start) * 1000,
                "generate": (end - prompt_done) * 1000,
            },
        )

    def _reuse_cache(self, slot: _Slot, prompt: list[int], shift: bool) -> tuple[int, int]:
        """How much of ``prompt`` the slot's KV cache already holds: the common prefix, then chunks that moved.

        Like llama-server's cache reuse: after the common prefix, runs of at least ``SHIFT_MIN_TOKENS``
        cached tokens that reappear later or earlier in the prompt (a window start that moved, lines inserted
        above the cursor) are shifted to their new positions (RoPE positions updated by llama.cpp) instead of
        being evaluated again. Returns (tokens now in place, of which shifted).
        """
        cached = slot.tokens
        head = _common_prefix(cached, prompt)
        mem = self._memory
        if not shift or mem is None or not self._can_shift or head >= len(prompt):
            return head, 0
        head_c = head_p = head
        shifted = 0
        placed = list(cached[:head])
        while head_c < len(cached) and head_p < len(prompt):
            n = 0
            while head_c + n < len(cached) and head_p + n < len(prompt) and cached[head_c + n] == prompt[head_p + n]:
                n += 1
            if n >= SHIFT_MIN_TOKENS:
                llama_cpp.llama_memory_seq_rm(mem, slot.seq, head_p, head_c)
                llama_cpp.llama_memory_seq_add(mem, slot.seq, head_c, head_c + n, head_p - head_c)
                placed[head_p:] = cached[head_c : head_c + n]
                head_p += n
                head_c += n
                shifted += n
            else:
                head_c += 1
        slot.tokens = placed
        return head_p, shifted

    def reset_cache(self) -> None:
        """Forget the KV cache (the baseline in benchmarks; tests comparing reuse against a fresh run)."""
        with self._lock:
            llama_cpp.llama_memory_clear(self._memory, True)
            for slot in self.slots:
                slot.tokens, slot.blocks_done, slot.key = [], 0, None

    def close(self) -> None:
        with self._lock:
            self._stack.close()


@dataclass
class _Slot:
    """A document's sequence in the KV cache: what it holds, and how much of that is whole prompt blocks."""

    seq: int
    key: str | None = None
    tokens: list[int] = field(default_factory=list)
    blocks_done: int = 0  # leading positions evaluated in whole prompt blocks (exactly reusable)
    used: int = 0  # when it last served a request (larger is later)


def _common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    n = min(len(cached), len(prompt))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(cached[:n]) != np.asarray(prompt[:n]))
    return int(diff[0]) if diff.size else n
