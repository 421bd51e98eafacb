"""A local OpenAI-compatible HTTP API (FastAPI + uvicorn) over the same :class:`Assistant` the app uses.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or Server-Sent Events),
``POST /v1/embeddings`` (the document embedder), ``GET /health``. See ``docs/api.md``.

Concurrency: one :class:`EngineWorker` thread owns the Engine (an Engine is used from one thread
at a time) and serves requests first come, first served. Each HTTP request hands a job to it
and reads the job's events (sources, text deltas, the finished answer or an error) back from an
asyncio queue. A client that goes away cancels its own job only: a queued job is skipped, a
running one is stopped within one decode step.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import ipaddress
import json
import logging
import queue
import re
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from astrai_core.assistant import Answer, Assistant, PreparedTurn, source_dict
from astrai_core.errors import AstraiError, ConfigError, ContextLengthError, GenerationError, TokenizerError

log = logging.getLogger("astrai.server")

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_EMBED_INPUTS = 256
POLL_S = 0.25  # how often a waiting request checks whether its client is still there


# ---- errors in OpenAI's shape ------------------------------------------------------------------
class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def api_error_from(exc: BaseException) -> ApiError:
    """Map an exception raised while serving a request to the error the client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextLengthError) or (isinstance(exc, GenerationError) and "context" in str(exc)):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, TokenizerError):
        return ApiError(400, str(exc), param="messages")
    if isinstance(exc, AstraiError):
        return ApiError(400, str(exc))
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")


# ---- request bodies --------------------------------------------------------------------------
class _Body(BaseModel):
    # Unknown OpenAI fields (user, logprobs, ...) are accepted and ignored, as other local servers do;
    # NaN/inf are never a valid parameter.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class AstraiOptions(_Body):
    """The ``"astrai"`` extension field: answer from a document collection."""

    model_config = ConfigDict(extra="forbid")
    collection: str = "default"
    k: int | None = Field(None, ge=1, le=20)

    @field_validator("collection")
    @classmethod
    def _name(cls, value: str) -> str:
        if not COLLECTION_NAME.match(value):
            raise ValueError(f"collection name {value!r} must be 1-64 letters, digits, '_', '-' or '.'")
        return value


class StreamOptions(_Body):
    include_usage: bool = False


class ChatCompletionRequest(_Body):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=100_000)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)  # accepted, not applied
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)  # accepted, not applied
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    astrai: AstraiOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop must be a non-empty string or a list of at most 4 non-empty strings")
        return stops


class EmbeddingOptions(_Body):
    """The ``"astrai"`` extension of an embeddings request."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["passage", "query"] = "passage"


class EmbeddingRequest(_Body):
    model: str | None = None
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    astrai: EmbeddingOptions | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > MAX_EMBED_INPUTS:
            raise ValueError(f"input must hold 1 to {MAX_EMBED_INPUTS} strings")
        if any(not t.strip() for t in texts):
            raise ValueError("input strings must not be empty")
        return texts


# ---- the engine worker -----------------------------------------------------------------------
@dataclass
class ChatJob:
    """One chat request: the prepared inputs of :meth:`Assistant.prepare` plus the reply channel."""

    history: list[dict]
    question: str
    generation: Any
    collection: str | None
    k: int | None


@dataclass
class EmbedJob:
    texts: list[str]
    kind: str  # "passage" or "query": e5-style embedders embed the two differently


@dataclass
class _Ticket:
    """A job in the queue and the asyncio queue its events go back on."""

    job: ChatJob | EmbedJob
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shutting down): nobody is listening
            pass


class QueueFull(Exception):
    pass


class EngineWorker:
    """The one thread that runs the Assistant (and the embedder), serving jobs in arrival order."""

    def __init__(self, assistant: Assistant, data_dir: Path, embedder_loader: Callable[[], Any] | None,
                 max_queue: int = 64) -> None:
        self.assistant = assistant
        self.data_dir = Path(data_dir)
        self.embedder_loader = embedder_loader
        self.max_queue = max_queue
        self._jobs: queue.Queue[_Ticket | None] = queue.Queue()
        self._lock = threading.Lock()
        self._current: _Ticket | None = None
        self._embedder: Any = None
        self._collections: dict[str, Any] = {}
        self.stats = {"completed": 0, "cancelled": 0}  # chat jobs, as reported by /health
        self._thread = threading.Thread(target=self._run, name="astrai-engine", daemon=True)

    # -- called from the event loop ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what runs, drop what waits, and join the thread."""
        while True:
            try:
                ticket = self._jobs.get_nowait()
            except queue.Empty:
                break
            if ticket is not None:
                ticket.cancelled.set()
                ticket.emit("error", ApiError(503, "the server is shutting down", "server_error"))
        with self._lock:
            if self._current is not None:
                self._current.cancelled.set()
                self.assistant.cancel()
        self._jobs.put(None)
        self._thread.join(timeout)
        for collection in self._collections.values():
            collection.close()
        self._collections.clear()

    def submit(self, ticket: _Ticket) -> None:
        if self._jobs.qsize() >= self.max_queue:
            raise QueueFull
        self._jobs.put(ticket)

    def cancel(self, ticket: _Ticket) -> None:
        """Cancel one job: skipped if still queued, stopped if running; other jobs are untouched."""
        ticket.cancelled.set()
        with self._lock:
            if self._current is ticket:
                self.assistant.cancel()

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    # -- the worker thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            ticket = self._jobs.get()
            if ticket is None:
                return
            if ticket.cancelled.is_set():
                continue
            with self._lock:
                self._current = ticket
            try:
                if isinstance(ticket.job, ChatJob):
                    self._chat(ticket, ticket.job)
                else:
                    self._embed(ticket, ticket.job)
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to its client
                if not isinstance(exc, AstraiError):
                    log.exception("request failed")
                ticket.emit("error", api_error_from(exc))
            finally:
                with self._lock:
                    self._current = None

    def _chat(self, ticket: _Ticket, job: ChatJob) -> None:
        collection = self._collection(job.collection) if job.collection else None
        prepared = self.assistant.prepare(job.history, job.question, collection, k=job.k,
                                          generation=job.generation, trim_history=False)
        if ticket.cancelled.is_set():
            return
        ticket.emit("sources", prepared)
        for delta in self.assistant.stream(prepared, job.generation):
            ticket.emit("delta", delta)
            if ticket.cancelled.is_set():
                self.assistant.cancel()  # idempotent; the engine stops within one step
        answer = self.assistant.last_answer
        self.stats["cancelled" if answer.finish_reason == "cancelled" else "completed"] += 1
        ticket.emit("done", answer)

    def _embed(self, ticket: _Ticket, job: EmbedJob) -> None:
        embedder = self._get_embedder()
        vectors = embedder.encode(job.texts, kind=job.kind)  # (n, dim) float32, L2-normalised
        ticket.emit("done", (vectors, int(sum(embedder.count_tokens(job.texts)))))

    def _get_embedder(self) -> Any:
        if self._embedder is None:
            if self.embedder_loader is None:
                raise ApiError(501, "this server has no document embedder", "server_error")
            self._embedder = self.embedder_loader()
        return self._embedder

    def _collection(self, name: str) -> Any:
        if name not in self._collections:
            from astrai_core.rag import Collection

            if not Collection.exists(self.data_dir, name):
                raise ApiError(404, f"document collection {name!r} not found in {self.data_dir}; "
                                    f"index documents first (astrai index add --collection {name} ...)",
                               "not_found_error", "astrai.collection", "collection_not_found")
            self._collections[name] = Collection.open(self.data_dir, name=name, embedder=self._get_embedder())
        return self._collections[name]


# ---- the app ---------------------------------------------------------------------------------
@dataclass
class ServerConfig:
    """What :func:`create_app` needs besides the Assistant."""

    model_id: str
    data_dir: Path
    api_key: str | None = None
    embedder_loader: Callable[[], Any] | None = None  # loads the document embedder on first use
    embedder_id: str = "astrai-embedder"
    max_queue: int = 64


class _ApiKeyMiddleware:
    """Answers 401 to every request without ``Authorization: Bearer <key>`` (constant-time compare)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                err = ApiError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                               "invalid_request_error", code="invalid_api_key")
                response = err.response()
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(assistant: Assistant, config: ServerConfig) -> FastAPI:
    """The FastAPI application; the engine worker starts and stops with the app's lifespan."""
    worker = EngineWorker(assistant, config.data_dir, config.embedder_loader, config.max_queue)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="AstrAI local API", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.worker = worker
    if config.api_key:
        app.add_middleware(_ApiKeyMiddleware, key=config.api_key)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), kind).response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_id, "queued": worker.queued, **worker.stats}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": config.model_id, "object": "model", "created": created, "owned_by": "astrai"}]
        if config.embedder_loader is not None:
            data.append({"id": config.embedder_id, "object": "model", "created": created, "owned_by": "astrai"})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        job = _chat_job(body, assistant)
        ticket = _submit(worker, job)
        if body.stream:
            return await _stream_response(request, worker, ticket, body, config.model_id)
        events = await _collect(request, worker, ticket)
        answer: Answer = events["done"]
        return _completion(answer, events.get("sources"), body, config.model_id)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        kind = body.astrai.kind if body.astrai else "passage"
        ticket = _submit(worker, EmbedJob(list(body.input), kind))
        events = await _collect(request, worker, ticket)
        vectors, tokens = events["done"]
        data = [{"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": config.embedder_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if not errors:
        return ApiError(400, "invalid request")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({first.get('msg')})", code="invalid_json")
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "literal_error" and loc and loc[-1] == "role":
        msg = f"unknown role {first.get('input')!r}; expected system, developer, user or assistant"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(400, f"{param or 'body'}: {msg}{more}", param=param)


def _chat_job(body: ChatCompletionRequest, assistant: Assistant) -> ChatJob:
    """Validate a chat request into a job (400 on anything the engine would reject)."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    if messages[-1]["role"] != "user":
        raise ApiError(400, "the last message must have role 'user'", param="messages")
    if not messages[-1]["content"].strip():
        raise ApiError(400, "the last user message is empty", param="messages")
    base = assistant.settings.generation
    changes: dict[str, Any] = {}
    max_tokens = body.max_completion_tokens or body.max_tokens
    for name, value in (("temperature", body.temperature), ("top_p", body.top_p), ("top_k", body.top_k),
                        ("repetition_penalty", body.repetition_penalty), ("max_new_tokens", max_tokens),
                        ("seed", body.seed), ("stop", body.stop)):
        if value is not None:
            changes[name] = value
    if "seed" not in changes:
        changes["seed"] = None
    gen = dataclasses.replace(base, **changes)
    context = int(assistant.engine.context_length)
    if gen.max_new_tokens >= context:
        raise ApiError(400, f"max_tokens={gen.max_new_tokens} is not below the model's context length of "
                            f"{context} tokens", param="max_tokens", code="context_length_exceeded")
    ext = body.astrai
    return ChatJob(messages[:-1], messages[-1]["content"], gen, ext.collection if ext else None,
                   ext.k if ext else None)


def _submit(worker: EngineWorker, job: ChatJob | EmbedJob) -> _Ticket:
    ticket = _Ticket(job, asyncio.get_running_loop())
    try:
        worker.submit(ticket)
    except QueueFull:
        raise ApiError(429, f"the server is busy ({worker.max_queue} requests waiting); retry shortly",
                       "rate_limit_error", code="queue_full") from None
    return ticket


async def _next_event(request: Request, worker: EngineWorker, ticket: _Ticket) -> tuple[str, Any]:
    """The ticket's next event; cancels the job (and raises) if the client disconnects meanwhile."""
    while True:
        try:
            return await asyncio.wait_for(ticket.events.get(), POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                worker.cancel(ticket)
                raise ApiError(499, "client disconnected") from None
        except asyncio.CancelledError:
            worker.cancel(ticket)
            raise


async def _collect(request: Request, worker: EngineWorker, ticket: _Ticket) -> dict[str, Any]:
    """Wait for a job to finish; returns ``{"sources": ..., "done": ...}`` or raises its error."""
    events: dict[str, Any] = {}
    while True:
        kind, value = await _next_event(request, worker, ticket)
        if kind == "error":
            raise value
        if kind == "delta":
            continue
        events[kind] = value
        if kind == "done":
            return events


def _sources_ext(prepared: PreparedTurn | None) -> dict[str, Any] | None:
    if prepared is None or prepared.found is None:
        return None
    return {"found": prepared.found,
            "sources": [source_dict(hit, n) for n, hit in enumerate(prepared.sources, start=1)]}


def _finish_reason(answer: Answer) -> str:
    return answer.finish_reason if answer.finish_reason in ("stop", "length") else "stop"


def _completion(answer: Answer, prepared: PreparedTurn | None, body: ChatCompletionRequest,
                model_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "logprobs": None, "finish_reason": _finish_reason(answer)}],
        "usage": answer.usage,
    }
    ext = _sources_ext(prepared) or {}
    out["astrai"] = {**ext, "timings": answer.timings}
    return out


async def _stream_response(request: Request, worker: EngineWorker, ticket: _Ticket, body: ChatCompletionRequest,
                           model_id: str) -> StreamingResponse:
    """Start an SSE stream once the first text (or an error, answered as JSON) is known."""
    prepared: PreparedTurn | None = None
    while True:
        kind, value = await _next_event(request, worker, ticket)
        if kind == "error":
            raise value
        if kind == "sources":
            prepared = value
            continue
        first = (kind, value)
        break

    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        finished = False
        try:
            ext = _sources_ext(prepared)
            yield chunk({"role": "assistant", "content": ""}, **({"astrai": ext} if ext else {}))
            kind, value = first
            while True:
                if kind == "delta":
                    yield chunk({"content": value})
                elif kind == "done":
                    answer: Answer = value
                    yield chunk({}, _finish_reason(answer), astrai={"timings": answer.timings})
                    if include_usage:
                        yield (f"data: {json.dumps({'id': cid, 'object': 'chat.completion.chunk', 'created': created, 'model': model_id, 'choices': [], 'usage': answer.usage})}\n\n")
                    yield "data: [DONE]\n\n"
                    finished = True
                    return
                elif kind == "error":
                    yield f"data: {json.dumps(api_error_from(value).body(), ensure_ascii=False)}\n\n"
                    finished = True
                    return
                kind, value = await ticket.events.get()
        finally:
            if not finished:  # the client went away (the response task was cancelled): stop its job
                worker.cancel(ticket)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _encode_vector(vector: Any, encoding: str) -> list[float] | str:
    """One embedding as JSON floats, or as base64 of little-endian float32 (what the openai client asks for)."""
    import numpy as np

    vector = np.asarray(vector, dtype="<f4")
    if encoding == "float":
        return vector.tolist()
    return base64.b64encode(vector.tobytes()).decode("ascii")


# ---- running it ------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key (raises :class:`ConfigError`)."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(f"--host {host} would expose the API beyond this machine; "
                          f"pass --api-key KEY to require 'Authorization: Bearer KEY' on every request")


@dataclass
class RunningServer:
    """A server started by :func:`start_server`; :meth:`stop` shuts it down and joins its threads."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 20.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> RunningServer:
    """Serve ``app`` from a background thread (port 0 = a free port); returns once it accepts connections."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="astrai-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the API server could not start on {host}:{bound}")
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    return RunningServer(f"http://{shown}:{bound}", server, thread)


# ---- astrai serve ----------------------------------------------------------------------------
def cmd_serve(args: Any) -> int:
    """``astrai serve [--model PATH] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--data-dir DIR]``."""
    import uvicorn

    from astrai_core.assistant import load_runtime

    check_bind(args.host, args.api_key)  # before the slow model load
    runtime = load_runtime(args.model, args.data_dir)

    def embedder() -> Any:
        from astrai_core.rag import load_embedder

        return load_embedder(runtime.embedder_name)

    app = create_app(runtime.assistant, ServerConfig(runtime.model_id, runtime.data_dir, args.api_key, embedder))
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"AstrAI API: http://{shown}:{args.port}/v1  (model {runtime.model_id}, data {runtime.data_dir})",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    return 0

