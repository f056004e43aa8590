"""The scheduler's policies (supersession, fairness, preemption, background work, caches, prefetch, pause, idle
unload, read-ahead) with a scripted engine: no model, milliseconds per test, and no dependence on the machine's
speed (every wait is on an event, with generous bounds that only a hang would reach)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from fakes import FakeEngine

from codecomplete.config import Settings
from codecomplete.errors import UserError
from codecomplete.serving.backend import LocalBackend
from codecomplete.serving.request import Request
from codecomplete.serving.scheduler import Scheduler, Unavailable
from codecomplete.serving.service import CompletionService
from codecomplete.types import StopReason

pytestmark = pytest.mark.timeout(30)

# Budgets pinned far above what a scripted engine needs: a busy machine must not change any outcome.
SETTINGS = Settings(time_budget_ms=600_000, max_tokens=64, max_tokens_single_line=64, prefetch=False)
TEXT = "def add(a, b):\n    return "


def request(key: str = "a.py", text: str = TEXT, settings: Settings = SETTINGS) -> Request:
    return Request(key, text, len(text), "python", settings)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(script="a + b")


def make(engine: FakeEngine, **options: float) -> Scheduler:
    service = CompletionService(SETTINGS, engine_factory=lambda _settings: engine)
    scheduler = Scheduler(service, **options)
    scheduler.start(preload=True)
    return scheduler


@pytest.fixture
def scheduler(engine: FakeEngine) -> Iterator[Scheduler]:
    scheduler = make(engine)
    yield scheduler
    scheduler.stop()


async def until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def test_a_request_is_answered_by_the_model_and_then_from_the_cache(scheduler: Scheduler,
                                                                          engine: FakeEngine) -> None:
    first = await scheduler.complete("editor", request())
    assert first.outcome is None and first.shown == "a + b" and first.completion.source == "model"
    again = await scheduler.complete("editor", request())
    assert again.shown == "a + b" and again.completion.source == "lru" and len(engine.prompts) == 1
    typed = await scheduler.complete("editor", request(text=TEXT + "a "))  # typing through the suggestion
    assert typed.shown == "+ b" and typed.completion.source == "typing_through" and len(engine.prompts) == 1


async def test_the_request_log_says_how_many_answers_were_rejected_before_the_shown_one() -> None:
    """The bench reads it to count suggestions that the model's next choice rescued."""
    engine = FakeEngine(script=")", next_choices=("a + b",))  # ")" would break the file
    scheduler = make(engine)
    try:
        done = await scheduler.complete("editor", request())
        assert done.shown == "a + b"
        assert scheduler.service.recent[-1]["next_choices"] == 1 and scheduler.service.recent[-1]["source"] == "model"
    finally:
        scheduler.stop()


async def test_a_newer_request_for_the_same_document_supersedes_a_running_one(engine: FakeEngine) -> None:
    engine.token_delay_s = 0.01
    engine.script = "x" * 1000
    scheduler = make(engine)
    try:
        older = asyncio.ensure_future(scheduler.complete("editor", request()))
        await until(lambda: scheduler.running is not None and engine.started.is_set(), "the first generation")
        engine.script = "y"
        newer = await scheduler.complete("editor", request(text=TEXT + "a"))
        first = await older
        assert first.outcome == StopReason.SUPERSEDED and first.shown == ""
        assert newer.outcome is None and newer.shown == "y"
    finally:
        scheduler.stop()


async def test_queued_requests_of_a_document_keep_only_the_newest(engine: FakeEngine) -> None:
    engine.token_delay_s = 0.01
    engine.script = "x" * 1000
    scheduler = make(engine)
    try:
        blocker = asyncio.ensure_future(scheduler.complete("editor", request("other.py")))
        await until(lambda: engine.started.is_set(), "the blocking generation")
        queued = [asyncio.ensure_future(scheduler.complete("editor", request(text=TEXT + c))) for c in "abc"]
        await until(lambda: scheduler.queue_length() == 1, "one queued request")
        engine.script = "z"
        scheduler.cancel(scheduler.running.id)  # the blocker
        answers = await asyncio.gather(*queued)
        assert [a.outcome for a in answers] == [StopReason.SUPERSEDED, StopReason.SUPERSEDED, None]
        assert answers[-1].shown == "z" and (await blocker).outcome == StopReason.CANCELLED
    finally:
        scheduler.stop()


async def test_clients_take_turns(engine: FakeEngine) -> None:
    order: list[str] = []
    engine.script = lambda prompt: order.append(prompt.splitlines()[0]) or "ok"
    gate = threading.Event()
    scheduler = make(engine)
    try:
        hold = scheduler.new_job("holder", lambda _cancel: gate.wait(10), key="hold")
        scheduler.submit(hold)
        await until(lambda: scheduler.running is hold, "the held model thread")
        a = [asyncio.ensure_future(scheduler.complete("editor-a", request(f"a{i}.py", f"# a{i}\nx = ")))
             for i in range(3)]
        b = asyncio.ensure_future(scheduler.complete("editor-b", request("b.py", "# b\nx = ")))
        await until(lambda: scheduler.queue_length() == 4, "four queued requests")
        gate.set()
        await asyncio.gather(*a, b)
        assert order == ["# a0", "# b", "# a1", "# a2"]  # b is served second, not after all of a's
    finally:
        scheduler.stop()


async def test_editors_that_come_and_go_leave_no_state_behind(scheduler: Scheduler) -> None:
    """A tray daemon runs for weeks; each editor restart is a new client."""
    for i in range(300):
        answer = await scheduler.complete(f"editor-{i}", request(f"{i}.py", f"# {i}\nx = "))
        assert answer.shown == "a + b"
    assert len(scheduler._turn) <= 65 and len(scheduler._queues) <= 65


async def test_a_long_generation_gives_way_after_its_fair_slice(engine: FakeEngine) -> None:
    engine.token_delay_s = 0.005
    engine.script = "line = 1\n" * 300
    scheduler = make(engine, fair_slice_s=0.05)
    try:
        long = asyncio.ensure_future(scheduler.complete("editor-a", request(settings=SETTINGS.with_overrides(
            {"postprocess": False, "max_tokens": 4096, "max_tokens_single_line": 4096}))))
        await until(lambda: engine.generated >= 30, "a few lines of the long generation")
        engine.script = "b"
        started = time.monotonic()
        other = await scheduler.complete("editor-b", request("b.py"))
        waited = time.monotonic() - started
        first = await long
        assert other.shown == "b" and waited < 5  # a slice plus a token, far from the 13 s the script would take
        assert first.outcome == StopReason.PREEMPTED and first.shown.endswith("line = 1")  # complete lines kept
    finally:
        scheduler.stop()


async def test_background_work_gives_way_to_any_request(scheduler: Scheduler, engine: FakeEngine) -> None:
    stopped = threading.Event()

    def background(cancel) -> None:
        while not cancel.is_set():
            time.sleep(0.001)
        stopped.set()

    scheduler.submit(scheduler.new_job("editor", background, background=True, waited=False))
    await until(lambda: scheduler.running is not None, "the background job")
    answer = await scheduler.complete("editor", request())
    assert stopped.is_set() and answer.shown == "a + b"


async def test_the_next_suggestion_is_prefetched_after_an_answer(engine: FakeEngine) -> None:
    # the prompt ends before the cursor's last token, which the model re-types first (token healing)
    engine.script = lambda prompt: " a + b\n" if prompt.endswith("return") else "\nprint(add(1, 2))"
    scheduler = make(engine)
    try:
        settings = SETTINGS.with_overrides({"prefetch": True})
        shown = await scheduler.complete("editor", request(settings=settings))
        accepted = TEXT + shown.shown
        await until(lambda: scheduler.service.stats.prefetched == 1, "the prefetch")
        after = await scheduler.complete("editor", request(text=accepted, settings=settings))
        assert after.completion.source == "prefetch" and len(engine.prompts) == 2
    finally:
        scheduler.stop()


async def test_cancel_stops_the_running_generation(engine: FakeEngine) -> None:
    engine.token_delay_s = 0.01
    engine.script = "x" * 1000
    scheduler = make(engine)
    try:
        job_id = "job-1"
        running = asyncio.ensure_future(scheduler.complete("editor", request(), job_id=job_id))
        await until(lambda: engine.started.is_set(), "the generation")
        assert scheduler.cancel(job_id)
        answer = await running
        assert answer.outcome == StopReason.CANCELLED and answer.shown == ""
        assert answer.completion.tokens["generated"] < 1000
        assert not scheduler.cancel("no-such-job")
    finally:
        scheduler.stop()


async def test_cancelling_the_waiting_task_stops_the_model(engine: FakeEngine) -> None:
    engine.token_delay_s = 0.01
    engine.script = "x" * 1000
    scheduler = make(engine)
    try:
        task = asyncio.ensure_future(scheduler.complete("editor", request()))
        await until(lambda: engine.started.is_set(), "the generation")
        task.cancel()  # what $/cancelRequest does to an LSP handler
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: scheduler.running is None, "the model thread to stop")
    finally:
        scheduler.stop()


async def test_pause_refuses_model_work_until_resumed(scheduler: Scheduler) -> None:
    scheduler.pause()
    with pytest.raises(Unavailable, match="paused"):
        await scheduler.complete("editor", request())
    scheduler.resume()
    assert (await scheduler.complete("editor", request())).shown == "a + b"


async def test_an_idle_model_is_unloaded_and_reloaded_on_demand(engine: FakeEngine) -> None:
    scheduler = make(engine, idle_unload_s=0.05)
    try:
        await scheduler.complete("editor", request())
        await until(lambda: scheduler.unloaded, "the idle unload")
        assert engine.closed and scheduler.unloads == 1
        engine.closed = False
        answer = await scheduler.complete("editor", request("b.py"))
        assert answer.shown == "a + b" and scheduler.loads == 2 and not scheduler.unloaded
    finally:
        scheduler.stop()


async def test_read_ahead_runs_its_preparation_and_always_reports_done(scheduler: Scheduler) -> None:
    prepared, done = threading.Event(), threading.Event()
    scheduler.warm("editor", "a.py", TEXT * 50, lambda _cancel: prepared.set(), done.set)
    await until(done.is_set, "the read-ahead")
    assert prepared.is_set()
    scheduler.pause()  # nothing may run: done still comes
    done.clear()
    scheduler.warm("editor", "a.py", TEXT, None, done.set)
    await until(done.is_set, "the read-ahead's done")


async def test_the_editors_own_server_runs_through_the_same_scheduler(engine: FakeEngine) -> None:
    engine.token_delay_s = 0.01
    engine.script = "x" * 1000
    backend = LocalBackend(SETTINGS)
    backend.service._engine_factory = lambda _settings: engine
    try:
        await backend.load()
        assert backend.ready
        running = asyncio.ensure_future(backend.complete(request()))
        await until(lambda: engine.started.is_set(), "the generation")
        backend.forget("a.py")  # the document was closed: its request stops
        assert (await running).outcome == StopReason.CANCELLED
        delivered = []
        engine.token_delay_s, engine.script = 0.0, "y"
        answer = await backend.complete(request(text=TEXT + "\n"), deliver=lambda c, _cancel: delivered.append(c))
        assert answer.shown == "y" and delivered == [answer.completion]
        assert backend.last_completion()["completion"] == "y"
    finally:
        backend.close()


async def test_a_switch_that_cannot_load_keeps_the_previous_model_serving(engine: FakeEngine) -> None:
    def factory(settings: Settings) -> FakeEngine:
        if settings.n_ctx == 8192:
            raise UserError("cannot load model fake.gguf: n_ctx 8192 is more than it was trained for (4096)")
        return engine

    service = CompletionService(SETTINGS, engine_factory=factory)
    scheduler = Scheduler(service)
    scheduler.start(preload=True)
    try:
        with pytest.raises(UserError, match="trained for .*still serving with the previous settings"):
            await scheduler.switch("editor", SETTINGS.with_overrides({"n_ctx": 8192}))
        assert service.settings.n_ctx == SETTINGS.n_ctx and service.ready
        assert (await scheduler.complete("editor", request())).shown == "a + b"
    finally:
        scheduler.stop()


async def test_a_cold_window_is_cut_to_fit_the_time_budget_and_the_full_one_prefilled() -> None:
    """On a slow machine the first answer in a file comes from a window that fits the budget; meanwhile the full
    window is evaluated in the background, and the next keystroke gets the full context at a keystroke's cost."""
    engine = FakeEngine(script="total", prompt_delay_s=0.002)  # ~500 prompt tokens/s: a slow CPU, scripted
    settings = Settings(time_budget_ms=300, token_budget=400, max_tokens=8, max_tokens_single_line=8,
                        prefetch=False)
    scheduler = make(engine)
    text = "".join(f"value_{i} = compute({i})\n" for i in range(60))
    try:
        first = await scheduler.complete("editor", request(text=text, settings=settings))
        assert first.completion.windows_cut and first.shown == "total"
        assert len(first.completion.prompt_token_ids) < 250  # what fits ~0.2 s at ~500 tokens/s
        await until(lambda: len(engine.prompts) >= 2 and scheduler.running is None and not scheduler.queue_length(),
                    "the prefill", timeout=20)
        assert len(engine.prompts) == 2, [len(p) for p in engine.prompts]
        full = engine.prompts[-1]
        assert len(full) > 350  # the settings' budget: 400 tokens of the file
        typed = await scheduler.complete("editor", request(text=text + "x", settings=settings))
        assert not typed.completion.windows_cut and len(typed.completion.prompt_token_ids) > 350
        assert typed.completion.tokens["evaluated"] < 32  # the prefilled window was reused
    finally:
        scheduler.stop()
