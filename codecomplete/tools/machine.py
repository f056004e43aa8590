"""The machine under the benchmark: what it is, the load put beside it, CPU time of processes, and its raw speed.

Why here: timed figures only mean something next to the machine they came from. ``--load N`` makes "with two
CPU-bound processes beside it" reproducible; CPU seconds compare the work two servers did for the same typing;
the prompt and generation rates measured with llama.cpp itself give each request a floor (evaluated tokens ÷
prompt rate + generated tokens ÷ generation rate) to say how far its wall time is from what the machine can do.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# A CPU-bound process: pure Python arithmetic, no I/O, no memory growth.
_BURN = "while True:\n    pass\n"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        llama = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        llama = None
    return {"cpu": cpu, "cores": cores(), "platform": platform.platform(), "python": platform.python_version(),
            "llama_cpp_python": llama, "loadavg": _loadavg()}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """The engine's default thread count (half the logical CPUs, see engines.llama), given to both sides."""
    return max(1, (os.cpu_count() or 2) // 2)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time a process has used so far (Linux /proc), None elsewhere or when it is gone."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


class CpuMeter:
    """CPU seconds a set of processes spend between ``start`` and ``stop`` (each read at both ends)."""

    def __init__(self) -> None:
        self._start: dict[int, float] = {}
        self.seconds: float | None = None

    def start(self, pids: Sequence[int | None]) -> None:
        self._start = {p: s for p in pids if p and (s := cpu_seconds(p)) is not None}

    def stop(self) -> float | None:
        used = [cpu_seconds(p) for p in self._start]
        if not self._start or any(u is None for u in used):
            self.seconds = None
        else:
            self.seconds = round(sum(u - s for u, s in zip(used, self._start.values()) if u is not None), 2)
        return self.seconds


@contextlib.contextmanager
def cpu_load(n: int) -> Iterator[list[int]]:
    """``n`` CPU-bound processes beside the benchmark for the duration of the block; they are stopped (by the ids
    this started) when it ends, whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _BURN], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


# --- the machine's raw speed --------------------------------------------------------------------------------------

RATE_BATCH = 512  # prompt tokens per llama_decode when measuring (llama.cpp's default batch)
RATE_GENERATED_TOKENS = 32  # decoded one at a time at each of two positions


def measure_rates(model_path: str, *, threads: int, n_ctx: int, text: str, max_position: int) -> dict[str, Any]:
    """This model's cost per token on this machine, from llama.cpp directly, as a function of the position.

    A token's cost grows with its position (attention reads every earlier one), so a rate measured at one length
    misjudges requests at another: the prompt is evaluated from position 0 to ``max_position`` in batches of 512
    and single tokens are decoded near the start and near ``max_position``; a straight line through each gives
    ms per token = a + b·position. Measured with flash attention off (codecomplete's setting) and on
    (llama-server's `-fa auto` on a CPU); the floor takes the cheaper of the two for every request."""
    import llama_cpp

    import codecomplete.engines.llama  # noqa: F401 - routes llama.cpp's log to Python logging (errors only)

    top = max(RATE_BATCH, min(n_ctx - 2 * RATE_GENERATED_TOKENS - 2, -(-max_position // RATE_BATCH) * RATE_BATCH))
    rates: dict[str, Any] = {"threads": threads, "max_position": top, "batch": RATE_BATCH}
    for flash in (False, True):
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # llama-cpp-python's own chatter
            llm = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                  n_batch=RATE_BATCH, n_ubatch=RATE_BATCH, flash_attn=flash, verbose=False)
        try:
            tokens = llm.tokenize(text.encode("utf-8"), add_bos=True)
            while len(tokens) < top + RATE_GENERATED_TOKENS:
                tokens += tokens[1:]
            llm.eval(tokens[:16])  # first use: threads spin up, buffers are allocated
            llm.reset()  # the next eval drops the KV cache from position 0 on
            prompt_points = []
            for start in range(0, top, RATE_BATCH):
                began = time.perf_counter()
                llm.eval(tokens[start:start + RATE_BATCH])
                prompt_points.append((start + RATE_BATCH / 2, (time.perf_counter() - began) * 1000 / RATE_BATCH))
            late = _decode_ms(llm, tokens[top], RATE_GENERATED_TOKENS)
            llm.reset()
            llm.eval(tokens[:RATE_GENERATED_TOKENS])
            early = _decode_ms(llm, tokens[RATE_GENERATED_TOKENS], RATE_GENERATED_TOKENS)
        finally:
            llm.close()
        prompt = _line(prompt_points)
        generate = _line([(RATE_GENERATED_TOKENS * 1.5, early), (top + RATE_GENERATED_TOKENS / 2, late)])
        rates["flash_attn_on" if flash else "flash_attn_off"] = {
            "prompt_ms_per_token": prompt, "generate_ms_per_token": generate,
            "prompt_tok_s_at_1024": round(1000 / (prompt["a"] + prompt["b"] * 1024), 1),
            "generate_tok_s_at_1024": round(1000 / (generate["a"] + generate["b"] * 1024), 1),
        }
    best = min(("flash_attn_off", "flash_attn_on"), key=lambda k: 1 / rates[k]["prompt_tok_s_at_1024"])
    rates["prompt_tok_s"] = rates[best]["prompt_tok_s_at_1024"]
    rates["generate_tok_s"] = max(rates[k]["generate_tok_s_at_1024"] for k in ("flash_attn_off", "flash_attn_on"))
    return rates


def _decode_ms(llm: Any, token: int, n: int) -> float:
    """ms per token of ``n`` single-token decodes after what ``llm`` holds."""
    began = time.perf_counter()
    for _ in range(n):
        llm.eval([token])
    return (time.perf_counter() - began) * 1000 / n


def _line(points: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Least-squares a + b·x through (x, y) points (b = 0 for a single point), never below zero at x = 0."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    if len(points) < 2 or max(xs) == min(xs):
        return {"a": round(sum(ys) / len(ys), 5), "b": 0.0}
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    b = max(0.0, b)
    return {"a": round(max(0.0, my - b * mx), 5), "b": round(b, 8)}


def floor_ms(prompt: int | None, evaluated: int | None, generated: int | None,
             rates: dict[str, Any] | None) -> float | None:
    """What a request costs at the machine's measured rates: its ``evaluated`` tokens (the last ones of a
    ``prompt``-token prompt) and ``generated`` tokens after them, each at its position's cost; the cheaper of flash
    attention off and on."""
    if rates is None or evaluated is None or generated is None:
        return None
    total = max(prompt or evaluated, evaluated)
    first = total - evaluated
    costs = []
    for key in ("flash_attn_off", "flash_attn_on"):
        p, g = rates[key]["prompt_ms_per_token"], rates[key]["generate_ms_per_token"]
        prompt_ms = evaluated * p["a"] + p["b"] * evaluated * (first + total - 1) / 2
        generate_ms = generated * g["a"] + g["b"] * generated * (2 * total + generated - 1) / 2
        costs.append(prompt_ms + generate_ms)
    return min(costs)
