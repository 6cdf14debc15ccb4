"""Continuous dynamic batching of embed requests onto the model's private threads.

The model runs on ``workers`` private threads (one per usable core by default),
never on the event loop. Each thread runs a whole batch single-threaded
(onnxruntime releases the GIL), so batches run side by side instead of one
batch being split across the cores. Measured on a 2-core machine (all-MiniLM-L6-v2,
batches of 8 questions): the same 4.4 ms of CPU per question quiet and with a
spinning neighbour on every core, against 4.7 ms quiet and 6.6 ms busy for one
thread handing each batch to onnxruntime's own two threads, whose idle threads
spin while they wait for the other (spinning is CPU time, so the figure the gate
compares grew with the machine's load); 450 against 421 questions/s quiet, 223
against 152 busy.

While the workers compute, the texts that arrive are queued and go to the next
free worker together as its batch; what is queued when several workers are free
is split evenly between them. A queued text whose callers all stopped waiting
(cancelled: a timeout, the end of a load run) is dropped before it reaches the
model, so an overloaded system does not keep computing answers nobody waits for.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..counters import add_model_cpu
from .embed_model import EmbedderUnavailableError, LoadedModel

#: Most model threads chosen by default, however many cores the machine has.
MAX_DEFAULT_WORKERS = 8


#: Where a container's CPU quota is read: cgroup v2, then v1 (quota, period).
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def cgroup_cpu_limit(v2: Path = CGROUP_V2_CPU_MAX, v1: Path = CGROUP_V1_CPU) -> int | None:
    """The CPUs a cgroup quota allows this process (``docker --cpus=2``: 2), rounded up; None: no quota."""
    try:
        quota, period = v2.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (v1 / "cpu.cfs_quota_us").read_text().strip()
            period = (v1 / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        allowed, per = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    if allowed <= 0 or per <= 0:  # v1 says -1 for no quota
        return None
    return max(1, math.ceil(allowed / per))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, and a container's CPU quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit else cores)


def default_workers() -> int:
    """Model threads of an embedder by default: one per usable core, at most 8."""
    return min(usable_cores(), MAX_DEFAULT_WORKERS)


class ModelRunner:
    """The model on ``workers`` private threads; each runs one batch at a time."""

    def __init__(self, loaded: LoadedModel, max_batch: int, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.loaded = loaded
        self.max_batch = max_batch
        self.workers = workers or default_workers()
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="agentmem-embed")
        self.batches = 0
        self.batched_texts = 0
        self._count_lock = threading.Lock()

    def compute(self, texts: list[str]) -> np.ndarray:
        # the batch runs single-threaded on this thread (load_model's threads=1, the default; with
        # more, onnxruntime's own pool threads are not counted in the model's CPU)
        started = time.thread_time()
        try:
            vectors = np.asarray(list(self.loaded.model.embed(texts, batch_size=max(len(texts), 1))),
                                 dtype=np.float32)
        finally:
            add_model_cpu(time.thread_time() - started)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        with self._count_lock:
            self.batches += 1
            self.batched_texts += len(texts)
        return vectors / norms


class Batcher:
    """Coalesces the embed requests of one event loop into model batches."""

    def __init__(self, runner: ModelRunner, window: float) -> None:
        self.runner = runner
        self.window = window
        self.pending: dict[str, tuple[str, asyncio.Future[np.ndarray]]] = {}
        self.inflight: dict[str, asyncio.Future[np.ndarray]] = {}
        self.running: set[asyncio.Task[None]] = set()  # batches in the model's hands
        self.starting: asyncio.Task[None] | None = None  # waits for the window, then dispatches
        self.waiters: dict[str, int] = {}  # callers waiting for each queued or computing text
        self.dropped = 0  # queued texts dropped because no caller waited for them any more

    @property
    def busy(self) -> bool:
        """Whether a batch is running or about to start."""
        return bool(self.running) or self.starting is not None

    def submit(self, digest: str, text: str) -> asyncio.Future[np.ndarray]:
        """The future of ``text``'s vector; call :meth:`release` once no longer waiting for it."""
        self.waiters[digest] = self.waiters.get(digest, 0) + 1
        existing = self.inflight.get(digest) or (self.pending[digest][1] if digest in self.pending else None)
        if existing is not None:
            return existing
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self.pending[digest] = (text, future)
        if self.starting is None and len(self.running) < self.runner.workers:
            self.starting = loop.create_task(self._start())
        return future

    def release(self, digest: str) -> None:
        """A caller of :meth:`submit` stopped waiting (answered or cancelled); the last one to
        go drops the text if it is still queued."""
        left = self.waiters.get(digest, 0) - 1
        if left > 0:
            self.waiters[digest] = left
            return
        self.waiters.pop(digest, None)
        entry = self.pending.pop(digest, None)
        if entry is not None:
            self.dropped += 1
            entry[1].cancel()

    async def _start(self) -> None:
        try:
            # Let the callers that are already runnable queue their texts first.
            await asyncio.sleep(self.window)
        except asyncio.CancelledError:
            self._fail_pending()
            raise
        finally:
            self.starting = None
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand the queued texts to the free workers, split evenly between them."""
        loop = asyncio.get_running_loop()
        free = self.runner.workers - len(self.running)
        while self.pending and free > 0:
            size = min(self.runner.max_batch, -(-len(self.pending) // free))
            keys = list(self.pending)[:size]
            batch = [self.pending.pop(k) for k in keys]
            for key, (_, future) in zip(keys, batch):
                self.inflight[key] = future
            task = loop.create_task(self._run(keys, batch))
            self.running.add(task)
            task.add_done_callback(self._finished)
            free -= 1

    async def _run(self, keys: list[str], batch: list[tuple[str, asyncio.Future[np.ndarray]]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self.runner.executor, self.runner.compute,
                                                 [text for text, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else
                                         EmbedderUnavailableError(f"embedding interrupted: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), vector in zip(batch, vectors):
                if not future.done():
                    future.set_result(vector)
        finally:
            for key in keys:
                self.inflight.pop(key, None)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if task.cancelled():  # the loop is going away: fail what is queued rather than hang
            self._fail_pending()
        elif self.pending and self.starting is None:
            self._dispatch()  # continuous batching: what queued meanwhile goes at once

    def _fail_pending(self) -> None:
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(EmbedderUnavailableError("embedding was cancelled"))
        self.pending.clear()
