"""Background work for the GUI: model loading, chat turns and document indexing.

Each job is a plain generator function that owns the objects it creates and knows nothing about
Qt. :class:`GeneratorWorker` runs one such generator on its own ``QThread`` and reports through
signals only (``yielded``, ``returned``, ``errored``, ``done``), checking an abort flag between
yields (superqt's ``GeneratorWorker`` / Qt's ``RenderThread`` pattern). An exception inside a job
arrives on the GUI thread as ``errored(exc)``; the thread always ends and always emits ``done``.

This is the one module of the app that calls into ``astrai_core``'s engine and retrieval.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterable

from PySide6.QtCore import QThread, Signal

from app.settings import AppSettings


REPETITION_PENALTY = 1.1
WORKER_NICENESS = 5  # how far below the GUI thread the workers run


class GeneratorWorker(QThread):
    """Run ``func(*args, **kwargs)`` (a generator) on a worker thread and relay what it yields.

    ``on_abort`` is called from the GUI thread by :meth:`abort` (for example ``engine.cancel``),
    so a job blocked inside one long step can stop without waiting for its next yield. With
    ``inject_report`` the job also gets ``report=`` (this worker's ``yielded.emit``) for progress
    that happens inside a callee rather than at a yield.
    """

    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    done = Signal()

    def __init__(self, func: Callable[..., Generator[Any, None, Any]], *args: Any,
                 on_abort: Callable[[], None] | None = None, inject_report: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self._func, self._args, self._kwargs = func, args, kwargs
        if inject_report:
            self._kwargs["report"] = self.yielded.emit
        self._on_abort = on_abort
        self._abort = threading.Event()

    @property
    def aborted(self) -> bool:
        return self._abort.is_set()

    def abort(self) -> None:
        """Ask the job to stop at its next step (thread-safe; returns immediately)."""
        self._abort.set()
        if self._on_abort is not None:
            self._on_abort()

    def run(self) -> None:  # runs on the worker thread
        self._yield_cpu_to_the_gui()
        try:
            gen = self._func(*self._args, **self._kwargs)
            while True:
                if self._abort.is_set():
                    gen.close()
                    self.returned.emit(None)
                    break
                try:
                    value = next(gen)
                except StopIteration as stop:
                    self.returned.emit(stop.value)
                    break
                self.yielded.emit(value)
        except Exception as exc:  # any failure must reach the user, never kill the thread silently
            self.errored.emit(exc)
        finally:
            self.done.emit()


    def _yield_cpu_to_the_gui(self) -> None:
        """Run this thread (and the torch/tokenizer threads it starts) a little below the GUI thread.

        On a busy machine the GUI thread then wins the CPU whenever it has work, so the window stays
        responsive; when the GUI is idle the workers still get every core. Linux niceness is per
        thread and inherited by threads created later; elsewhere Qt's thread priority is used.
        """
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS))
        except (AttributeError, OSError):  # no per-thread niceness (Windows, macOS): ask Qt instead
            self.setPriority(QThread.Priority.LowPriority)


class WorkerPool:
    """Keeps running workers alive until their thread has finished (Qt deletes nothing for us)."""

    def __init__(self) -> None:
        self._running: set[GeneratorWorker] = set()

    def start(self, worker: GeneratorWorker) -> GeneratorWorker:
        self._running.add(worker)
        worker.finished.connect(lambda w=worker: self._running.discard(w))
        worker.start()
        return worker

    def stop_all(self, timeout_ms: int = 10_000) -> int:
        """Abort every worker and wait for it (used when the window closes).

        Returns how many are still running after ``timeout_ms`` (a model load cannot be interrupted);
        those stay referenced so Qt never destroys a running thread.
        """
        for w in list(self._running):
            w.abort()
        for w in list(self._running):
            if w.wait(timeout_ms):
                self._running.discard(w)
        return len(self._running)

    def __len__(self) -> int:
        return len(self._running)


# ---- data passed between the GUI and the jobs -------------------------------------------------
@dataclass
class Progress:
    """A progress report: ``fraction`` in [0, 1] or ``None`` when unknown."""

    stage: str
    fraction: float | None = None


@dataclass
class TurnRequest:
    """One chat turn, validated on the GUI thread before it is handed to :func:`chat_job`."""

    history: list[dict]  # [{"role", "content"}] earlier turns, oldest first
    question: str
    doc_paths: list[str] | None = None  # limit retrieval to these documents; None = all indexed


@dataclass
class TurnResult:
    text: str
    sources: list[dict] = field(default_factory=list)  # [{"n", "file", "page", "score", "text"}]
    found: bool = True  # False when documents were searched and nothing relevant was found
    cancelled: bool = False
    completion_tokens: int = 0
    decode_s: float = 0.0


@dataclass
class IndexEvent:
    """Progress of one file: ``status`` is "indexing", "indexed" or "failed"."""

    path: str
    status: str
    fraction: float = 0.0
    pages: int = 0
    chunks: int = 0
    error: str = ""


# ---- the jobs ----------------------------------------------------------------------------------
def load_model_job(model_path: Path, settings: AppSettings) -> Generator[Progress, None, Any]:
    """Load the model (any format ``load_model`` reads) and wrap it in an Engine."""
    from astrai_core.checkpoint import load_model
    from astrai_core.generation import Engine

    yield Progress("model", None)
    loaded = load_model(model_path, device="cpu")
    yield Progress("model", 0.7)
    engine = Engine(loaded, dtype=None if settings.dtype == "auto" else settings.dtype,
                    quantize=None if settings.quantize == "none" else settings.quantize)
    return engine


def load_embedder_job(name: str) -> Generator[Progress, None, Any]:
    """Load the retrieval embedder (``""`` = the bundled one)."""
    from astrai_core.rag import load_crosslingual, load_embedder

    yield Progress("embedder", None)
    embedder = load_embedder(name or None)
    # here, off the GUI thread, rather than inside the first question's search
    embedder.warm_up()
    load_crosslingual()
    return embedder


def open_collection(data_dir: Path, embedder: Any) -> Any:
    """Open the app's single document collection (each worker opens its own handle)."""
    from astrai_core.rag import Collection

    return Collection.open(data_dir, name="default", embedder=embedder)


def make_assistant(engine: Any, settings: AppSettings) -> Any:
    """The per-turn :class:`astrai_core.assistant.Assistant`; its ``cancel`` is the Stop button."""
    from astrai_core.assistant import Assistant, AssistantSettings
    from astrai_core.generation import GenerationConfig

    # A mild repetition penalty keeps small models from looping on one sentence.
    generation = GenerationConfig(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                  top_p=settings.top_p, repetition_penalty=REPETITION_PENALTY)
    return Assistant(engine, AssistantSettings(system_prompt=settings.system_prompt or None,
                                               k=settings.num_sources, generation=generation))


def chat_job(assistant: Any, request: TurnRequest, collection_opener: Callable[[], Any] | None
             ) -> Generator[str, None, TurnResult]:
    """One assistant turn: retrieval (when ``collection_opener`` is given) + streamed generation."""
    collection = collection_opener() if collection_opener is not None else None
    yield from assistant.stream_answer(request.history, request.question, collection, paths=request.doc_paths)
    answer = assistant.last_answer
    return TurnResult(answer.text, answer.source_dicts(), answer.found is not False,
                      cancelled=answer.finish_reason == "cancelled",
                      completion_tokens=int(answer.usage.get("completion_tokens", 0)),
                      decode_s=float(answer.timings.get("decode_s", 0.0)))


@dataclass
class IndexOp:
    """One change to the collection: ``kind`` "add" (with an optional PDF password) or "remove"."""

    kind: str
    path: str
    password: str | None = None


def index_job(collection_opener: Callable[[], Any], ops: list[IndexOp], cancel: threading.Event,
              report: Callable[[IndexEvent], None]) -> Generator[None, None, None]:
    """Apply ``ops`` to the collection in order.

    Adds and removes share this one job so only one thread ever writes the collection. Progress
    comes from inside ``Collection.add`` (a callback, not a yield), so it is reported through
    ``report`` (the worker's signal) and throttled to whole percents.
    """
    collection = collection_opener()
    for op in ops:
        path = op.path
        if cancel.is_set():
            return
        if op.kind == "remove":
            try:
                collection.remove([path])
            except Exception as exc:
                report(IndexEvent(path, "failed", error=str(exc)))
            yield None
            continue
        report(IndexEvent(path, "indexing", 0.0))
        last = [-1]

        def progress(p: Any, path: str = path) -> None:
            fraction = _fraction(p, path)
            if int(fraction * 100) != last[0]:
                last[0] = int(fraction * 100)
                report(IndexEvent(path, "indexing", fraction))

        try:
            result = collection.add([path], password=op.password, progress=progress, cancel=cancel)
        except Exception as exc:  # a bad file fails alone; the rest of the queue goes on
            report(IndexEvent(path, "failed", error=str(exc)))
        else:
            if not cancel.is_set():
                report(_event_from_report(path, result))
        yield None


def page_text_job(path: str, page: int | None) -> Generator[None, None, str | None]:
    """The full text of the cited page (for the source viewer), or ``None`` when it can't be read."""
    from astrai_core.rag.loaders import load_bytes

    yield None
    file = Path(path)
    doc = load_bytes(file, file.read_bytes())
    for p in doc.pages:
        if page in (None, p.number):
            return p.text
    return None


def supported_suffixes() -> tuple[str, ...]:
    """File types the document loaders read; dropped folders are expanded to these."""
    from astrai_core.rag.loaders import SUPPORTED_SUFFIXES

    return tuple(SUPPORTED_SUFFIXES)


def _fraction(p: Any, path: str) -> float:
    """Progress of ``path`` itself (``IndexProgress.file_fraction``), else of the whole add call."""
    if getattr(p, "file", None) and _same_file(p.file, path):
        return min(1.0, float(p.file_fraction))
    done, total = getattr(p, "done", 0), getattr(p, "total", 0)
    return min(1.0, float(done) / total) if total else 0.0


def _event_from_report(path: str, report: Any) -> IndexEvent:
    """This file's outcome (``Collection.add`` may also resume files an earlier run left unfinished)."""
    mine = [o for o in getattr(report, "outcomes", []) if _same_file(o.path, path)]
    if not mine:
        return IndexEvent(path, "failed", error="not indexed (no outcome reported)")
    o = mine[-1]
    if o.status == "failed":
        return IndexEvent(path, "failed", error=o.reason or "failed")
    if o.status == "cancelled":
        return IndexEvent(path, "queued")
    return IndexEvent(path, "indexed", 1.0, pages=o.pages, chunks=o.chunks)  # "indexed" or "unchanged"


def _same_file(a: str, b: str) -> bool:
    return Path(a).expanduser().absolute() == Path(b).expanduser().absolute()


def iter_files(paths: Iterable[str | Path], suffixes: tuple[str, ...]) -> list[str]:
    """Expand dropped folders into the supported files inside them (sorted, no duplicates)."""
    out: list[str] = []
    seen: set[str] = set()
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes) if p.is_dir() else [p]
        for f in files:
            key = str(f.resolve())
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out
