"""One conversation turn: history + optional retrieval + grounded prompt + streamed generation.

The desktop app, the terminal CLI (``astrai chat`` / ``astrai ask``) and the OpenAI-compatible
server all answer through :class:`Assistant`, so a question gets the same prompt, the same sources
and the same "not found" behaviour everywhere.

Typical use::

    assistant = Assistant(engine, AssistantSettings(system_prompt="...", k=4))
    for delta in assistant.stream_answer(history, "What does the report say about X?", collection):
        print(delta, end="")
    answer = assistant.last_answer  # Answer(text, sources, found, usage, timings, finish_reason)

An :class:`Assistant` wraps one Engine and, like the Engine, is used from one thread at a time;
only :meth:`Assistant.cancel` may be called from another thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import signal
import sqlite3
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TextIO

from astrai_core.errors import AstraiError, CheckpointError, ContextLengthError, TokenizerError

if TYPE_CHECKING:  # imported for annotations only; the real imports happen where they are used
    from astrai_core.generation import Engine, GenerationConfig
    from astrai_core.rag import Collection, Hit

CHAT_ROLES = ("system", "user", "assistant")
# ChatML wraps every message in "<|im_start|>role\n" ... "<|im_end|>\n" (5 tokens) and the open
# assistant turn adds 3 more; used to check prompts against the context before the engine sees them.
MESSAGE_OVERHEAD_TOKENS = 5
GENERATION_PROMPT_TOKENS = 3

NOT_FOUND_EN = ("I could not find anything about this in your documents, so I won't guess. "
                "Try rephrasing the question or adding the document that covers it.")
NOT_FOUND_ZH = "我在你的文档中没有找到与这个问题相关的内容，所以不做猜测。请换一种问法，或添加包含相关内容的文档。"


# ---- model resolution ------------------------------------------------------------------------
def default_model_path(model: str | os.PathLike[str] | None = None) -> Path:
    """The model to load: ``model`` when given, else the shipped ``resources/models/*-dpo`` folder.

    The app, the CLI and the server all resolve the model here. Raises :class:`CheckpointError`
    when ``model`` does not exist or when no model was given and none is shipped.
    """
    if model is not None and str(model) != "":
        path = Path(model).expanduser()
        if not path.exists():
            raise CheckpointError(f"{path}: model file or folder not found")
        return path
    from astrai_core.paths import resource_path

    models = Path(resource_path("models"))
    if models.is_dir():
        for candidate in sorted(models.glob("*-dpo")):
            if (candidate / "config.json").is_file():
                return candidate
    raise CheckpointError(f"no model found (nothing shipped under {models}); pass --model PATH")


def shared_settings(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The desktop app's saved settings (``app.sqlite3``, table ``settings``), read-only.

    Lets the terminal and the server answer with the same system prompt, sampling settings,
    number of sources and model the user chose in the app. Missing or unreadable = ``{}``.
    """
    path = Path(data_dir) / "app.sqlite3"
    if not path.is_file():
        return {}
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT key, value FROM settings").fetchall()
        finally:
            db.close()
        return {key: json.loads(value) for key, value in rows}
    except (sqlite3.Error, json.JSONDecodeError, TypeError):
        return {}  # an app database from another version must not stop the CLI


# ---- data types ------------------------------------------------------------------------------
def _default_generation() -> "GenerationConfig":
    from astrai_core.generation import GenerationConfig

    return GenerationConfig(max_new_tokens=512, temperature=0.7, top_p=0.9)


@dataclass
class AssistantSettings:
    """How the assistant answers: system prompt, sources per answer, and sampling."""

    system_prompt: str | None = None
    k: int = 4
    generation: "GenerationConfig" = field(default_factory=_default_generation)

    @classmethod
    def from_shared(cls, values: dict[str, Any]) -> "AssistantSettings":
        """Settings from the app's saved values (see :func:`shared_settings`); missing keys keep defaults."""
        base = cls()
        gen = base.generation
        changes = {}
        for key, attr in (("temperature", "temperature"), ("top_p", "top_p"), ("max_new_tokens", "max_new_tokens")):
            if key in values:
                changes[attr] = values[key]
        return cls(system_prompt=values.get("system_prompt") or base.system_prompt,
                   k=int(values.get("num_sources", base.k)),
                   generation=dataclasses.replace(gen, **changes))


@dataclass
class Answer:
    """A finished turn. ``found`` is ``None`` when no collection was searched, ``False`` when the
    search found nothing relevant (``text`` then says so), ``True`` when ``sources`` ground the answer.
    ``sources[n-1]`` is the passage the answer cites as ``[n]``."""

    text: str
    sources: list["Hit"] = field(default_factory=list)
    found: bool | None = None
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    finish_reason: str = "stop"

    def source_dicts(self) -> list[dict[str, Any]]:
        """Sources as plain dicts ``{"n", "file", "page", "score", "text"}`` (for JSON and the GUI)."""
        return [source_dict(hit, n) for n, hit in enumerate(self.sources, start=1)]


def source_dict(hit: "Hit", n: int) -> dict[str, Any]:
    """One retrieval hit as the plain dict the CLI, the server and the app show."""
    return {"n": n, "file": str(hit.file), "page": hit.page, "score": round(float(hit.score), 4), "text": hit.text}


@dataclass
class PreparedTurn:
    """The prompt for one turn, before generation: what :meth:`Assistant.prepare` returns."""

    question: str
    messages: list[dict]
    sources: list["Hit"]
    found: bool | None
    prompt_tokens: int  # estimate (ChatML overhead included); the engine reports the exact count


def not_found_message(question: str) -> str:
    """The fixed "nothing relevant in your documents" answer, in the question's language."""
    return NOT_FOUND_ZH if any("\u3400" <= ch <= "\u9fff" for ch in question) else NOT_FOUND_EN


def validate_messages(messages: Sequence[Any]) -> list[dict]:
    """Check ``[{"role", "content"}]`` messages; return clean copies. Raises :class:`TokenizerError`."""
    clean = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise TokenizerError(f"message {i} must be a dict with 'role' and 'content', got {msg!r}")
        if msg["role"] not in CHAT_ROLES:
            raise TokenizerError(f"message {i} has unknown role {msg['role']!r}; expected one of {CHAT_ROLES}")
        if not isinstance(msg["content"], str):
            raise TokenizerError(f"message {i} content must be text, got {type(msg['content']).__name__}")
        clean.append({"role": msg["role"], "content": msg["content"]})
    return clean


# ---- the assistant ---------------------------------------------------------------------------
class Assistant:
    """Answers questions with an Engine, optionally grounded in a document Collection."""

    def __init__(self, engine: "Engine", settings: AssistantSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or AssistantSettings()
        self.last_answer: Answer | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._generating = False

    # -- public API ---------------------------------------------------------------------------
    def stream_answer(self, history: Sequence[dict], question: str, collection: "Collection | None" = None, *,
                      k: int | None = None, generation: "GenerationConfig | None" = None,
                      paths: Sequence[str] | None = None) -> Iterator[str]:
        """Yield the answer as text deltas; afterwards :attr:`last_answer` holds the :class:`Answer`.

        ``history`` holds the earlier turns (oldest first, system messages allowed); ``collection``
        ``None`` answers without retrieval. ``k`` / ``generation`` override the settings for this
        turn; ``paths`` limits retrieval to those documents. Oldest history is dropped when the
        conversation no longer fits the model's context.
        """
        gen = generation or self.settings.generation
        prepared = self.prepare(history, question, collection, k=k, generation=gen, paths=paths)
        yield from self.stream(prepared, gen)

    def answer(self, history: Sequence[dict], question: str, collection: "Collection | None" = None, *,
               k: int | None = None, generation: "GenerationConfig | None" = None,
               paths: Sequence[str] | None = None) -> Answer:
        """The whole answer at once (same arguments as :meth:`stream_answer`)."""
        for _ in self.stream_answer(history, question, collection, k=k, generation=generation, paths=paths):
            pass
        assert self.last_answer is not None
        return self.last_answer

    def cancel(self) -> None:
        """Stop the current turn soon (thread-safe); the partial answer ends with finish_reason "cancelled"."""
        self._cancel.set()
        with self._lock:
            if self._generating:
                self.engine.cancel()

    # -- the two halves of a turn (the server runs them separately to send sources first) --------
    def prepare(self, history: Sequence[dict], question: str, collection: "Collection | None" = None, *,
                k: int | None = None, generation: "GenerationConfig | None" = None,
                paths: Sequence[str] | None = None, trim_history: bool = True) -> PreparedTurn:
        """Retrieve sources and build the prompt for one turn.

        With ``trim_history=False`` a conversation longer than the context raises
        :class:`ContextLengthError` instead of losing its oldest turns (what API clients expect).
        """
        self._cancel.clear()  # a new turn; a cancel() from here on stops it
        if not isinstance(question, str) or not question.strip():
            raise TokenizerError(f"the question must be non-empty text, got {question!r}")
        gen = generation or self.settings.generation
        history = validate_messages(history)
        systems = [m["content"] for m in history if m["role"] == "system"]
        turns = [m for m in history if m["role"] != "system"]
        system_prompt = "\n\n".join(systems) if systems else self.settings.system_prompt
        context = int(self.engine.context_length)
        if gen.max_new_tokens >= context:
            raise ContextLengthError(
                f"max_new_tokens={gen.max_new_tokens} leaves no room for the prompt in the model's "
                f"context of {context} tokens")
        available = context - gen.max_new_tokens
        question_msg = {"role": "user", "content": question}

        if collection is None:
            head = [{"role": "system", "content": system_prompt}] if system_prompt else []
            fixed = self._count(head + [question_msg])
            kept = self._fit_history(turns, available - fixed, trim_history, context, gen.max_new_tokens, fixed)
            messages = head + kept + [question_msg]
            return PreparedTurn(question, messages, [], None, fixed + self._count(kept, prompt=False))

        # Retrieval: history may use at most half of the room, the grounded prompt the rest.
        kept = self._fit_history(turns, available // 2, trim_history, context, gen.max_new_tokens,
                                 self._count([question_msg]))
        used = self._count(kept, prompt=False)
        hits = self._search(collection, question, k or self.settings.k, paths)
        from astrai_core.rag import build_grounded_prompt

        # The grounded prompt keeps its own instructions (cite as [n], don't guess), the wording the
        # shipped model was fine-tuned on; only a system message in the conversation replaces them.
        grounded = build_grounded_prompt(question, hits, self.engine.count_tokens, available - used,
                                         system_prompt="\n\n".join(systems) if systems else None)
        body = [dict(m) for m in grounded.messages]
        # Earlier turns go between the grounded system message and the grounded question.
        split = len(body) - 1 if body and body[-1]["role"] == "user" else len(body)
        messages = body[:split] + kept + body[split:]
        total = self._count(messages)
        if total > available:
            raise ContextLengthError(
                f"the question and its sources need about {total} tokens but only {available} of the "
                f"model's {context} are left after max_new_tokens={gen.max_new_tokens}")
        return PreparedTurn(question, messages, list(grounded.sources), bool(grounded.found), total)

    def stream(self, prepared: PreparedTurn, generation: "GenerationConfig | None" = None) -> Iterator[str]:
        """Generate the answer for a prepared turn, yielding text deltas; sets :attr:`last_answer`."""
        gen = generation or self.settings.generation
        if prepared.found is False:
            # Nothing relevant was retrieved: say so instead of letting the model guess.
            text = not_found_message(prepared.question)
            self.last_answer = Answer(text, [], False, _usage(0, 0), {}, "stop")
            yield text
            return
        with self._lock:
            if self._cancel.is_set():
                self.last_answer = Answer("", list(prepared.sources), prepared.found, _usage(0, 0), {}, "cancelled")
                return
            self._generating = True
        pieces: list[str] = []
        stream = self.engine.stream_chat(prepared.messages, gen)
        cancelled = False
        try:
            for delta in stream:
                pieces.append(delta)
                yield delta
                if self._cancel.is_set():  # covers a cancel that raced with the engine's own reset
                    cancelled = True
                    break
        finally:
            stream.close()
            with self._lock:
                self._generating = False
        text = "".join(pieces)
        result = getattr(self.engine, "last_result", None)
        if result is not None and not cancelled:
            usage = _usage(result.prompt_tokens, result.completion_tokens)
            timings = dict(result.timings or {})
            finish = result.finish_reason
        else:
            usage = _usage(prepared.prompt_tokens, self.engine.count_tokens(text) if text else 0)
            timings, finish = {}, "cancelled"
        if self._cancel.is_set():
            finish = "cancelled"
        self.last_answer = Answer(text, list(prepared.sources), prepared.found, usage, timings, finish)

    # -- helpers ------------------------------------------------------------------------------
    def _count(self, messages: Sequence[dict], prompt: bool = True) -> int:
        """Prompt tokens for ``messages`` in ChatML (``prompt`` adds the open assistant turn)."""
        total = sum(self.engine.count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        return total + (GENERATION_PROMPT_TOKENS if prompt else 0)

    def _fit_history(self, turns: list[dict], room: int, trim: bool, context: int, max_new: int,
                     fixed: int) -> list[dict]:
        """The newest history messages that fit in ``room`` tokens (oldest dropped first)."""
        if room < 0:
            raise ContextLengthError(
                f"the prompt needs about {fixed} tokens but the model's context is {context} tokens "
                f"and {max_new} are reserved for the answer (max_new_tokens)")
        kept: list[dict] = []
        used = 0
        for msg in reversed(turns):
            cost = self._count([msg], prompt=False)
            if used + cost > room:
                if not trim:
                    total = fixed + self._count(turns, prompt=False)
                    raise ContextLengthError(
                        f"the conversation needs about {total} tokens but the model's context is {context} "
                        f"tokens and {max_new} are reserved for the answer (max_new_tokens)")
                break
            kept.append(msg)
            used += cost
        kept.reverse()
        # A trimmed history must not start with an orphaned assistant reply.
        while trim and kept and kept[0]["role"] == "assistant" and len(kept) < len(turns):
            kept.pop(0)
        return kept

    @staticmethod
    def _search(collection: "Collection", question: str, k: int, paths: Sequence[str] | None) -> list["Hit"]:
        if paths is not None:
            return list(collection.search(question, k, paths=list(paths)))
        return list(collection.search(question, k))


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": int(prompt), "completion_tokens": int(completion),
            "total_tokens": int(prompt) + int(completion)}




# ---- loading (shared by the CLI and the server) ----------------------------------------------
@dataclass
class Runtime:
    """A loaded model ready to answer, plus what the CLI needs to open collections."""

    assistant: Assistant
    model_id: str
    model_path: Path
    data_dir: Path
    embedder_name: str | None  # the app's chosen embedder ("" / None = the bundled one)


def load_runtime(model: str | os.PathLike[str] | None, data_dir: str | os.PathLike[str] | None) -> Runtime:
    """Resolve the data folder, the app's saved settings and the model; load the model and its Engine.

    Model choice: ``model`` > the model picked in the desktop app > the shipped model.
    """
    from astrai_core.paths import user_data_dir

    folder = Path(user_data_dir(data_dir))
    saved = shared_settings(folder)
    path = default_model_path(model or saved.get("model_path") or None)
    from astrai_core.checkpoint import load_model  # torch: only once there is a model to load
    from astrai_core.generation import Engine
    dtype = saved.get("dtype", "auto")
    quantize = saved.get("quantize", "none")
    loaded = load_model(path)
    engine = Engine(loaded, dtype=None if dtype in ("auto", None) else dtype,
                    quantize=None if quantize in ("none", None) else quantize)
    model_id = path.stem if path.is_file() else path.name
    return Runtime(Assistant(engine, AssistantSettings.from_shared(saved)), model_id, path, folder,
                   saved.get("embedder") or None)


def open_collection(runtime: Runtime, name: str) -> "Collection":
    """Open an existing document collection of the data folder (with the bundled embedder)."""
    from astrai_core.rag import Collection, load_embedder

    if not Collection.exists(runtime.data_dir, name):
        raise AstraiError(f"no document collection {name!r} in {runtime.data_dir}; "
                          f"index documents first (astrai index add ...)")
    return Collection.open(runtime.data_dir, name=name, embedder=load_embedder(runtime.embedder_name))


# ---- terminal front end: astrai ask / astrai chat --------------------------------------------
CHAT_HELP = ('Type a message and press Enter. End a line with "\\" to continue it, or put """ on a line '
             'of its own to start and end a multi-line message.\n'
             "/sources shows the last answer's sources, /reset starts over, /exit quits. "
             "Ctrl+C stops the current answer; Ctrl+D quits.")


def print_answer(assistant: Assistant, history: Sequence[dict], question: str,
                 collection: "Collection | None", out: TextIO) -> tuple[Answer, bool]:
    """Stream one answer to ``out``; returns ``(answer, completed)``, ``completed`` False after Ctrl+C.

    Generation runs on a helper thread and, while it runs, Ctrl+C (SIGINT, which Python handles
    on the main thread) only cancels the answer: the engine is never interrupted mid-step and the
    program goes on.
    """
    items: "queue.Queue[tuple[str, Any]]" = queue.Queue()
    stopped = threading.Event()

    def produce() -> None:
        try:
            for delta in assistant.stream_answer(history, question, collection):
                items.put(("delta", delta))
            items.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            items.put(("error", exc))

    def on_sigint(_signum: int, _frame: Any) -> None:
        stopped.set()
        assistant.cancel()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    worker = threading.Thread(target=produce, name="astrai-answer", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, value = items.get(timeout=0.1)
            except queue.Empty:
                continue
            except KeyboardInterrupt:  # only off the main thread, where no handler was installed
                on_sigint(signal.SIGINT, None)
                continue
            if kind == "delta":
                out.write(value)
                out.flush()
            elif kind == "error":
                raise value
            else:
                break
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    worker.join()
    assert assistant.last_answer is not None
    return assistant.last_answer, not stopped.is_set()


def format_sources(answer: Answer) -> str:
    """Sources as numbered lines: ``[1] report.pdf, p. 3 (0.82): first words of the passage...``."""
    if answer.found is None:
        return "(this answer did not search any documents)"
    if not answer.sources:
        return "(no relevant passages were found)"
    lines = []
    for src in answer.source_dicts():
        page = f", p. {src['page']}" if src["page"] else ""
        snippet = " ".join(src["text"].split())
        snippet = snippet[:160] + ("..." if len(snippet) > 160 else "")
        lines.append(f"[{src['n']}] {src['file']}{page} ({src['score']:.2f}): {snippet}")
    return "\n".join(lines)


def read_message(read_line: Callable[[str], str]) -> str:
    """Read one message: a line, lines joined by a trailing backslash, or a triple-quoted block."""
    line = read_line(">>> ")
    if line.strip() == '"""':
        lines = []
        while (line := read_line("... ")).strip() != '"""':
            lines.append(line)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read_line("... ")
    lines.append(line)
    return "\n".join(lines)


def chat_loop(assistant: Assistant, collection: "Collection | None", out: TextIO,
              read_line: Callable[[str], str] = input) -> None:
    """The interactive terminal chat: streaming answers, /reset, /sources, Ctrl+C stops an answer."""
    history: list[dict] = []
    last: Answer | None = None
    out.write(CHAT_HELP + "\n")
    while True:
        try:
            text = read_message(read_line)
        except EOFError:
            out.write("\n")
            return
        except KeyboardInterrupt:  # at the prompt: drop the half-typed message
            out.write("\n")
            continue
        command = text.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return
        if command == "/reset":
            history, last = [], None
            out.write("(conversation cleared)\n")
            continue
        if command == "/sources":
            out.write((format_sources(last) if last else "(no answer yet)") + "\n")
            continue
        if command in ("/help", "/?"):
            out.write(CHAT_HELP + "\n")
            continue
        try:
            last, completed = print_answer(assistant, history, text, collection, out)
        except AstraiError as exc:
            out.write(f"\nerror: {exc}\n")
            continue
        out.write("\n" if completed else " [stopped]\n")
        if last.text:
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": last.text}]


def ask_json(answer: Answer) -> dict[str, Any]:
    """The ``astrai ask --json`` document."""
    return {"answer": answer.text,
            "sources": [{k: s[k] for k in ("file", "page", "score", "text")} for s in answer.source_dicts()],
            "usage": answer.usage, "timings": answer.timings}


def cmd_ask(args: Any, out: TextIO | None = None) -> int:
    """``astrai ask "QUESTION" [--model PATH] [--collection NAME] [--json] [--data-dir DIR]``."""
    out = out or sys.stdout
    runtime = load_runtime(args.model, args.data_dir)
    collection = open_collection(runtime, args.collection) if args.collection else None
    assistant = runtime.assistant
    if args.json:
        try:
            answer = assistant.answer([], args.question, collection)
        except KeyboardInterrupt:
            return 130
        out.write(json.dumps(ask_json(answer), ensure_ascii=False, indent=2) + "\n")
        return 0
    answer, completed = print_answer(assistant, [], args.question, collection, out)
    out.write("\n")
    if answer.found is not None:
        out.write("\nSources:\n" + format_sources(answer) + "\n")
    return 0 if completed else 130


def cmd_chat(args: Any, out: TextIO | None = None) -> int:
    """``astrai chat [--model PATH] [--collection NAME] [--data-dir DIR]``."""
    out = out or sys.stdout
    runtime = load_runtime(args.model, args.data_dir)
    collection = open_collection(runtime, args.collection) if args.collection else None
    where = f", answering from collection {args.collection!r}" if collection is not None else ""
    out.write(f"AstrAI chat - model {runtime.model_id}{where}\n")
    chat_loop(runtime.assistant, collection, out)
    return 0


MODEL_HELP = "model folder or GGUF file (default: the model chosen in the app, else the shipped model)"
DATA_DIR_HELP = "data folder shared with the desktop app (default: $ASTRAI_HOME or the user data folder)"


def add_commands(subparsers: Any) -> None:
    """Register ``ask``, ``chat`` and ``serve`` on an argparse sub-parser set (each sets ``func``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help=MODEL_HELP)
    common.add_argument("--collection", help="answer from this document collection (as indexed by the app: default)")
    common.add_argument("--data-dir", help=DATA_DIR_HELP)
    ask = subparsers.add_parser("ask", parents=[common], help="answer one question")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help='print {"answer", "sources", "usage", "timings"}')
    ask.set_defaults(func=cmd_ask)
    chat = subparsers.add_parser("chat", parents=[common], help="interactive chat in the terminal")
    chat.set_defaults(func=cmd_chat)
    serve = subparsers.add_parser("serve", help="run the local OpenAI-compatible API (docs/api.md)")
    serve.add_argument("--model", help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; any other address requires --api-key)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every request")
    serve.add_argument("--data-dir", help=DATA_DIR_HELP)
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args: Any) -> int:
    from astrai_core.server import cmd_serve  # FastAPI is imported only when serving

    return cmd_serve(args)


__all__ = ["Answer", "Assistant", "AssistantSettings", "PreparedTurn", "Runtime", "add_commands", "chat_loop",
           "default_model_path", "load_runtime", "not_found_message", "open_collection", "shared_settings",
           "source_dict", "validate_messages"]
