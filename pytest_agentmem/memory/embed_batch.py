"""Continuous dynamic batching of embed requests onto the model's private thread.

The model runs on one thread (onnxruntime releases the GIL and uses the cores
itself), never on the event loop. While the model computes one batch, the
texts that arrive are queued and go to the model together as the next batch.
A queued text whose callers all stopped waiting (cancelled: a timeout, the end
of a load run) is dropped before it reaches the model, so an overloaded
system does not keep computing answers nobody waits for.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .embed_model import EmbedderUnavailableError, LoadedModel


class ModelRunner:
    """The model on one private thread; batches run there one after another."""

    def __init__(self, loaded: LoadedModel, max_batch: int) -> None:
        self.loaded = loaded
        self.max_batch = max_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentmem-embed")
        self.batches = 0
        self.batched_texts = 0

    def compute(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(list(self.loaded.model.embed(texts, batch_size=max(len(texts), 1))),
                             dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
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
        self.task: asyncio.Task[None] | None = None
        self.waiters: dict[str, int] = {}  # callers waiting for each queued or computing text
        self.dropped = 0  # queued texts dropped because no caller waited for them any more

    def submit(self, digest: str, text: str) -> asyncio.Future[np.ndarray]:
        """The future of ``text``'s vector; call :meth:`release` once no longer waiting for it."""
        self.waiters[digest] = self.waiters.get(digest, 0) + 1
        existing = self.inflight.get(digest) or (self.pending[digest][1] if digest in self.pending else None)
        if existing is not None:
            return existing
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.pending[digest] = (text, future)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())
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

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Let the callers that are already runnable queue their texts first.
            await asyncio.sleep(self.window)
            while self.pending:
                keys = list(self.pending)[: self.runner.max_batch]
                batch = [self.pending.pop(k) for k in keys]
                for key, (_, future) in zip(keys, batch):
                    self.inflight[key] = future
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
        finally:
            self.task = None
            if self.pending:  # cancelled with work queued: fail it rather than hang
                for _, future in self.pending.values():
                    if not future.done():
                        future.set_exception(EmbedderUnavailableError("embedding was cancelled"))
                self.pending.clear()
