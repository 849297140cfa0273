"""The model worker processes of ``emotion-lightning serve``: supervised, batched, answered once each.

Each worker is a process of its own (spawned, so it shares no state with the server) that loads the model once
and predicts one batch of requests at a time, sent over a pipe. The server holds one dispatch thread per worker:
it takes the requests waiting (up to ``max_batch_size``, waiting at most ``batch_timeout`` for company), sends
their texts, and hands each request its predictions. When a worker dies (``kill -9``, out of memory), the requests
of its batch are answered 503 at once and the worker is started again; a worker that cannot start, or that dies
three times within a minute, stops the server with one line and a non-zero status.

The workers ignore SIGINT and SIGTERM: a Ctrl-C in a terminal or a service manager's SIGTERM reaches the whole
process group, and the server stops its workers itself once the requests in flight are answered. They die with
the server however it ends (``kill -9`` too).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from emotion_lightning.console import say
from emotion_lightning.serve.model_process import WorkerSettings, worker_main

# A worker that dies this many times within this many seconds is not started again.
DEATHS_BEFORE_GIVING_UP, DEATH_WINDOW_SECONDS = 3, 60
# How often an idle dispatch thread checks that its worker is still alive (and starts it again if not).
IDLE_CHECK_SECONDS = 1.0


class WorkerUnavailable(Exception):
    """No worker could predict a request (it died with the request, or none is ready): answered 503."""


def _ended(process) -> str:
    code = process.exitcode
    if code is None:
        return "it stopped answering"
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


class _Worker:
    """One worker process and the server's end of its pipe."""

    def __init__(self, number: int, settings: WorkerSettings):
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(
            target=worker_main, args=(theirs, settings), name=f"emotion-lightning-model-{number}", daemon=True
        )
        self.process.start()
        theirs.close()

    def wait_until_ready(self, stopping: threading.Event) -> tuple[str, object]:
        """("ready", the model's labels and max_length), ("refused" or "failed", why), or ("stopping", None)."""
        while not self.connection.poll(0.1):
            if stopping.is_set():
                return "stopping", None
            if not self.process.is_alive():
                return "failed", f"it ended before loading the model ({_ended(self.process)})"
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            return "failed", f"it ended before loading the model ({_ended(self.process)})"

    def predict(self, requests: list[list[str]]) -> list[list[dict] | str]:
        try:
            self.connection.send(requests)
            return self.connection.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise WorkerUnavailable(
                f"the model worker stopped while predicting this request ({_ended(self.process)}); "
                "it is being started again: send the request again"
            ) from None

    def close(self, wait: float) -> None:
        self.connection.close()  # the worker's recv ends: it returns
        self.process.join(wait)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@dataclass
class _Pending:
    texts: list[str]
    settle: Callable[[object], None]  # called once, from a dispatch thread, with the answers or an exception


class ModelWorkers:
    """``count`` supervised workers and the batches they are given; :meth:`predict` from the server's event loop.

    Args:
        on_fatal: called with a one-line message when the workers cannot go on (the server then stops).
    """

    _STOP = object()

    def __init__(self, settings: WorkerSettings, count: int, max_batch_size: int, batch_timeout: float, on_fatal):
        self.settings, self.count = settings, count
        self.max_batch_size, self.batch_timeout = max_batch_size, batch_timeout
        self.on_fatal = on_fatal
        self.fatal: str | None = None
        self.model_info: dict = {}  # the labels and max_length, as the first worker ready found them
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._ready: set[int] = set()
        self._threads = [
            threading.Thread(target=self._dispatch, args=(number,), name=f"dispatch-{number}", daemon=True)
            for number in range(count)
        ]

    @property
    def ready(self) -> int:
        """How many workers have the model loaded and are alive."""
        return len(self._ready)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_until_ready(self) -> bool:
        """Wait for the first worker to load the model: True, or False when none can (``fatal`` says why)."""
        while not self._ready and self.fatal is None:
            time.sleep(0.05)
        return self.fatal is None

    def stop(self, wait: float = 10.0) -> None:
        """Stop taking batches, let each worker finish the one it has, and end the processes."""
        self._stopping.set()
        for _ in self._threads:
            self._waiting.put(self._STOP)
        for thread in self._threads:
            thread.join(wait + 5)
        self._fail_waiting(WorkerUnavailable("the server is stopping"))

    async def predict(self, texts: list[str]) -> list[dict]:
        """The predictions for one request's texts; :class:`WorkerUnavailable` when no worker can give them."""
        if not self._ready:
            why = self.fatal or "the model is loading (or being started again); try again in a few seconds"
            raise WorkerUnavailable(why)
        loop = asyncio.get_running_loop()
        answer = loop.create_future()

        def settle(result) -> None:
            loop.call_soon_threadsafe(_settle, answer, result)

        self._waiting.put(_Pending(texts, settle))
        return await answer

    # -- the dispatch threads ------------------------------------------------------------------------------

    def _dispatch(self, number: int) -> None:
        worker, deaths, carried = None, [], None
        loaded = False  # a worker still loading is killed at a stop; one that predicts finishes its batch first
        try:
            while not self._stopping.is_set():
                if worker is None or not worker.process.is_alive():
                    self._ready.discard(number)
                    if worker is not None:
                        deaths = [t for t in deaths if time.monotonic() - t < DEATH_WINDOW_SECONDS] + [time.monotonic()]
                        if len(deaths) >= DEATHS_BEFORE_GIVING_UP:
                            self._give_up(
                                f"model worker {number} ended {len(deaths)} times within a minute "
                                f"(last: {_ended(worker.process)})"
                            )
                            return
                        say(f"Model worker {number} ended ({_ended(worker.process)}); starting it again")
                    worker, loaded = _Worker(number, self.settings), False
                    status, said = worker.wait_until_ready(self._stopping)
                    if status != "ready":
                        if status != "stopping":
                            self._give_up(
                                said if status == "refused" else f"model worker {number} could not start: {said}"
                            )
                        return
                    self.model_info, loaded = self.model_info or said, True
                    self._ready.add(number)
                batch, carried = carried or self._next_batch(), None
                if batch is None:
                    return
                if batch and not worker.process.is_alive():
                    carried = batch  # not sent yet: kept for the worker started in its place
                    continue
                try:
                    answers = worker.predict([pending.texts for pending in batch])
                except WorkerUnavailable as unavailable:
                    answers = [unavailable] * len(batch)
                except Exception as error:  # this batch fails (500), rather than this thread and every request after
                    answers = [RuntimeError(f"the server failed on this request ({type(error).__name__})")] * len(batch)
                for pending, answer in zip(batch, answers, strict=True):
                    pending.settle(RuntimeError(answer) if isinstance(answer, str) else answer)
        finally:
            self._ready.discard(number)
            if worker is not None:
                worker.close(wait=5 if loaded else 0)

    def _next_batch(self) -> list[_Pending] | None:
        """The requests of the next batch ([] when none came within IDLE_CHECK_SECONDS), None when stopping."""
        try:
            first = self._waiting.get(timeout=IDLE_CHECK_SECONDS)
        except queue.Empty:
            return []
        if first is self._STOP:
            return None
        batch, deadline = [first], time.monotonic() + self.batch_timeout
        while len(batch) < self.max_batch_size:
            try:
                pending = self._waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if pending is self._STOP:
                self._waiting.put(pending)  # this batch is answered first; the stop is seen next time
                break
            batch.append(pending)
        return batch

    def _give_up(self, message: str) -> None:
        if self.fatal is None:
            self.fatal = message
            self.on_fatal(message)
        self._fail_waiting(WorkerUnavailable(message))

    def _fail_waiting(self, error: Exception) -> None:
        while True:
            try:
                pending = self._waiting.get_nowait()
            except queue.Empty:
                return
            if pending is not self._STOP:
                pending.settle(error)


def _settle(future: asyncio.Future, result) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
