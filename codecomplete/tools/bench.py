"""`codecomplete bench`: replay a person typing real files through the language server, and measure what they get.

One run answers, on one machine, with the same typing (``tools.replay``):

- speed against the peer a user would pick instead (``--peer llama-server``: llama.cpp's own server, asked the
  way llama.vim asks; ``tools.peer``): both sides generate N tokens with post-processing off, so only the cost
  differs (ours keeps its configured time budget, which may stop a request early: the report counts those);
  ratios ours/peer of latency p50/p90/p99, evaluated tokens per request, generation rate, CPU seconds;
- what the user receives (``tools.scoring``), each side with its normal behaviour: at every pause, was a
  suggestion shown (and if not, why not), how much of it matches what was typed next, and would accepting it add
  syntax errors (harm); per language and in total, for today's post-processing and with the new rules left out;
- the floor: how far each request's wall time is from evaluated ÷ prompt rate + generated ÷ generation rate, with
  the rates measured on this machine by llama.cpp itself (``tools.machine``);
- that reuse does not change answers: the speed run's replay against a server without reuse (the baseline);
- scenarios: alternating between two files, two editors through one daemon, the first suggestion after opening a
  3,000-line file (cold daemon; warm daemon, new file), the server's own cost per keystroke on that file.

The headline replay is real time (idle time waited for, as a person types); ``--compressed`` sends keys between
pauses back to back and ends a pause as soon as its answer arrives (labelled as such). ``--load N`` runs N
CPU-bound processes beside the whole run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from codecomplete.errors import UserError
from codecomplete.tools import scoring
from codecomplete.tools.machine import cpu_load, default_threads, floor_ms, machine, measure_rates
from codecomplete.tools.peer import run_peer
from codecomplete.tools.replay import (
    BENCH_DATA,
    LARGE_FILE_LINES,
    OUTCOMES,
    Replay,
    RequestRecord,
    RunResult,
    build_replay,
    default_files,
    parse_file_spec,
    run_first_suggestion,
    run_session,
    run_two_editors,
)

FULL_LINES, QUICK_LINES = 10, 4
FULL_OVERHEAD_REQUESTS, QUICK_OVERHEAD_REQUESTS = 100, 8
QUICK_TOKEN_BUDGET = 384
# The baseline evaluates every prompt afresh: it gets time to finish every answer (a slow baseline answering
# "nothing" within a budget would look good). Our runs keep the configured budget, as a user has it.
BASELINE_TIME_BUDGET_MS = 60_000
SPEED_TOKENS = 32  # generated per request on both sides of the speed comparison
ALTERNATE_EVERY_LINES = 3
QUICK_ALTERNATE_EVERY_LINES = 2
TWO_EDITOR_LINES, QUICK_TWO_EDITOR_LINES = 10, 2
# The rules the other post-processing is compared without, when present in codecomplete.core.postprocess.RULES.
NEW_RULES = ("cut_short", "syntax", "indentation")
PEER_DEFAULT_MODEL = "codellama-sized-random"  # llama-server's /infill refuses a model without FIM tokens
SCENARIOS = ("rules", "baseline", "alternating", "two-editors", "first-suggestion", "large-file", "floor")

# Ratios ours/peer (and the baseline's old targets): what the engine has to reach.
PEER_TARGETS = {"latency_p50": 0.5, "latency_p90": 0.9, "latency_p99": 0.9, "evaluated_per_request_p90": 1.0}
PEER_GENERATE_RATE_MIN = 0.95
BASELINE_TARGETS = {"latency_p50": 0.35, "latency_p99": 0.6, "reuse_ratio": 0.85, "large_file_overhead_p99_ms": 5.0}
TARGETS = BASELINE_TARGETS  # the name older callers know
CUT_SHORT = {"time_budget", "cancelled", "preempted"}
MUST_SHOW = {"shown_rate": 0.90, "harm_rate": 0.01, "first_suggestion_new_file_ms": 3000.0}
ALTERNATING_P90_FACTOR = 2.0
# The machine's rates are measured up to the longest prompt of the run, and at least this far (two batches at least:
# the cost per token is a line through the batches, see tools.machine).
RATE_MIN_POSITION, RATE_MIN_POSITION_QUICK = 2048, 1024


# --- figures -------------------------------------------------------------------------------------------------


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=float)
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _model_entry(record: RequestRecord) -> dict[str, Any] | None:
    entry = record.server
    if record.latency_ms is None or not entry or entry.get("source") != "model":
        return None
    return entry


def _overhead(record: RequestRecord) -> dict[str, float] | None:
    """Split a model-served request's time: llama.cpp's part and everything the server adds around it."""
    entry = _model_entry(record)
    if entry is None or "latency_ms" not in entry or record.latency_ms is None or "kind" in entry:  # kind: the peer
        return None
    t = entry["timings_ms"]
    llama = t["prompt_eval"] + t["generate"]
    return {
        "keystroke": t.get("keystroke"),  # measured by the server: its own time for the keystroke, minus llama.cpp's
        "server": t["total"] - llama,
        "protocol": record.latency_ms - entry["latency_ms"],
        "total": record.latency_ms - llama,
        "context": t["context"],
        "tokenize": t["tokenize"],
        "postprocess": t["postprocess"],
    }


BREAKDOWN_PARTS = ("outside", "context", "tokenize", "prompt_eval", "generate", "postprocess", "service_other")
PEER_BREAKDOWN_PARTS = ("waiting", "prompt_eval", "generate", "server_other")


def breakdown(record: RequestRecord) -> dict[str, float] | None:
    """Where one model-served request's time went, from the keystroke to the answer at the client.

    Ours: the completion pipeline's parts as the server measured them (windows, tokenizing, prompt evaluation,
    generation, post-processing), ``service_other`` (the service around the pipeline) and ``outside``: everything
    outside the completion service on the request's path: waiting for the model thread (queueing behind a
    prefetch that gives way), the document's parse, the hand-off, writing the answer, the pipe and both ends'
    JSON-RPC. (The server's own per-keystroke account, ``overhead_ms.keystroke``, also bills the document changes
    typed since the last request, which are not on the request's path.) The peer: ``waiting`` for the request in
    flight (llama.vim defers a request while one runs), the server's prompt evaluation and generation, and
    ``server_other`` (its tokenizing, sampling setup, HTTP and the client).
    """
    entry = _model_entry(record)
    if entry is None or record.latency_ms is None:
        return None
    t = entry["timings_ms"]
    llama = t["prompt_eval"] + t["generate"]
    if entry.get("kind") is not None:  # the peer
        wall = entry["latency_ms"]
        return {"waiting": max(0.0, record.latency_ms - wall), "prompt_eval": t["prompt_eval"],
                "generate": t["generate"], "server_other": max(0.0, wall - llama), "total": record.latency_ms}
    service = entry.get("latency_ms", t["total"])
    return {
        "outside": record.latency_ms - service,
        "context": t["context"],
        "tokenize": t["tokenize"],
        "prompt_eval": t["prompt_eval"],
        "generate": t["generate"],
        "postprocess": t["postprocess"],
        "service_other": service - t["total"],
        "total": record.latency_ms,
    }


def _breakdown_summary(parts: Sequence[dict[str, float | None]]) -> dict[str, Any]:
    names = [k for k in (parts[0] if parts else {}) if k != "total"]
    out: dict[str, Any] = {"requests": len(parts)}
    for name in [*names, "total"]:
        values = [p[name] for p in parts if p.get(name) is not None]
        out[name] = {"mean": round(float(np.mean(values)), 1) if values else None, **percentiles(values, (50, 90))}
    return out


def summarize(result: RunResult, rates: dict[str, Any] | None = None) -> dict[str, Any]:
    reqs = result.requests
    answered = [r for r in reqs if r.latency_ms is not None]
    model = [e for e in result.server_entries if e.get("source") == "model"]
    # The answers to the pauses' own requests; the peer's speculative requests are background work (as our prefetches,
    # which the server does not list): counted in the totals, the rates and the CPU time, not per request.
    foreground = [e for e in model if e.get("kind") in (None, "fim", "manual")]
    background = [e for e in model if e not in foreground]
    sources: dict[str, int] = {}
    for r in answered:
        source = r.server["source"] if r.server else "skipped"
        sources[source] = sources.get(source, 0) + 1
    tok = {k: sum(e["tokens"].get(k, 0) for e in model)
           for k in ("prompt", "evaluated", "reused", "shifted", "generated")}
    eval_s = sum(e["timings_ms"]["prompt_eval"] for e in model) / 1000
    gen_s = sum(e["timings_ms"]["generate"] for e in model) / 1000
    overheads = [o for r in answered if (o := _overhead(r))]
    latencies = [r.latency_ms for r in answered if r.latency_ms is not None]
    stops: dict[str, int] = {}
    for e in model:
        stops[str(e.get("stop_reason"))] = stops.get(str(e.get("stop_reason")), 0) + 1
    floors = []
    for r in answered:
        entry = _model_entry(r)
        if entry and r.latency_ms is not None and rates:
            t = entry["tokens"]
            floor = floor_ms(t.get("prompt"), t["evaluated"], t["generated"], rates)
            if floor:
                floors.append((r.latency_ms, floor))
    parts = [b for r in answered if (b := breakdown(r))]
    return {
        "label": result.label,
        "requests": len(reqs),
        "outcomes": {k: sum(r.outcome == k for r in reqs) for k in OUTCOMES},
        "latency_ms": {**percentiles(latencies),
                       "mean": round(float(np.mean(latencies)), 2) if latencies else None},
        "served_by": sources,
        "tokens": {
            **tok,
            "reuse_ratio": round(tok["reused"] / tok["prompt"], 4) if tok["prompt"] else None,
            "evaluated_per_request": percentiles([e["tokens"]["evaluated"] for e in foreground]),
            "reused_per_request": percentiles([e["tokens"]["reused"] for e in foreground]),
            "generated_per_request": percentiles([e["tokens"]["generated"] for e in foreground]),
            "model_requests": len(foreground),
        },
        "background": {"requests": len(background), "evaluated": sum(e["tokens"]["evaluated"] for e in background),
                       "prefetched": (result.status.get("stats") or {}).get("prefetched")},
        "stop_reasons": stops,
        "tokens_per_s": {
            "prompt_eval": round(tok["evaluated"] / eval_s, 1) if eval_s else None,
            "generate": round(tok["generated"] / gen_s, 1) if gen_s else None,
        },
        "cpu_s": result.cpu_s,
        "wall_s": result.wall_s,
        "floor": {
            "requests": len(floors),
            "wall_over_floor": percentiles([w / f for w, f in floors], (50, 99)),
            "excess_ms": percentiles([w - f for w, f in floors], (50, 99)),
        },
        "breakdown_ms": _breakdown_summary(parts),
        "overhead_ms": {part: _part_percentiles(overheads, part)
                        for part in ("keystroke", "server", "protocol", "total")},
        "peak_rss_mb": round(result.peak_rss_mb, 1) if result.peak_rss_mb else None,
        "read_ahead_ms": {name: round(ms, 1) for name, ms in result.read_ahead_ms.items()},
        "quality": quality(result),
        "settings": result.settings,
        "server_status": {k: result.status.get(k) for k in ("ring_updates", "requests_sent", "chunks", "stats")
                          if k in result.status},
    }


def quality(result: RunResult) -> dict[str, Any]:
    return scoring.aggregate((r.language or "?", r.score) for r in result.requests if r.score is not None)


def score_run(result: RunResult) -> None:
    """Score every pause of a finished run (after it, so the scoring's parsing takes no time from the replay)."""
    check = scoring.syntax_checker()
    for record in result.requests:
        if record.spot is not None:
            shown = record.suggestion if record.outcome == "answered" else None
            record.score = scoring.score(record.spot, shown, record.reason, check)


def _part_percentiles(overheads: Sequence[dict[str, Any]], part: str) -> dict[str, float | None]:
    return percentiles([o[part] for o in overheads if o[part] is not None], (50, 99))


def large_file_summary(records: Sequence[RequestRecord], read_ahead_ms: float | None) -> dict[str, Any]:
    overheads = [o for r in records if (o := _overhead(r))]
    return {
        "lines": LARGE_FILE_LINES,
        "requests": len(records),
        "model_requests": len(overheads),
        "read_ahead_ms": round(read_ahead_ms, 1) if read_ahead_ms is not None else None,
        **{part: _part_percentiles(overheads, part)
           for part in ("keystroke", "total", "context", "tokenize", "postprocess", "server", "protocol")},
    }


def compare(ours: RunResult, base: RunResult, ours_s: dict[str, Any], base_s: dict[str, Any],
            large: dict[str, Any] | None) -> dict[str, Any]:
    """Ratios ours/baseline over the requests both answered (the replays send the same requests in order)."""
    both = [(a, b) for a, b in zip(ours.requests, base.requests)
            if a.latency_ms is not None and b.latency_ms is not None]
    pairs = [(a.latency_ms, b.latency_ms) for a, b in both]
    # Reuse should never change a completion: count the requests both sent to the model and finished (not stopped
    # by a time budget) that agree.
    model_pairs = [(a, b) for a, b in both if a.server and a.server["source"] == "model" and b.server
                   and not {a.server.get("stop_reason"), b.server.get("stop_reason")} & CUT_SHORT]
    identical = sum(a.suggestion == b.suggestion for a, b in model_pairs)
    # Windows that stay put (ours) and windows cut afresh (the baseline) can differ: same prompt, same answer?
    same_prompt = [(a, b) for a, b in model_pairs
                   if a.server and b.server and a.server.get("prompt_digest")
                   and a.server.get("prompt_digest") == b.server.get("prompt_digest")]
    mine, theirs = percentiles([a for a, _ in pairs]), percentiles([b for _, b in pairs])
    ratios: dict[str, Any] = {f"latency_{p}": _ratio(mine[p], theirs[p]) for p in ("p50", "p90", "p99")}
    ratios["evaluated_tokens"] = _ratio(ours_s["tokens"]["evaluated"], base_s["tokens"]["evaluated"])
    values = {
        "latency_p50": ratios["latency_p50"],
        "latency_p99": ratios["latency_p99"],
        "reuse_ratio": ours_s["tokens"]["reuse_ratio"],
        "large_file_overhead_p99_ms": large["keystroke"]["p99"] if large else None,
    }
    targets = {}
    for name, goal in BASELINE_TARGETS.items():
        value = values[name]
        met = None if value is None else (value >= goal if name == "reuse_ratio" else value <= goal)
        targets[name] = {"target": goal, "value": value, "met": met}
    return {"paired_requests": len(pairs), "ours_latency_ms": mine, "baseline_latency_ms": theirs,
            "same_answer": {"model_pairs": len(model_pairs), "identical": identical,
                            "same_prompt": len(same_prompt),
                            "same_prompt_identical": sum(a.suggestion == b.suggestion for a, b in same_prompt)},
            "ratios": ratios, "targets": targets}


def compare_peer(ours: RunResult, peer: RunResult, ours_s: dict[str, Any], peer_s: dict[str, Any]) -> dict[str, Any]:
    """Ours/peer over the pauses both answered (the same pauses in the same order), and where our time goes in the
    pauses where we are slower."""
    both = [(a, b) for a, b in zip(ours.requests, peer.requests)
            if a.latency_ms is not None and b.latency_ms is not None]
    mine = percentiles([a.latency_ms for a, _ in both if a.latency_ms is not None])
    theirs = percentiles([b.latency_ms for _, b in both if b.latency_ms is not None])
    ratios: dict[str, Any] = {f"latency_{p}": _ratio(mine[p], theirs[p]) for p in ("p50", "p90", "p99")}
    for p in ("p50", "p90"):
        ratios[f"evaluated_per_request_{p}"] = _ratio(ours_s["tokens"]["evaluated_per_request"][p],
                                                       peer_s["tokens"]["evaluated_per_request"][p])
    ratios["generate_tok_s"] = _ratio(ours_s["tokens_per_s"]["generate"], peer_s["tokens_per_s"]["generate"])
    ratios["prompt_eval_tok_s"] = _ratio(ours_s["tokens_per_s"]["prompt_eval"], peer_s["tokens_per_s"]["prompt_eval"])
    ratios["cpu_s"] = _ratio(ours_s["cpu_s"], peer_s["cpu_s"])
    ratios["evaluated_total"] = _ratio(ours_s["tokens"]["evaluated"], peer_s["tokens"]["evaluated"])
    targets = {name: {"target": goal, "value": ratios[name],
                      "met": None if ratios[name] is None else ratios[name] <= goal}
               for name, goal in PEER_TARGETS.items()}
    rate = ratios["generate_tok_s"]
    targets["generate_tok_s"] = {"target": PEER_GENERATE_RATE_MIN, "value": rate,
                                 "met": None if rate is None else rate >= PEER_GENERATE_RATE_MIN}
    losing = [(a, b) for a, b in both if (a.latency_ms or 0) > (b.latency_ms or 0)]
    ours_parts = [p for a, _ in losing if (p := breakdown(a))]
    peer_parts = [p for _, b in losing if (p := breakdown(b))]
    return {"paired_requests": len(both), "ours_latency_ms": mine, "peer_latency_ms": theirs, "ratios": ratios,
            "targets": targets,
            "where_we_lose": {"requests": len(losing), "ours_ms": _breakdown_summary(ours_parts),
                              "peer_ms": _breakdown_summary(peer_parts),
                              "pauses": [_pause(a, b) for a, b in losing]}}


def _pause(ours: RequestRecord, peer: RequestRecord) -> dict[str, Any]:
    return {"file": ours.file, "line": ours.line, "trigger": ours.trigger,
            "ours_ms": round(ours.latency_ms or 0.0, 1), "peer_ms": round(peer.latency_ms or 0.0, 1),
            "ours": breakdown(ours), "peer": breakdown(peer)}


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Everything one `codecomplete bench` run does, decided from the options before anything starts."""

    replays: list[Replay]
    options: dict[str, Any]  # our server's settings for the user's view (the configured ones)
    speed_options: dict[str, Any]  # exactly N tokens, post-processing off, time to finish
    realtime: bool
    daemon: bool
    overhead_requests: int
    rules: list[str]  # the new rules, left out in the comparison run
    alternate: list[Replay] = field(default_factory=list)
    alternate_every: int = ALTERNATE_EVERY_LINES
    two_editors: list[Replay] = field(default_factory=list)
    peer: bool = False
    tokens: int = SPEED_TOKENS
    threads: int = 1
    n_ctx: int = 4096
    skip: frozenset[str] = frozenset()
    load: int = 0
    quick: bool = False


async def run_bench(plan: Plan, echo: Callable[[str], None]) -> dict[str, Any]:
    runs: dict[str, RunResult] = {}
    mode = "real time" if plan.realtime else "compressed"
    n_keys = sum(len(r.keys) for r in plan.replays)
    n_requests = sum(r.requests for r in plan.replays)

    async def ours(label: str, options: dict[str, Any], *, realtime: bool = plan.realtime, overhead: int = 0,
                   replays: Sequence[Replay] = plan.replays, alternate: int | None = None,
                   track_prompts: bool = False) -> RunResult:
        echo(f"{label}: replaying {sum(len(r.keys) for r in replays)} keystrokes "
             f"({sum(r.requests for r in replays)} requests, {'real time' if realtime else 'compressed'})…")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="codecomplete-bench-") as tmp:
            result = await run_session(options, label, replays, realtime, overhead_requests=overhead,
                                       daemon_dir=Path(tmp) if plan.daemon else None, alternate_every=alternate,
                                       track_prompts=track_prompts)
        score_run(result)
        echo(f"{label}: done in {time.monotonic() - started:.0f}s")
        return result

    async def peer(label: str, client_options: dict[str, Any]) -> RunResult:
        echo(f"{label}: llama-server + llama.vim's protocol, {n_keys} keystrokes ({n_requests} requests, {mode})…")
        started = time.monotonic()
        result = await run_peer(model_path, label, plan.replays, plan.realtime, n_ctx=plan.n_ctx,
                                threads=plan.threads, client_options=client_options, progress=echo)
        score_run(result)
        echo(f"{label}: done in {time.monotonic() - started:.0f}s")
        return result

    checking = "baseline" not in plan.skip
    runs["ours_speed"] = await ours("ours_speed", plan.speed_options, track_prompts=checking)
    status = runs["ours_speed"].status
    model_path = str(status.get("model") or "")
    rates = None
    if "floor" not in plan.skip and model_path:
        echo("floor: measuring this machine's prompt and generation rates with llama.cpp…")
        text = "".join(r.before + r.typed + r.after for r in plan.replays)
        longest = max((e["tokens"]["prompt"] for e in runs["ours_speed"].server_entries), default=1024)
        rates = await asyncio.to_thread(measure_rates, model_path, threads=plan.threads, n_ctx=plan.n_ctx, text=text,
                                        max_position=max(longest, RATE_MIN_POSITION_QUICK if plan.quick
                                                         else RATE_MIN_POSITION))
    if plan.peer:
        runs["peer_speed"] = await peer("peer_speed", {"n_predict": plan.tokens, "exact_n_predict": True})
    runs["ours"] = await ours("ours", plan.options, overhead=0 if "large-file" in plan.skip else plan.overhead_requests)
    if plan.rules and "rules" not in plan.skip:
        runs["ours_without_new_rules"] = await ours("ours_without_new_rules",
                                                    {**plan.options, "postprocessSkip": plan.rules})
    if plan.peer:
        runs["peer"] = await peer("peer", {})
    if checking:
        budget = plan.options.get("timeBudgetMs", BASELINE_TIME_BUDGET_MS)
        runs["baseline"] = await ours("baseline", {**plan.speed_options, "reuse": False, "timeBudgetMs": budget},
                                      realtime=False, track_prompts=True)
    scenarios: dict[str, Any] = {}
    if plan.alternate and "alternating" not in plan.skip:
        runs["alternating"] = await ours("alternating", plan.speed_options, replays=plan.alternate,
                                         alternate=plan.alternate_every)
    if plan.two_editors and "two-editors" not in plan.skip:
        echo(f"two editors: {len(plan.two_editors)} editors typing at once through one daemon…")
        try:
            with tempfile.TemporaryDirectory(prefix="codecomplete-bench-") as tmp:
                editors, cpu = await run_two_editors(plan.options, plan.two_editors, plan.realtime, Path(tmp))
        except UserError as exc:  # the runs so far are still worth their report
            scenarios["two_editors"] = {"error": str(exc)}
        else:
            for result in editors:
                score_run(result)
            scenarios["two_editors"] = two_editor_summary(editors, cpu, rates)
            for i, result in enumerate(editors):
                runs[f"editor_{i + 1}"] = result
    if "first-suggestion" not in plan.skip:
        echo("first suggestion: a 3,000-line file opened with no daemon running, then another with it warm…")
        try:
            with tempfile.TemporaryDirectory(prefix="codecomplete-bench-") as tmp:
                scenarios["first_suggestion"] = await run_first_suggestion(plan.options, Path(tmp))
        except UserError as exc:
            scenarios["first_suggestion"] = {"error": str(exc)}

    summaries = {label: summarize(result, rates) for label, result in runs.items()}
    large = None
    if runs["ours"].large_file:
        large = large_file_summary(runs["ours"].large_file, runs["ours"].read_ahead_ms.get("large_file.py"))
    if "alternating" in summaries:
        single = summaries["ours_speed"]["tokens"]["evaluated_per_request"]["p90"]
        alternating = summaries["alternating"]["tokens"]["evaluated_per_request"]["p90"]
        scenarios["alternating"] = {
            "files": [r.name for r in plan.alternate], "every_lines": plan.alternate_every,
            "evaluated_per_request_p90": alternating, "single_file_p90": single,
            "ratio": _ratio(alternating, single),
            "target": {"factor": ALTERNATING_P90_FACTOR,
                       "met": None if alternating is None or not single
                       else alternating <= ALTERNATING_P90_FACTOR * single},
        }
    report: dict[str, Any] = {
        "model": status.get("model_name") or status.get("model"),
        "model_path": model_path,
        "backend": status.get("backend"),
        "machine": machine(),
        "command": ["codecomplete", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else sys.argv,
        "mode": mode,
        "load": plan.load,
        "threads": plan.threads,
        "n_ctx": plan.n_ctx,
        "speed_tokens": plan.tokens,
        "settings": plan.options,
        "speed_settings": plan.speed_options,
        "served_through": "daemon" if plan.daemon else "language server",
        "files": [{"name": r.name, "language": r.language, "first_line": r.first_line, "lines": r.n_lines,
                   "keystrokes": len(r.keys), "requests": r.requests} for r in plan.replays],
        "rates": rates,
        "runs": summaries,
        "rules": {"new": plan.rules, "left_out_in": "ours_without_new_rules" if plan.rules else None},
        "harm_checked": scoring.syntax_checker() is not None,
        "speed": (compare_peer(runs["ours_speed"], runs["peer_speed"], summaries["ours_speed"],
                               summaries["peer_speed"]) if "peer_speed" in runs else None),
        "reuse_check": (compare(runs["ours_speed"], runs["baseline"], summaries["ours_speed"],
                                summaries["baseline"], large) if "baseline" in runs else None),
        "large_file": large,
        "scenarios": scenarios,
        "requests": {label: [r.to_json() for r in result.requests] for label, result in runs.items()},
    }
    report["must_show"] = must_show(report)
    return report


def two_editor_summary(editors: Sequence[RunResult], cpu: float | None, rates: dict[str, Any] | None
                       ) -> dict[str, Any]:
    all_latencies = [r.latency_ms for e in editors for r in e.requests if r.latency_ms is not None]
    merged = RunResult(label="two editors", requests=[r for e in editors for r in e.requests])
    return {
        "editors": len(editors),
        "cpu_s": cpu,
        "latency_ms": percentiles(all_latencies),
        "per_editor": [{"label": e.label, "files": sorted({r.file for r in e.requests}),
                        "latency_ms": percentiles([r.latency_ms for r in e.requests if r.latency_ms is not None]),
                        "outcomes": {k: sum(r.outcome == k for r in e.requests) for k in OUTCOMES},
                        "evaluated_per_request": percentiles([x["tokens"]["evaluated"] for x in e.server_entries])}
                       for e in editors],
        "quality": quality(merged)["total"],
    }


def must_show(report: dict[str, Any]) -> dict[str, Any]:
    """The three figures the default run must show: shown rate over pauses, harm rate over shown suggestions, time
    to the first suggestion after opening a new 3,000-line file (warm daemon)."""
    total = report["runs"]["ours"]["quality"]["total"]
    first = report["scenarios"].get("first_suggestion", {}).get("warm_daemon_new_file") or {}
    values = {"shown_rate": total.get("shown_rate"), "harm_rate": total.get("harm_rate"),
              "first_suggestion_new_file_ms": first.get("from_open_ms")}
    out = {}
    for name, goal in MUST_SHOW.items():
        value = values[name]
        met = None if value is None else (value >= goal if name == "shown_rate" else value <= goal)
        out[name] = {"target": goal, "value": value, "met": met}
    out["load"] = report["load"]
    return out


# --- output ------------------------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}" if abs(value) >= 10 else f"{value:.2f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    all_rows = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    return ["  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]) for r in all_rows]


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "n/a"}[met]


def _exact(summary: dict[str, Any], tokens: int) -> str:
    """How many of our requests generated all the tokens (the time budget or an end token can stop one early)."""
    stops = dict(summary["stop_reasons"])
    full = stops.pop("max_tokens", 0)
    rest = ", ".join(f"{n} {reason}" for reason, n in sorted(stops.items()))
    done = f"ours generated all {tokens} in {full} of {full + sum(stops.values())} requests"
    return f"{done}; {rest}" if rest else done


def render_table(report: dict[str, Any]) -> str:
    runs = report["runs"]
    m = report["machine"]
    out = [f"codecomplete bench — {report['model']} — {m['cpu']}, {m['cores']} cores — {report['mode']}"
           + (f", {report['load']} CPU-bound processes beside it" if report["load"] else "")
           + f" — {report['threads']} thread(s), n_ctx {report['n_ctx']}"]
    rates = report.get("rates")
    if rates:
        out.append(f"machine rates (llama.cpp, same model and threads; at position 1,024): prompt "
                   f"{rates['prompt_tok_s']:,.0f} tok/s, generation {rates['generate_tok_s']:,.1f} tok/s; the floor "
                   f"counts each token at its own position")

    def speed_rows(cols: Sequence[str], ratio: dict[str, Any] | None, paired: dict[str, Any] | None) -> list[list[str]]:
        rows: list[list[str]] = []

        def row(label: str, get: Callable[[dict[str, Any]], Any], r: Any = None, unit: str = "") -> None:
            rows.append([label, *(_fmt(get(runs[c]), unit) for c in cols), *([_fmt(r)] if ratio is not None else [])])

        row("requests (pauses)", lambda s: s["requests"])
        for outcome in ("answered", "empty", "cancelled"):
            row(f"  {outcome}", lambda s, o=outcome: s["outcomes"][o])
        if paired:
            for p in ("p50", "p90", "p99"):
                rows.append([f"latency {p}, both answered ({paired['paired_requests']})",
                             *(_fmt(paired[k][p], " ms") for k in ("ours_latency_ms", paired["other_key"])),
                             *([_fmt(ratio.get(f"latency_{p}"))] if ratio is not None else [])])
        for p in ("p50", "p90", "p99"):
            row(f"latency {p}, all answered", lambda s, p=p: s["latency_ms"][p], unit=" ms")
        for p in ("p50", "p90"):
            row(f"evaluated tokens/request {p}", lambda s, p=p: s["tokens"]["evaluated_per_request"][p],
                (ratio or {}).get(f"evaluated_per_request_{p}"))
        row("evaluated tokens, total", lambda s: s["tokens"]["evaluated"], (ratio or {}).get("evaluated_total"))
        row("background requests (speculative; prefetched)",
            lambda s: s["background"]["requests"] or s["background"]["prefetched"])
        row("generated tokens/request p50", lambda s: s["tokens"]["generated_per_request"]["p50"])
        row("generation tok/s", lambda s: s["tokens_per_s"]["generate"], (ratio or {}).get("generate_tok_s"))
        row("prompt eval tok/s", lambda s: s["tokens_per_s"]["prompt_eval"], (ratio or {}).get("prompt_eval_tok_s"))
        row("CPU seconds", lambda s: s["cpu_s"], (ratio or {}).get("cpu_s"))
        for p in ("p50", "p99"):
            row(f"wall/floor {p}", lambda s, p=p: s["floor"]["wall_over_floor"][p])
            row(f"wall − floor {p}", lambda s, p=p: s["floor"]["excess_ms"][p], unit=" ms")
        row("peak RSS", lambda s: s["peak_rss_mb"], unit=" MB")
        return rows

    speed = report.get("speed")
    tokens = report["speed_tokens"]
    if speed:
        out.append("")
        out.append(f"Speed: {tokens} generated tokens per request, post-processing off ({report['mode']}; "
                   f"{_exact(runs['ours_speed'], tokens)})")
        paired = {**speed, "other_key": "peer_latency_ms"}
        out += _table(["", "ours", "peer", "ours/peer"],
                      speed_rows(["ours_speed", "peer_speed"], speed["ratios"], paired))
        for name, t in speed["targets"].items():
            sign = "≥" if name == "generate_tok_s" else "≤"
            out.append(f"  target ours/peer {name}: {_fmt(t['value'])} (goal {sign} {t['target']}) "
                       f"{_verdict(t['met'])}")
        lose = speed["where_we_lose"]
        if lose["requests"]:
            o, p = lose["ours_ms"], lose["peer_ms"]
            out.append(f"  where time goes in the {lose['requests']} pauses where ours is slower (mean ms):")
            for part in (*BREAKDOWN_PARTS, "total"):
                if part in o:
                    out.append(f"    ours {part:<20} {_fmt(o[part]['mean']):>9}")
            for part in (*PEER_BREAKDOWN_PARTS, "total"):
                if part in p:
                    out.append(f"    peer {part:<20} {_fmt(p[part]['mean']):>9}")
    else:
        out.append("")
        out.append(f"Speed (ours): {tokens} generated tokens per request, post-processing off "
                   f"({report['mode']}; {_exact(runs['ours_speed'], tokens)}; no peer: --peer llama-server)")
        out += _table(["", "ours"], speed_rows(["ours_speed"], None, None))

    # the user's view
    labels = [k for k in ("ours", "ours_without_new_rules", "peer") if k in runs]
    names = {"ours": "ours", "ours_without_new_rules": "ours, new rules off", "peer": "peer (llama.vim)"}
    out.append("")
    out.append(f"What the user receives ({report['mode']}; each side's normal behaviour"
               + ("" if report["harm_checked"] else "; harm n/a: codecomplete.core.syntaxcheck missing") + ")")
    langs = sorted({lang for k in labels for lang in runs[k]["quality"]["by_language"]})
    rows = []
    for scope in ["total", *langs]:
        def q(k: str, scope: str = scope) -> dict[str, Any]:
            qual = runs[k]["quality"]
            return qual["total"] if scope == "total" else qual["by_language"].get(scope, {})
        rows.append([f"{scope}: pauses", *(_fmt(q(k).get("pauses")) for k in labels)])
        rows.append(["  shown rate", *(_pct(q(k).get("shown_rate")) for k in labels)])
        rows.append(["  harm rate (of shown)", *(_pct(q(k).get("harm_rate")) for k in labels)])
        rows.append(["  first line = true line", *(_pct(q(k).get("first_line_equal_rate")) for k in labels)])
        rows.append(["  common prefix, mean chars", *(_fmt(q(k).get("common_prefix_mean")) for k in labels)])
        if scope == "total":
            reasons = sorted({r for k in labels for r in q(k).get("not_shown", {})},
                             key=lambda r: (scoring.NOT_SHOWN.index(r) if r in scoring.NOT_SHOWN else 99, r))
            for reason in reasons:
                rows.append([f"  not shown: {scoring.reason_text(reason)}",
                             *(_fmt(q(k).get("not_shown", {}).get(reason, 0)) for k in labels)])
            rows.append(["  latency p50, answered", *(_fmt(runs[k]["latency_ms"]["p50"], " ms") for k in labels)])
            rows.append(["  latency p90", *(_fmt(runs[k]["latency_ms"]["p90"], " ms") for k in labels)])
    out += _table(["", *(names[k] for k in labels)], rows)
    if "ours_without_new_rules" in runs:
        out.append(f"  new rules left out in the second column: {', '.join(report['rules']['new'])}")

    reuse = report.get("reuse_check")
    if reuse:
        same = reuse["same_answer"]
        out.append("")
        out.append(f"Reuse check (the speed run against a no-reuse baseline, compressed): same answer with and "
                   f"without reuse in {same['identical']} of {same['model_pairs']} requests the model finished on "
                   f"both sides "
                   f"({same.get('same_prompt_identical')} of the {same.get('same_prompt')} with the same prompt); "
                   f"evaluated tokens ours/baseline {_fmt(reuse['ratios']['evaluated_tokens'])}, "
                   f"latency p50 {_fmt(reuse['ratios']['latency_p50'])}")
    sc = report["scenarios"]
    if sc.get("alternating"):
        a = sc["alternating"]
        out.append(f"Alternating between {' and '.join(a['files'])} every {a['every_lines']} lines: evaluated "
                   f"tokens/request p90 {_fmt(a['evaluated_per_request_p90'])} vs {_fmt(a['single_file_p90'])} "
                   f"one file at a time ({_fmt(a['ratio'])}×; goal ≤ {ALTERNATING_P90_FACTOR}×) "
                   f"{_verdict(a['target']['met'])}")
    for name, value in sc.items():
        if "error" in value:
            out.append(f"{name}: failed: {value['error']}")
    if sc.get("two_editors") and "error" not in sc["two_editors"]:
        t = sc["two_editors"]
        per = "; ".join(f"{e['label']} ({', '.join(e['files'])}) p50 {_fmt(e['latency_ms']['p50'], ' ms')} "
                        f"p90 {_fmt(e['latency_ms']['p90'], ' ms')}" for e in t["per_editor"])
        out.append(f"Two editors, one daemon: latency p50 {_fmt(t['latency_ms']['p50'], ' ms')}, p90 "
                   f"{_fmt(t['latency_ms']['p90'], ' ms')}, p99 {_fmt(t['latency_ms']['p99'], ' ms')}; shown "
                   f"{_pct(t['quality'].get('shown_rate'))}; {per}")
    if sc.get("first_suggestion") and "error" not in sc["first_suggestion"]:
        f = sc["first_suggestion"]
        cold, warm = f["cold_daemon"], f["warm_daemon_new_file"]
        out.append(f"First suggestion in a new {warm['lines']:,}-line file: warm daemon "
                   f"{_fmt(warm['from_open_ms'], ' ms')} after opening ({warm['requests']} requests); cold daemon "
                   f"{_fmt(cold['from_start_ms'], ' ms')} from the editor's start (model ready after "
                   f"{_fmt(cold['editor_start_to_ready_ms'], ' ms')}; "
                   f"{_fmt(cold['from_open_ms'], ' ms')} from opening)")
    large = report.get("large_file")
    if large:
        out.append(f"Overhead on a {large['lines']}-line file ({large['model_requests']} requests): "
                   + ", ".join(f"{part} p50 {_fmt(large[part]['p50'])} / p99 {_fmt(large[part]['p99'])} ms"
                               for part in ("keystroke", "context", "tokenize", "postprocess", "total"))
                   + f"; read ahead on open in {_fmt(large['read_ahead_ms'])} ms")
    out.append("")
    ms = report["must_show"]
    beside = f", {ms['load']} CPU-bound processes beside it" if ms["load"] else ""
    out.append(f"Must show (default settings{beside}):")
    out.append(f"  pauses answered with a non-empty suggestion: {_pct(ms['shown_rate']['value'])} (goal ≥ 90 %) "
               f"{_verdict(ms['shown_rate']['met'])}")
    out.append(f"  harm rate (shown suggestions adding syntax errors): {_pct(ms['harm_rate']['value'])} (goal ≤ 1 %) "
               f"{_verdict(ms['harm_rate']['met'])}")
    first = ms["first_suggestion_new_file_ms"]
    out.append(f"  first suggestion in a newly opened 3,000-line file: {_fmt(first['value'], ' ms')} (goal ≤ 3,000 ms) "
               f"{_verdict(first['met'])}")
    return "\n".join(out)


def plot_cdf(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, records in report["requests"].items():
        values = sorted(r["latency_ms"] for r in records if r["latency_ms"] is not None)
        if values:
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("keystroke → answer latency (ms)")
    ax.set_ylabel("share of answered requests")
    ax.set_title(f"codecomplete bench: {report['model']} ({report['mode']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)


# --- command -------------------------------------------------------------------------------------------------


def build_replays(specs: Sequence[str], n_lines: int, rate: float, slot: int = 0) -> list[Replay]:
    picked = [parse_file_spec(s) for s in specs] if specs else [(p, None) for p in default_files()]
    if not picked:
        raise UserError("no source files to replay: pass --files")
    replays = []
    for i, (path, line) in enumerate(picked):
        if not path.is_file():
            raise UserError(f"file not found: {path}")
        replays.append(build_replay(path, n_lines, rate, line, slot + i))
    if not any(k.trigger for r in replays for k in r.keys):
        raise UserError("the replay makes no completion requests: choose more lines or other files")
    return replays


def new_rules(spec: str | None) -> list[str]:
    """``--compare-rules``: the rules to leave out in the comparison run; by default the new ones that exist."""
    from codecomplete.core.postprocess import RULES

    if spec is None:
        return [r for r in NEW_RULES if r in RULES]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise UserError(f"--compare-rules: unknown rule {', '.join(unknown)} (rules: {', '.join(RULES)})")
    return names


@click.command("bench")
@click.option("--model", help="Catalog name, .gguf path or 'codellama-sized-random' (generated, cached); default: "
                              "the configured or embedded model, or codellama-sized-random with --peer.")
@click.option("--peer", type=click.Choice(["llama-server"]),
              help="Also replay against llama.cpp's llama-server (built once, cached) driven like llama.vim.")
@click.option("--files", "files", multiple=True, metavar="PATH[:LINE]",
              help="Source to retype (repeatable); LINE is the first typed line. Default: two standard "
                   "library modules plus the shipped JavaScript, Go and C files.")
@click.option("--lines", "n_lines", type=click.IntRange(1, 10000), help="Lines typed per file (default 10).")
@click.option("--rate", type=click.FloatRange(0.5, 100), default=8.0, show_default=True,
              help="Typing speed in characters per second.")
@click.option("--compressed", is_flag=True,
              help="Skip idle time: keys between pauses back to back, a pause ends with its answer.")
@click.option("--realtime", is_flag=True, help="Real time (the default) also with --quick.")
@click.option("--quick", is_flag=True, help="A short compressed replay, no peer (well under 2 minutes on 2 cores).")
@click.option("--tokens", type=click.IntRange(1, 1024), default=SPEED_TOKENS, show_default=True,
              help="Tokens generated per request, on both sides, in the speed comparison.")
@click.option("--compare-rules", "compare_rules", metavar="RULE,...",
              help=f"Post-processing rules left out in the second run of ours (default: those of "
                   f"{', '.join(NEW_RULES)} that exist; '' for no such run).")
@click.option("--load", type=click.IntRange(0, 64), default=0, show_default=True,
              help="CPU-bound processes to run beside the benchmark (stopped at the end).")
@click.option("--skip", multiple=True, type=click.Choice(SCENARIOS), help="Leave a part of the run out.")
@click.option("--json", "json_path", metavar="PATH", help="Write the full report as JSON ('-' for stdout).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw latency CDFs (matplotlib).")
@click.option("--time-budget-ms", type=click.IntRange(1), default=None,
              help=f"Every run's budget per request (default: ours as configured, the no-reuse baseline "
                   f"{BASELINE_TIME_BUDGET_MS:,} ms so that it finishes every answer).")
@click.option("--editors", type=click.IntRange(1, 16), default=None,
              help="Instead of the replay: memory of N editors sharing the daemon vs N self-contained "
                   "servers.")
@click.option("--daemon", is_flag=True,
              help="Serve the replays through a (private) shared daemon, as editors do by default.")
def command(model, peer, files, n_lines, rate, compressed, realtime, quick, tokens, compare_rules, load, skip,
            json_path, plot_path, time_budget_ms, editors, daemon) -> None:
    """Replay typing through the language server and measure: speed against llama-server (--peer), what the user
    receives, reuse against a no-reuse baseline, and scenarios."""
    if editors is not None:
        _memory(editors, model, json_path)
        return
    if compressed and realtime:
        raise UserError("--compressed and --realtime contradict each other")
    from codecomplete.config import load_settings
    from codecomplete.tools.testmodel import resolve_model_option

    def echo(msg: str) -> None:
        click.echo(msg, err=True)

    if n_lines is None:
        n_lines = QUICK_LINES if quick else FULL_LINES
    if quick and not files:
        files = [str(p) for p in default_files()[:1]] + [str(p) for p in sorted(BENCH_DATA.glob("*.js"))[:1]]
    replays = build_replays(files, n_lines, rate)
    if model is None and peer:
        model = PEER_DEFAULT_MODEL
    configured = load_settings()
    threads = configured.n_threads or default_threads()
    options: dict[str, Any] = {}
    if quick:  # a smaller prompt so a cold evaluation (the baseline's every request) stays short on a slow CPU
        options["tokenBudget"] = QUICK_TOKEN_BUDGET
    if model:  # a path is made absolute: the servers resolve it, not this directory's reader
        model = resolve_model_option(model, progress=echo)
        local = Path(model).expanduser()
        options["model"] = str(local.resolve()) if local.exists() else model
    if time_budget_ms is not None:
        options["timeBudgetMs"] = time_budget_ms
    speed_options = {**options, "postprocess": False, "maxTokens": tokens, "maxTokensSingleLine": tokens,
                     "nThreads": threads}
    pair = default_files()
    py, js = pair[0], next((p for p in pair if p.suffix == ".js"), pair[-1])
    alt_lines = n_lines if not quick else 4
    plan = Plan(
        replays=replays, options=options, speed_options=speed_options, realtime=realtime or not (compressed or quick),
        daemon=daemon, overhead_requests=QUICK_OVERHEAD_REQUESTS if quick else FULL_OVERHEAD_REQUESTS,
        rules=new_rules(compare_rules),
        alternate=[build_replay(p, alt_lines, rate, None, 20 + i) for i, p in enumerate(pair[:2])],
        alternate_every=QUICK_ALTERNATE_EVERY_LINES if quick else ALTERNATE_EVERY_LINES,
        two_editors=[build_replay(p, QUICK_TWO_EDITOR_LINES if quick else min(n_lines, TWO_EDITOR_LINES), rate, None,
                                  30 + i) for i, p in enumerate((py, js))],
        peer=bool(peer), tokens=tokens, threads=threads, n_ctx=configured.n_ctx, skip=frozenset(skip), load=load,
        quick=quick,
    )
    if peer:
        from codecomplete.tools.llama_server import ensure_llama_server

        ensure_llama_server(progress=echo)  # built once (minutes), before anything is timed
    with cpu_load(load) as pids:
        if pids:
            echo(f"load: {len(pids)} CPU-bound processes beside the run (pids {', '.join(map(str, pids))})")
        report = asyncio.run(run_bench(plan, echo))
    if json_path:  # first: a plot that cannot be drawn must not lose the report
        _write_json(report, json_path)
    if json_path != "-":
        click.echo(render_table(report))
    if plot_path:
        plot_cdf(report, Path(plot_path))


def _memory(editors: int, model: str | None, json_path: str | None) -> None:
    """RSS/PSS of N thin LSPs + one daemon vs N self-contained servers, each with the model loaded."""
    from codecomplete.tools.memory import memory_benchmark

    result = memory_benchmark(editors, model=model)
    click.echo(f"{editors} editors, shared daemon: {result['shared_rss_mb']} MB RSS "
               f"({result['shared_pss_mb']} MB PSS)")
    click.echo(f"{editors} editors, self-contained: {result['self_contained_rss_mb']} MB RSS "
               f"({result['self_contained_pss_mb']} MB PSS)")
    for kind in ("rss", "pss"):
        click.echo(f"self-contained/shared {kind.upper()}: {result[f'ratio_{kind}']:.2f}x")
    if json_path:
        _write_json(result, json_path)


def _write_json(report: dict[str, Any], json_path: str) -> None:
    """The report as JSON on stdout (``-``) or in a file; an unwritable path is a one-line error."""
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if json_path == "-":
        click.echo(text)
        return
    try:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {json_path}: {exc}") from None
