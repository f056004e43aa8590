"""Run a GGUF model through llama.cpp: load once, evaluate token ids, stream greedy tokens with stop checks.

We drive llama.cpp token by token ourselves instead of using ``Llama.create_completion`` because the stop
decision (end of block, cancel flag, wall-time budget) must be taken after every token, the prompt must be
exact token ids (FIM special tokens), and the KV cache is reused across requests: only the tokens after the
longest common prefix with what the cache already holds are evaluated.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import ctypes
import io
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

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

_VOCAB_TYPES = {0: "none", 1: "spm", 2: "bpe", 3: "wpm", 4: "ugm", 5: "rwkv", 6: "plamo2"}

# Code Llama's 2023 GGUF conversions have no EOT metadata: llama.cpp reports none and does not treat
# `▁<EOT>` as end-of-generation, so an engine that only stops on EOG runs straight past it.
_EOT_TEXTS = ("▁<EOT>", "<EOT>")
# What llama.cpp logs as errors when an Interrupt stops it (GGML_STATUS_ABORTED, llama_decode's 2): we asked.
_ABORTED = re.compile(r"compute status: 1$|failed to decode, ret = 2$")


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

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        n_batch: int = 512,
        main_gpu: int = 0,
        flash_attn: bool = False,
    ) -> None:
        path = Path(path)
        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        # Half the logical CPUs (about the physical cores): the editor needs the rest, and llama.cpp's
        # spinning thread barriers slow down badly once its threads outnumber the free cores.
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        # verbose=False would make llama-cpp-python point file descriptors 1 and 2 at /dev/null while loading,
        # swallowing whatever the language server writes to stdout meanwhile. Logs go through _llama_log
        # instead, and the Python-level chatter of verbose mode into a throwaway buffer.
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                self._llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=n_gpu_layers,
                    main_gpu=main_gpu,
                    flash_attn=flash_attn,
                    verbose=True,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot load model {path}: llama.cpp rejected it ({exc})") from None
        self._llm.verbose = False
        self._lock = threading.Lock()
        self._blocks_done = 0  # leading cache positions evaluated in whole prompt blocks (exactly reusable)
        self._vocab = self._llm._model.vocab
        self._text_index: dict[str, int] | None = None
        self._pieces: tuple[list[bytes], list[bytes], list[int], dict[bytes, int]] | None = None
        self.info = self._read_info(path, n_gpu_layers)
        self._piece_table()  # at load, not in the first request's latency
        mem = self._llm._ctx.memory
        self._can_shift = mem is not None and bool(llama_cpp.llama_memory_can_shift(mem))

    # --- model facts -------------------------------------------------------------------------------

    def _read_info(self, path: Path, n_gpu_layers: int) -> ModelInfo:
        v = self._vocab
        meta = self._llm.metadata
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
            description=self._llm._model.desc(),
            vocab_type=_VOCAB_TYPES.get(llama_cpp.llama_vocab_type(v), "unknown"),
            n_vocab=n_vocab,
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(self._llm.model),
            n_ctx=self._llm.n_ctx(),
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
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

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
        return self._llm.n_tokens

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
    ) -> Generation:
        """Greedy generation after ``prompt``, reusing the KV cache for the longest common prefix.

        Checks after every token (and between prompt batches): the stop ids, ``max_tokens``, the wall-time
        budget, the ``cancel`` flag (set by the LSP layer on ``$/cancelRequest``) and ``stop(text_so_far)``.
        ``heal``: bytes the prompt builder took off the end of the prompt (token healing); the first tokens are
        constrained to reproduce them, and they are not part of the returned text.
        ``shift``: also reuse cached chunks that moved (see ``_reuse_cache``). Approximate: a shifted chunk keeps
        the attention to whatever preceded it when it was computed, so outputs can differ from a fresh
        evaluation. Prefix reuse alone is exact (see ``EVAL_BLOCK_TOKENS``).
        """
        prompt = list(prompt)
        if not prompt:
            raise ValueError("empty prompt")
        n_ctx = self._llm.n_ctx()
        if len(prompt) >= n_ctx:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit the {n_ctx}-token context")
        max_tokens = min(max_tokens, n_ctx - len(prompt))
        flag = cancel.c_flag if isinstance(cancel, Interrupt) else _NEVER
        with self._lock:
            llama_cpp.llama_set_abort_callback(self._llm._ctx.ctx, _ABORT_IF_NONEMPTY, ctypes.addressof(flag))
            try:
                return self._generate_locked(prompt, max_tokens, time_budget_s, cancel, stop, reuse, shift, heal)
            finally:  # the flag may be freed once this request is done
                llama_cpp.llama_set_abort_callback(self._llm._ctx.ctx, _ABORT_IF_NONEMPTY, ctypes.addressof(_NEVER))

    def _eval(self, tokens: list[int], cancel: threading.Event | None) -> bool:
        """Evaluate ``tokens``; False when an Interrupt stopped llama.cpp midway (it drops the partial batch from
        the KV cache itself, and ``n_tokens`` has not moved)."""
        try:
            self._llm.eval(tokens)
        except RuntimeError:
            if cancel is not None and cancel.is_set():
                return False
            raise
        return True

    def _generate_locked(self, prompt, max_tokens, time_budget_s, cancel, stop, reuse, shift, heal) -> Generation:
        llm = self._llm
        start = time.perf_counter()
        deadline = None if time_budget_s is None else start + time_budget_s
        reused, shifted = self._reuse_cache(prompt, shift) if reuse else (0, 0)
        block = EVAL_BLOCK_TOKENS
        if not shifted:  # exact reuse: whole blocks of an earlier prompt evaluation only
            reused = min(reused, self._blocks_done) // block * block
        if reused == len(prompt):  # logits of the last prompt token are needed again: redo its block
            reused = (reused - 1) // block * block
        llm.n_tokens = reused

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
            if not self._eval(prompt[position:end], cancel):
                reason = StopReason.CANCELLED
                break
            evaluated += end - position
            position = end
        self._blocks_done = position // block * block  # generated tokens are evaluated one by one: never reused
        prompt_done = time.perf_counter()

        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = ""
        generated: list[int] = []
        stop_ids = self.info.stop_ids
        eot = self.info.eot
        n_vocab = self.info.n_vocab
        while reason is None:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
            if heal:
                allowed = self.healing_candidates(heal)
                token = int(allowed[logits[allowed].argmax()]) if allowed.size else int(logits.argmax())
            else:
                token = int(logits.argmax())
            if token in stop_ids:
                reason = StopReason.EOT if token == eot else StopReason.EOS
                break
            generated.append(token)
            piece = self.piece(token)
            if heal:  # still re-typing what the prompt builder took off: emit only what goes beyond it
                taken = min(len(heal), len(piece))
                piece, heal = piece[taken:], heal[taken:]
            text += decoder.decode(piece)
            reason = (stop(text) if stop else None) or interrupted()
            if reason is None and len(generated) >= max_tokens:
                reason = StopReason.MAX_TOKENS
            if reason is None and not self._eval([token], cancel):
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

    def _reuse_cache(self, prompt: list[int], shift: bool) -> tuple[int, int]:
        """How much of ``prompt`` the KV cache already holds: the common prefix, then chunks that moved.

        Like llama-server's cache reuse: after the common prefix, runs of at least ``SHIFT_MIN_TOKENS``
        cached tokens that reappear later or earlier in the prompt (a window start that moved, lines inserted
        above the cursor) are shifted to their new positions (RoPE positions updated by llama.cpp) instead of
        being evaluated again. Returns (tokens now in place, of which shifted).
        """
        llm = self._llm
        head = self._common_prefix(prompt)
        mem = llm._ctx.memory
        if not shift or mem is None or not self._can_shift or head >= len(prompt):
            return head, 0
        cached = llm.input_ids[: llm.n_tokens].tolist()
        head_c = head_p = head
        shifted = 0
        while head_c < len(cached) and head_p < len(prompt):
            n = 0
            while head_c + n < len(cached) and head_p + n < len(prompt) and cached[head_c + n] == prompt[head_p + n]:
                n += 1
            if n >= SHIFT_MIN_TOKENS:
                llama_cpp.llama_memory_seq_rm(mem, 0, head_p, head_c)
                llama_cpp.llama_memory_seq_add(mem, 0, head_c, head_c + n, head_p - head_c)
                llm.input_ids[head_p : head_p + n] = cached[head_c : head_c + n]
                head_p += n
                head_c += n
                shifted += n
            else:
                head_c += 1
        return head_p, shifted

    def _common_prefix(self, prompt: list[int]) -> int:
        cached = self._llm.input_ids[: self._llm.n_tokens]
        n = min(len(cached), len(prompt))
        if n == 0:
            return 0
        diff = np.flatnonzero(cached[:n] != np.asarray(prompt[:n], dtype=cached.dtype))
        return int(diff[0]) if diff.size else n

    def reset_cache(self) -> None:
        """Forget the KV cache (the baseline in benchmarks; tests comparing reuse against a fresh run)."""
        with self._lock:
            self._llm.reset()
            self._llm._ctx.kv_cache_clear()
            self._blocks_done = 0

    def close(self) -> None:
        with self._lock:
            self._llm.close()
