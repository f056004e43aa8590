"""One model thread and the one policy for what it does next, for the shared daemon and for an editor's own server.

llama.cpp state is single-threaded, so every piece of model work is a job run by the scheduler's model thread:

- per client, round robin: a client that sends many requests cannot starve another;
- per (client, document) only the newest request survives: an older one still queued is dropped, a running one
  stops within a token (llama.cpp stops within a graph node);
- a generation that has had its fair slice stops (keeping its complete lines) as soon as another client waits;
- background work (a prefetch, reading a document ahead) yields at once to any request;
- cached answers are served on the event loop without queueing; after a model answer, the next suggestion for
  where accepting it leaves the cursor is computed in the background (Tab-Tab-Tab);
- the model loads on first use, unloads after an idle time and reloads on demand.

An editor's own server (``codecomplete lsp --no-daemon``) runs the same scheduler with a single client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codecomplete.config import Settings
from codecomplete.core.interrupt import Interrupt
from codecomplete.core.pipeline import Completion
from codecomplete.errors import UserError, quietly
from codecomplete.serving.request import Answer, Deliver, Request
from codecomplete.serving.service import CompletionService
from codecomplete.types import StopReason

log = logging.getLogger(__name__)

HISTOGRAM_MS = (50, 100, 200, 500, 1000, 2000, 5000)
_REMEMBERED_CLIENTS = 64  # clients whose last turn is kept; one that went quiet has nothing queued


class Unavailable(UserError):
    """Nothing can be served now (paused, the model failed to load, shutting down): HTTP 503 at the daemon."""


class JobCancel(Interrupt):
    """The flag a job's work checks (a generation: after every token; llama.cpp: between graph nodes).

    Set on cancel or supersession; it also reads as set once the job has had its fair slice while a request from
    another client waits: the engine then stops as on a time budget, keeping the complete lines. A
    ``background`` job yields at once to any queued request.
    """

    def __init__(self, scheduler: Scheduler, client: str, background: bool = False) -> None:
        super().__init__()
        self._scheduler = scheduler
        self._client = client
        self.background = background
        self.started: float | None = None
        self.preempted = False

    def is_set(self) -> bool:
        if self.preempted or super().is_set():
            return True
        if self.background and self._scheduler.waiting:
            self.preempted = True
            return True
        started = self.started
        if (started is not None and time.monotonic() - started > self._scheduler.fair_slice_s
                and self._scheduler.others_waiting(self._client)):
            self.preempted = True
        return self.preempted

    def make_way(self) -> None:
        """A request was queued: a background job stops now, within llama.cpp's evaluation too."""
        if self.background:
            self.preempted = True
            self.set()


@dataclass(eq=False)
class Job:
    """A piece of model work. ``future`` is None for work nobody waits for (background jobs)."""

    id: str
    client: str
    key: str | None  # only the newest job per (client, key) survives; None: never superseded
    work: Callable[[JobCancel], Any]
    cancel: JobCancel
    future: asyncio.Future | None = None
    needs_model: bool = True
    always_run: bool = False  # run even when cancelled before it started (its work checks the flag itself)
    queued_at: float = field(default_factory=time.monotonic)
    outcome: StopReason | None = None  # superseded, cancelled, preempted, disconnected, paused, shutdown


class Histogram:
    """Counts of end-to-end latencies (queueing included: what an editor waits) per bucket."""

    def __init__(self) -> None:
        self.counts = [0] * (len(HISTOGRAM_MS) + 1)

    def add(self, ms: float) -> None:
        self.counts[next((i for i, edge in enumerate(HISTOGRAM_MS) if ms <= edge), len(HISTOGRAM_MS))] += 1

    def to_json(self) -> dict[str, int]:
        labels = [f"<={edge}" for edge in HISTOGRAM_MS] + [f">{HISTOGRAM_MS[-1]}"]
        return dict(zip(labels, self.counts))


class Scheduler:
    """The model thread, its queue and the policies above. Submitting is thread-safe; ``complete`` is async."""

    def __init__(self, service: CompletionService, *, idle_unload_s: float = 0.0, fair_slice_s: float = 2.0) -> None:
        self.service = service
        self.idle_unload_s = idle_unload_s
        self.fair_slice_s = fair_slice_s
        self.running: Job | None = None
        self.paused = False
        self.loads = 0
        self.unloads = 0
        self.last_load_ms: float | None = None
        self.unloaded = False  # the model was unloaded for idleness and reloads on demand
        self.histogram = Histogram()
        self.last_active = time.monotonic()
        # Clients with a queued request (not background work): read lock-free by JobCancel. Background work gives
        # way to requests only; queued behind one another, background jobs simply take turns.
        self.waiting: frozenset[str] = frozenset()
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Job]] = {}
        self._turn: dict[str, int] = {}  # client → serial of its last turn: least recently served goes first
        self._serial = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- requests ---------------------------------------------------------------------------------------

    async def complete(
        self, client: str, request: Request, *, job_id: str | None = None, supersede: bool = True,
        deliver: Deliver | None = None,
    ) -> Answer:
        """A suggestion for ``request``: from the caches at once when they have it, else from the model.

        With ``supersede`` it replaces the client's queued or running request for the same document.
        ``deliver`` is called in the model thread with the completion before the answer goes back to the event
        loop (an editor's server writes it from there: a thread wake-up less per keystroke)."""
        cached = self.service.lookup(request)
        if cached is not None:
            self.make_way()  # a request came: background work gives way
            self._prefetch_after(client, request, cached)
            return Answer(cached)

        def work(cancel: JobCancel) -> Completion:
            result = self.service.generate(request, cancel)
            if deliver is not None and not cancel.is_set():
                deliver(result, cancel)
            return result

        job = self.new_job(client, work, key=request.key if supersede else None, job_id=job_id)
        self.submit(job)
        assert job.future is not None
        try:
            result = await job.future
        except asyncio.CancelledError:  # the client gave up ($/cancelRequest): stop the model within a token
            self.cancel(job.id)
            raise
        if result is not None and job.outcome is None:
            self._prefetch_after(client, request, result)
        return Answer(result, job.outcome)

    def _prefetch_after(self, client: str, request: Request, shown: Completion) -> None:
        """Background work after an answer: the full window when this one was cut for time, then the next
        suggestion for where accepting this one leaves the cursor."""
        if self.paused:
            return
        if shown.windows_cut:
            self.submit(self.new_job(client, lambda cancel: self.service.prefill(request, cancel),
                                     key=request.key, background=True, waited=False))
        if shown.suggestion:
            self.submit(self.new_job(client, lambda cancel: self.service.prefetch(request, shown.suggestion, cancel),
                                     key=request.key, background=True, waited=False))

    def warm(self, client: str, key: str, text: str, prepare: Callable[[threading.Event], None] | None = None,
             done: Callable[[], None] | None = None) -> None:
        """Read a just-opened document ahead as background work: ``prepare`` (e.g. parse it), then count and
        tokenize its lines; ``done`` runs whatever happens."""

        def work(cancel: JobCancel) -> None:
            try:
                if prepare is not None:
                    prepare(cancel)
                if not cancel.is_set():
                    self.service.warm(text, cancel)
            finally:
                if done is not None:
                    done()

        job = self.new_job(client, work, background=True, needs_model=False, waited=False)
        job.always_run = True  # ``done`` must run; the work itself gives way where it can
        try:
            self.submit(job)
        except Unavailable:
            if done is not None:
                done()

    async def switch(self, client: str, settings: Settings) -> None:
        """Load the model these settings name, for everyone (as a job: in turn with the requests). When it cannot
        load, the previous settings and model stay and serve, and the caller gets the reason (UserError)."""

        def work(_cancel: JobCancel) -> None:
            previous, was_loaded = self.service.settings, self.service.completer is not None
            self.service.update_settings(settings)
            self.service.state = "idle"  # a reload even when only n_ctx or threads changed
            try:
                self._ensure_loaded()
            except UserError as exc:
                self.service.update_settings(previous)
                if was_loaded:
                    self.service.state = "idle"
                    self._ensure_loaded()
                else:
                    self.service.state, self.service.error = "idle", None
                raise UserError(f"{exc}; still serving with the previous settings") from None

        await self.run(self.new_job(client, work, needs_model=False))

    async def load(self, client: str) -> None:
        """Load the configured model now (an editor's server after ``initialized``)."""
        with contextlib.suppress(UserError):  # the error is in the service's status
            await self.run(self.new_job(client, lambda _cancel: self._ensure_loaded(), needs_model=False))

    async def run(self, job: Job) -> Any:
        self.submit(job)
        assert job.future is not None
        return await job.future

    # --- jobs -------------------------------------------------------------------------------------------

    def start(self, preload: bool = False) -> None:
        self._thread = threading.Thread(target=self._run, args=(preload,), name="codecomplete-model", daemon=True)
        self._thread.start()

    def new_job(self, client: str, work: Callable[[JobCancel], Any], *, key: str | None = None,
                job_id: str | None = None, needs_model: bool = True, background: bool = False,
                waited: bool = True) -> Job:
        """A job; ``waited`` ones get a future of the running event loop."""
        future = asyncio.get_running_loop().create_future() if waited else None
        return Job(id=job_id or uuid.uuid4().hex, client=client, key=key, work=work,
                   cancel=JobCancel(self, client, background), future=future, needs_model=needs_model)

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stopping:
                raise Unavailable("the server is shutting down")
            if self.paused and job.needs_model:
                raise Unavailable("completions are paused")
            queue = self._queues.setdefault(job.client, deque())
            if job.key is not None and not job.cancel.background:  # background work never supersedes a request
                for old in [j for j in queue if j.key == job.key]:
                    queue.remove(old)
                    self._finish(old, None, None, StopReason.SUPERSEDED)
                running = self.running
                if running is not None and running.client == job.client and running.key == job.key:
                    running.outcome = running.outcome or StopReason.SUPERSEDED
                    running.cancel.set()
            queue.append(job)
            self._update_waiting()
            if self.running is not None and not job.cancel.background:
                self.running.cancel.make_way()
            self._cond.notify()
        return job

    def make_way(self) -> None:
        """A request is being answered without the model: a running background job stops anyway."""
        running = self.running
        if running is not None:
            running.cancel.make_way()

    def cancel(self, job_id: str, outcome: StopReason = StopReason.CANCELLED) -> bool:
        with self._cond:
            running = self.running
            if running is not None and running.id == job_id:
                running.outcome = running.outcome or outcome
                running.cancel.set()
                return True
            for queue in self._queues.values():
                for job in queue:
                    if job.id == job_id:
                        queue.remove(job)
                        self._update_waiting()
                        self._finish(job, None, None, outcome)
                        return True
        return False

    def cancel_key(self, client: str, key: str, outcome: StopReason = StopReason.CANCELLED) -> None:
        """Cancel every job of one client's document (it was closed)."""
        with self._cond:
            queue = self._queues.get(client, deque())
            for job in [j for j in queue if j.key == key]:
                queue.remove(job)
                self._finish(job, None, None, outcome)
            self._update_waiting()
            running = self.running
            if running is not None and running.client == client and running.key == key:
                running.outcome = running.outcome or outcome
                running.cancel.set()

    def cancel_all(self, outcome: StopReason) -> None:
        with self._cond:
            for queue in self._queues.values():
                while queue:
                    self._finish(queue.popleft(), None, None, outcome)
            self._update_waiting()
            if self.running is not None:
                self.running.outcome = self.running.outcome or outcome
                self.running.cancel.set()

    def pause(self) -> None:
        self.paused = True
        self.cancel_all(StopReason.PAUSED)

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.cancel_all(StopReason.SHUTDOWN)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not (self._thread and self._thread.is_alive()):
            self.service.unload()

    def queue_length(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def others_waiting(self, client: str) -> bool:
        waiting = self.waiting
        return bool(waiting) and (len(waiting) > 1 or client not in waiting)

    def idle_left(self) -> float | None:
        if not self.idle_unload_s or self.service.completer is None:
            return None
        return self.last_active + self.idle_unload_s - time.monotonic()

    # --- the model thread -------------------------------------------------------------------------------

    def _update_waiting(self) -> None:
        self.waiting = frozenset(c for c, q in self._queues.items() if any(not j.cancel.background for j in q))

    def _finish(self, job: Job, value: Any, error: BaseException | None, outcome: StopReason | None) -> None:
        if outcome is not None:
            job.outcome = job.outcome or outcome
        future = job.future
        if future is None:
            return

        def resolve() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            future.get_loop().call_soon_threadsafe(resolve)

    def _pick(self) -> Job:
        client = min((c for c, q in self._queues.items() if q), key=lambda c: self._turn.get(c, -1))
        job = self._queues[client].popleft()
        self._serial += 1
        self._turn[client] = self._serial
        if len(self._turn) > _REMEMBERED_CLIENTS:  # editors come and go for the daemon's lifetime
            self._queues = {c: q for c, q in self._queues.items() if q}
            self._turn = {c: t for c, t in self._turn.items() if c in self._queues or c == client}
        self._update_waiting()
        return job

    def _run(self, preload: bool) -> None:
        if preload:
            with contextlib.suppress(UserError):  # the error is in the status; requests retry the load
                self._ensure_loaded()
        while True:
            with self._cond:
                job = None
                while not self._stopping:
                    if any(self._queues.values()):
                        job = self._pick()
                        self.running = job
                        break
                    left = self.idle_left()
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
                if self._stopping:
                    return
            if job is None:
                self._unload_idle()
            else:
                self._execute(job)

    def _execute(self, job: Job) -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            if job.needs_model:
                self._ensure_loaded()
            if job.always_run or not job.cancel.is_set():
                job.cancel.started = time.monotonic()  # the fair slice counts the work, not a model load
                value = job.work(job.cancel)
        except UserError as exc:
            error = exc
        except Exception as exc:  # a bug must cost one request, never the model thread
            log.exception("job %s failed", job.id)
            error = UserError(f"internal error: {exc}")
        with self._cond:
            self.running = None
            self.last_active = time.monotonic()
        if job.cancel.preempted and job.outcome is None:
            job.outcome = StopReason.PREEMPTED
        if error is None and job.needs_model and job.future is not None and job.outcome in (
                None, StopReason.PREEMPTED):
            self.histogram.add((time.monotonic() - job.queued_at) * 1000)
        if job.future is None and error is not None:
            quietly(_raise, error)  # background work: logged, nobody to tell
        self._finish(job, value, error, None)

    def _ensure_loaded(self) -> None:
        if self.service.ready:
            return
        start = time.perf_counter()
        self.service.load()
        self.loads += 1
        self.last_load_ms = (time.perf_counter() - start) * 1000
        self.unloaded = False
        self.last_active = time.monotonic()  # idleness counts from the end of the load, not from before it
        if not self.service.ready:
            raise Unavailable(self.service.error or "the model did not load")

    def _unload_idle(self) -> None:
        if self.service.completer is None:
            return
        self.service.unload()
        self.unloads += 1
        self.unloaded = True
        log.info("model unloaded after %.0fs idle", self.idle_unload_s)


def _raise(error: BaseException) -> None:
    raise error
