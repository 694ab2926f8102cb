"""Running projections: catch up once, follow the log in a thread, wait, rebuild.

    runner = ProjectionRunner(engine)          # views beside the engine's store
    runner.run_once()                          # apply everything stored so far -> events read
    runner.start(); runner.wake()              # follow in a daemon thread; nudge after a save
    runner.hurry()                             # a reader waits for a write: a pass now
    runner.wait(engine.max_notification_id(), timeout=5)   # read-your-writes (hurries)
    runner.rebuild(["workflows"], on_progress=bar)         # drop, recreate, replay the log
    runner.stop(); runner.close()

    run_projections_once(engine) -> int        # the same as a one-liner

Each view follows the log with a `LogFollower` under its name, given the views' reader
(`stepflow.projections.log`: `engine.notifications` without its per-row overhead) and their
position store (the view store's `sf_tracking`). A batch is read once and handed to every view
that is behind; they apply it in one transaction, each in a savepoint of it that also moves
its tracking row (`LogFollower.advance`, `ViewStore.advance_in`): one write lock and one
commit a batch, not one a view, since the event store waits for the same lock on SQLite. A
crash between batches loses nothing and applies nothing twice. Views at different positions (one being rebuilt) take from the shared
batch only what they have not applied. Positions are read once a pass, and again for a view
another runner moved. After every pass the runner tells its `on_pass` listeners the position
every view has reached (the HTTP API's read-your-writes waits on that, not on the store).

Following the log: PostgreSQL notifies a channel after every insert, and the runner
`LISTEN`s on it (falling back to polling if it cannot). SQLite has no notifications, so the
runner polls: after a pass that found nothing it sleeps `poll_interval` seconds (default
0.5) or until `wake()` is called, which a backend in the same process does after storing
events, so embedded mode sees its own writes at once. The cost of polling an idle store is
one `SELECT MAX(rowid)` and one tracking read per interval.

Under load the passes are paced: a pass that found events is followed by the next one no
sooner than `PASS_EVERY_S` after it began, however often `wake()` is called. A pass has a
fixed cost (the log's end, the positions, a write transaction) and shares the process's GIL
with the backend and the HTTP API, so a pass per inbound batch or per start commit cost more
than the views were worth; paced, each pass applies what tens of commits stored. A backlog
still drains at full speed (a pass longer than the interval is followed at once), and a
reader that waits for its own write (`hurry()`: `wait`, the HTTP API after a command) ends
the pause at once.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, Protocol

import structlog

from stepflow.engine import events as ev
from stepflow.engine.follower import LogFollower
from stepflow.projections.definition_stats import DefinitionStatsProjection
from stepflow.projections.job_stats import JobStatsProjection
from stepflow.projections.log import log_reader
from stepflow.projections.opening import open_view_store
from stepflow.projections.store import PositionMoved, Table, Tx, ViewStore
from stepflow.projections.worker_orders import WorkerOrdersProjection
from stepflow.projections.workflows import WorkflowsProjection

log = structlog.get_logger("stepflow.projections")

BATCH_SIZE = 1000
REBUILD_BATCH_SIZE = 50_000
POLL_INTERVAL = 0.5
PASS_EVERY_S = 0.05  # under load, at most one pass this often unless a reader waits (`hurry`)
BIG_BACKLOG = 100_000  # events behind: collect garbage less often while catching up

Progress = Callable[[int, int], None]  # (position reached, target position)


class Projection(Protocol):
    """A view built from the log: tables, and `apply` for a batch of (notification id, event).

    `apply` gets the position the view is at, so the projection may keep rows cached from
    its previous batch; `committed(position)` says the batch is stored, `forget()` that it
    was not (drop anything cached).
    """

    name: ClassVar[str]
    schema_version: ClassVar[int]
    tables: ClassVar[tuple[Table, ...]]

    def apply(self, tx: Tx, batch: Sequence[tuple[int, ev.Event]], position: int | None = None) -> None: ...

    def committed(self, position: int) -> None: ...

    def forget(self) -> None: ...


def default_projections() -> list[Projection]:
    return [WorkflowsProjection(), JobStatsProjection(), DefinitionStatsProjection(), WorkerOrdersProjection()]


class ProjectionRunner:
    def __init__(self, engine: Any, store: ViewStore | None = None,
                 projections: Sequence[Projection] | None = None, *, batch_size: int = BATCH_SIZE,
                 poll_interval: float = POLL_INTERVAL, pass_every: float = PASS_EVERY_S) -> None:
        self.engine = engine
        self._own_store = store is None
        self.store = store if store is not None else open_view_store(engine)
        self.projections = list(projections) if projections is not None else default_projections()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.pass_every = pass_every
        self.last_error: BaseException | None = None
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pass_lock = threading.Lock()
        self._read = log_reader(engine)
        self._on_pass: list[Callable[[int], None]] = []
        for projection in self.projections:
            self.store.ensure(projection)
        self._positions = _PassPositions(self.store)
        self.followers = {p.name: LogFollower(engine, p.name, reader=self._read, positions=self._positions,
                                              batch_size=batch_size) for p in self.projections}

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.projections]

    def positions(self) -> dict[str, int]:
        return self.store.positions(self.names)

    def on_pass(self, listener: Callable[[int], None]) -> None:
        """Call `listener(position)` after every pass, in the pass's thread: every view has
        applied the log up to `position` (the lowest of them; lower than before after a reset).
        A caller waiting for its write wakes the runner and waits for a pass that covers it,
        instead of polling the store (see `stepflow.adapters.http.services`)."""
        self._on_pass.append(listener)

    # --- catching up ---------------------------------------------------------------------

    def run_once(self, *, until: int | None = None, batch_size: int | None = None,
                 on_progress: Progress | None = None, only: Sequence[str] | None = None) -> int:
        """Apply the log up to `until` (default: its end now); return how many events were read."""
        with self._pass_lock:
            return self._run(until, batch_size or self.batch_size, on_progress, only)

    def _run(self, until: int | None, batch_size: int, on_progress: Progress | None,
             only: Sequence[str] | None) -> int:
        target = until if until is not None else self.engine.max_notification_id()
        projections = [p for p in self.projections if only is None or p.name in only]
        positions = self.store.positions([p.name for p in projections])  # in one read, not one a view
        for projection in projections:
            self.followers[projection.name].reload(positions[projection.name])
        backlog = target - min(positions.values(), default=target)
        with _fewer_collections(backlog > BIG_BACKLOG):
            read = self._batches(projections, target, batch_size, on_progress)
        if read:
            log.debug("projections_applied", events=read, position=target)
        if self._on_pass:
            reached = min((f.position for f in self.followers.values()), default=target)
            for listener in self._on_pass:
                listener(reached)
        return read

    def _batches(self, projections: list[Projection], target: int, batch_size: int,
                 on_progress: Progress | None) -> int:
        read = 0
        following = [(p, self.followers[p.name]) for p in projections]
        while True:
            behind = [(p, f) for p, f in following if f.position < target]
            if not behind:
                break
            lowest = min((f for _, f in behind), key=lambda f: f.position)
            start = lowest.position
            batch = lowest.read(limit=batch_size, stop=target)
            if not batch:
                break
            last = batch[-1][0]
            self._apply(behind, batch, start, last)
            read += len(batch)
            if on_progress is not None:
                on_progress(last, target)
        return read

    def _apply(self, behind: list[tuple[Projection, LogFollower]], batch: list[tuple[int, ev.Event]],
               start: int, last: int) -> None:
        """The batch, to every view behind, in ONE write transaction (each view a savepoint of
        it: `ViewStore.advance_in`). A view whose position another runner moved is left out
        and reloaded; any other failure rolls the whole batch back for every view."""
        applied: list[Projection] = []
        moved: list[tuple[Projection, LogFollower]] = []
        before = [follower.position for _, follower in behind]
        try:
            with self.store.write() as tx:
                self._positions.tx = tx
                for projection, follower in behind:
                    position = follower.position
                    mine = batch if position == start else [item for item in batch if item[0] > position]
                    if not mine:
                        continue
                    try:
                        with follower.advance(last) as view_tx:
                            projection.apply(view_tx, mine, position)
                    except PositionMoved:
                        moved.append((projection, follower))
                    else:
                        applied.append(projection)
        except BaseException:
            for (projection, follower), position in zip(behind, before, strict=True):  # nothing was stored
                projection.forget()
                follower.reload(position)
            raise
        finally:
            self._positions.tx = None
        for projection in applied:
            projection.committed(last)
        for projection, follower in moved:
            projection.forget()
            follower.reload()
            log.debug("projection_position_moved", view=projection.name)

    def rebuild(self, names: Sequence[str] | None = None, *, batch_size: int = REBUILD_BATCH_SIZE,
                on_progress: Progress | None = None) -> int:
        """Drop the named views (default: all), recreate them empty and replay the whole log."""
        chosen = [p for p in self.projections if names is None or p.name in names]
        unknown = set(names or ()) - {p.name for p in chosen}
        if unknown:
            raise KeyError(f"unknown view(s): {', '.join(sorted(unknown))}")
        with self._pass_lock:
            for projection in chosen:
                projection.forget()
                self.store.reset(projection, indexes=False)
                log.info("view_reset", view=projection.name)
            started = time.perf_counter()
            read = self._run(None, batch_size, on_progress, [p.name for p in chosen])
            for projection in chosen:
                self.store.finish_rebuild(projection)
        elapsed = time.perf_counter() - started
        log.info("views_rebuilt", views=[p.name for p in chosen], events=read, seconds=round(elapsed, 2))
        return read

    # --- following -------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the log in a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._follow, name="stepflow-projections", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New events were stored: run a pass now instead of at the next poll (under load, at
        the end of the pause between passes)."""
        self._wake.set()

    def hurry(self) -> None:
        """A reader waits for a write that is stored: run a pass now, pause or not."""
        self._hurry.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._hurry.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait(self, notification_id: int, timeout: float = 10.0) -> bool:
        """Block until every view has applied `notification_id`; False on timeout."""
        self.hurry()
        return self.store.wait(self.names, notification_id, timeout)

    def close(self) -> None:
        self.stop()
        close = getattr(self._read, "close", None)
        if close is not None:
            close()
        if self._own_store:
            self.store.close()

    def _follow(self) -> None:
        waiter = self._waiter()
        failures = 0
        try:
            while not self._stopping.is_set():
                self._wake.clear()  # what woke us is stored by now: this pass covers it
                self._hurry.clear()
                began = time.monotonic()
                try:
                    read = self.run_once()
                    self.last_error, failures = None, 0
                except Exception as error:  # keep following: the store may come back
                    failures += 1
                    self.last_error = error
                    delay = min(30.0, self.poll_interval * 2 ** failures)
                    log.exception("projection_failed", retry_in_s=delay)
                    self._stopping.wait(delay)
                    continue
                if not read:
                    waiter()
                else:  # paced: what is stored meanwhile waits for the next pass, or a reader
                    self._hurry.wait(began + self.pass_every - time.monotonic())
        finally:
            close = getattr(waiter, "close", None)
            if close is not None:
                close()

    def _waiter(self) -> Callable[[], None]:
        listen = getattr(self.store, "listen_connection", None)
        channel = getattr(self.engine.recorder, "channel_name", None)
        if listen is not None and channel:
            try:
                return _Listener(listen(channel), self)
            except Exception:
                log.warning("projection_listen_failed_polling_instead", exc_info=True)
        return self._sleep

    def _sleep(self) -> None:
        self._wake.wait(self.poll_interval)
        self._wake.clear()


class _PassPositions:
    """The followers' positions: the view store's, moved inside the pass's transaction while
    one is open (`ProjectionRunner._apply`), else in a transaction of their own."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store
        self.tx: Tx | None = None

    def position(self, name: str) -> int | None:
        return self.store.position(name)

    def advance(self, name: str, expected: int, position: int) -> AbstractContextManager[Tx]:
        if self.tx is not None:
            return self.store.advance_in(self.tx, name, expected, position)
        return self.store.advance(name, expected, position)


class _Listener:
    """Wait for a PostgreSQL notification (or `wake()`, or the poll interval as a backstop)."""

    def __init__(self, conn: Any, runner: ProjectionRunner) -> None:
        self.conn = conn
        self.runner = runner

    def __call__(self) -> None:
        if self.runner._wake.is_set():
            self.runner._wake.clear()
            return
        for _ in self.conn.notifies(timeout=min(self.runner.poll_interval, 0.5), stop_after=1):
            pass

    def close(self) -> None:
        self.conn.close()


@contextmanager
def _fewer_collections(enabled: bool) -> Iterator[None]:
    """While replaying a long log, run the cycle collector 50x less often.

    A batch holds tens of thousands of young objects that all survive a collection, so the
    default thresholds collect over and over for nothing (a third of a rebuild's time). The
    thresholds are process-wide; they are restored when the catch-up ends.
    """
    if not enabled:
        yield
        return
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def run_projections_once(engine: Any, store: ViewStore | None = None,
                         projections: Sequence[Projection] | None = None) -> int:
    """Bring the views up to date with the log now; return the number of events read."""
    runner = ProjectionRunner(engine, store, projections)
    try:
        return runner.run_once()
    finally:
        runner.close()
