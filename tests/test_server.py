"""The OpenAI-compatible API, driven by the official ``openai`` client against a real server.

One server (uvicorn in a thread, free loopback port) serves the whole module with the real
SmolLM2-135M GGUF; it is stopped, and its threads joined, when the module ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from astrai_core.assistant import NOT_FOUND_EN, Assistant, AssistantSettings
from astrai_core.errors import ConfigError
from astrai_core.generation import GenerationConfig
from astrai_core.server import ServerConfig, check_bind, create_app, start_server

MODEL_ID = "SmolLM2-135M-Instruct"
EMBEDDER_ID = "multilingual-e5-small"
ROOT = Path(__file__).resolve().parents[1]
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


class LazyEmbedder:
    """Loads the bundled embedder on first call only, so tests that never embed don't pay for it."""

    def __init__(self) -> None:
        self._embedder = None
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            if self._embedder is None:
                from astrai_core.rag import load_embedder

                self._embedder = load_embedder()
            return self._embedder


@pytest.fixture(scope="module")
def embedder():
    return LazyEmbedder()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-data")


@pytest.fixture(scope="module")
def server(smollm2_engine, data_dir, embedder):
    assistant = Assistant(smollm2_engine, AssistantSettings(generation=GenerationConfig(max_new_tokens=16)))
    app = create_app(assistant, ServerConfig(MODEL_ID, data_dir, embedder_loader=embedder, embedder_id=EMBEDDER_ID))
    running = start_server(app)
    yield running
    running.stop()
    assert not running.thread.is_alive()
    assert not any(t.name in ("astrai-engine", "astrai-http") for t in threading.enumerate())


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def health(server) -> dict:
    return httpx.get(f"{server.url}/health").json()


def test_lists_the_model_and_reports_health(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_ID, EMBEDDER_ID]
    h = health(server)
    assert h["status"] == "ok" and h["model"] == MODEL_ID and h["queued"] == 0


def test_chat_completion_answers_with_usage(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=CAPITAL, temperature=0, max_tokens=12)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_text_equals_the_non_streamed_text_with_a_seed(client):
    kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Write a short poem about the sea."}],
                  temperature=0.9, top_p=0.95, seed=1234, max_tokens=12)
    whole = client.chat.completions.create(**kwargs)
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 1  # really streamed, not one blob
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    other_seed = client.chat.completions.create(**{**kwargs, "seed": 99})
    assert other_seed.choices[0].message.content != whole.choices[0].message.content


def test_max_tokens_and_stop_are_applied(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=CAPITAL, temperature=0, max_tokens=2)
    assert r.usage.completion_tokens == 2 and r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model=MODEL_ID, messages=CAPITAL, temperature=0, max_tokens=12,
                                       stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content and r.choices[0].finish_reason == "stop"


BAD_REQUESTS = [
    ({"messages": [{"role": "tool", "content": "x"}]}, "unknown role 'tool'"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -0.5}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 1e9}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}, "context length"),
    ({"messages": [{"role": "user", "content": "hi"}], "seed": -1}, "seed"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [{"role": "user", "content": 42}]}, "content"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "last message"),
    ({"messages": [{"role": "user", "content": "word " * 2100}]}, "context"),
    ({"messages": [{"role": "user", "content": "hi"}], "astrai": {"collection": "../etc"}}, "collection"),
    ({"messages": [{"role": "user", "content": "hi"}], "astrai": {"collection": "nothing-here"}}, "not found"),
]


@pytest.mark.parametrize("body, needle", BAD_REQUESTS, ids=[n for _, n in BAD_REQUESTS])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_requests_get_a_4xx_openai_error(server, body, needle, stream):
    r = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "stream": stream}, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert needle in err["message"] or needle == err["param"], err


def test_malformed_json_and_unknown_routes_get_openai_errors_and_the_server_keeps_serving(server, client):
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b'{"messages": [', timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL_ID, messages=CAPITAL, temperature=5)
    assert exc.value.status_code == 400
    assert "Paris" in client.chat.completions.create(model=MODEL_ID, messages=CAPITAL, temperature=0,
                                                     max_tokens=8).choices[0].message.content


def test_ten_concurrent_clients_get_the_same_answers_as_one_at_a_time(server):
    questions = [f"Give one word that rhymes with {w}." for w in
                 ("cat", "dog", "sun", "tree", "blue", "light", "rain", "star", "book", "sea")]

    async def ask_all() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)

        async def ask(q: str, stream: bool) -> str:
            kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=4)
            if not stream:
                return (await aclient.chat.completions.create(**kwargs)).choices[0].message.content
            parts = []
            async for chunk in await aclient.chat.completions.create(**kwargs, stream=True):
                parts += [c.delta.content or "" for c in chunk.choices]
            return "".join(parts)

        try:
            return await asyncio.gather(*(ask(q, stream=i % 2 == 0) for i, q in enumerate(questions)))
        finally:
            await aclient.close()

    together = asyncio.run(ask_all())
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    one_by_one = [client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": q}],
                                                 temperature=0, max_tokens=4).choices[0].message.content
                  for q in questions]
    assert together == one_by_one
    assert all(together) and len(set(together)) > 1


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(server, client):
    before = health(server)["cancelled"]
    body = {"messages": [{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
            "max_tokens": 1500, "temperature": 0, "stream": True}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 30
    while health(server)["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    h = health(server)
    assert h["cancelled"] == before + 1 and h["queued"] == 0
    assert "Paris" in client.chat.completions.create(model=MODEL_ID, messages=CAPITAL, temperature=0,
                                                     max_tokens=8).choices[0].message.content


def test_binding_beyond_loopback_requires_an_api_key():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    with pytest.raises(ConfigError, match="--api-key"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="192.168.1.5"):
        check_bind("192.168.1.5", "")
    check_bind("0.0.0.0", "secret")


def test_with_an_api_key_every_request_needs_the_bearer_key(smollm2_engine, tmp_path):
    assistant = Assistant(smollm2_engine, AssistantSettings(generation=GenerationConfig(max_new_tokens=4)))
    running = start_server(create_app(assistant, ServerConfig(MODEL_ID, tmp_path, api_key="s3cret")))
    try:
        for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                             ("POST", "/v1/embeddings"), ("GET", "/v1/unknown")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = httpx.request(method, f"{running.url}{path}", headers=headers, json={})
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{running.url}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{running.url}/v1", api_key="s3cret", max_retries=0, timeout=60)
        assert [m.id for m in good.models.list().data] == [MODEL_ID]
        r = good.chat.completions.create(model=MODEL_ID, messages=CAPITAL, temperature=0)
        assert r.usage.completion_tokens > 0
    finally:
        running.stop()
    assert not running.thread.is_alive()


# ---- documents: embeddings and answers with sources --------------------------------------------
def test_embeddings_come_from_the_document_embedder(client, server):
    r = client.embeddings.create(model=EMBEDDER_ID, input=["The rocket launches in March.",
                                                           "The spacecraft lifts off in spring.",
                                                           "My grandmother bakes apple pie.", "火箭三月发射。"])
    assert [d.index for d in r.data] == [0, 1, 2, 3] and r.model == EMBEDDER_ID
    a, b, c, _ = (np.array(d.embedding) for d in r.data)  # the client asked for base64 and decoded it
    assert a.shape == (384,) and abs(np.linalg.norm(a) - 1) < 1e-2  # normalised (bfloat16 model)
    assert a @ b > a @ c + 0.05  # a paraphrase is closer than an unrelated sentence
    assert r.usage.prompt_tokens > 5
    as_floats = httpx.post(f"{server.url}/v1/embeddings", json={"input": "The rocket launches in March.",
                                                               "encoding_format": "float"}, timeout=60).json()
    assert np.allclose(as_floats["data"][0]["embedding"], a, atol=1e-6)
    query = httpx.post(f"{server.url}/v1/embeddings", timeout=60, json={
        "input": "The rocket launches in March.", "astrai": {"kind": "query"}}).json()["data"][0]["embedding"]
    assert not np.allclose(query, a, atol=1e-3)  # e5 embeds queries and passages differently
    for bad in ({"input": []}, {"input": [""]}, {"input": "x", "encoding_format": "int8"}, {"input": [1, 2]}):
        r = httpx.post(f"{server.url}/v1/embeddings", json=bad, timeout=60)
        assert r.status_code == 400 and "error" in r.json(), bad


@pytest.fixture(scope="module")
def indexed(data_dir, embedder) -> tuple[Path, int, str]:
    """A real PDF indexed into collection "docs"; returns (pdf, page, a passage of that page)."""
    from astrai_core.rag import Collection
    from astrai_core.rag.loaders import load_pdf

    pdf = ROOT / "tests" / "fixtures" / "docs" / "debian-reference.en.p61.pdf"  # a real page of a real manual
    with Collection.open(data_dir, "docs", embedder=embedder()) as coll:
        report = coll.add([pdf])
    assert report.failed == {}, report.failed
    pages = load_pdf(pdf, pdf.read_bytes()).pages
    page = max(pages, key=lambda p: len(p.text))
    words = page.text.split()
    return pdf, page.number, " ".join(words[len(words) // 3: len(words) // 3 + 14])


def test_a_retrieval_request_answers_with_sources_from_the_indexed_pdf(client, indexed):
    pdf, page, passage = indexed
    question = f"What does the document say here: {passage}?"
    kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=12,
                  extra_body={"astrai": {"collection": "docs", "k": 3}})
    r = client.chat.completions.create(**kwargs)
    ext = r.model_extra["astrai"]
    assert ext["found"] is True and 1 <= len(ext["sources"]) <= 3
    assert [s["n"] for s in ext["sources"]] == list(range(1, len(ext["sources"]) + 1))
    assert all(Path(s["file"]).name == pdf.name and s["page"] >= 1 and s["text"] for s in ext["sources"])
    assert page in [s["page"] for s in ext["sources"]]
    assert r.choices[0].message.content and r.usage.prompt_tokens > 100  # the sources are in the prompt
    # streamed: the same sources arrive with the first chunk, and the same text follows
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert chunks[0].model_extra["astrai"]["sources"] == ext["sources"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content


def test_a_question_the_documents_do_not_cover_says_so(client, indexed):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Who won the 1998 football world cup final?"}],
        temperature=0, extra_body={"astrai": {"collection": "docs"}})
    assert r.model_extra["astrai"]["found"] is False and r.model_extra["astrai"]["sources"] == []
    assert r.choices[0].message.content == NOT_FOUND_EN


def test_the_grounded_prompt_numbers_the_sources_and_keeps_the_conversation(smollm2_engine, data_dir, embedder,
                                                                            indexed):
    from astrai_core.rag import Collection
    from astrai_core.rag.prompt import GROUNDED_SYSTEM_PROMPT

    pdf, _, passage = indexed
    bot = Assistant(smollm2_engine, AssistantSettings(system_prompt="Be brief.", k=2))
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    with Collection.open(data_dir, "docs", embedder=embedder()) as coll:
        prepared = bot.prepare(history, passage, coll)
    assert prepared.found is True and len(prepared.sources) == 2
    system, *middle, user = prepared.messages
    assert system == {"role": "system", "content": GROUNDED_SYSTEM_PROMPT}  # cite-as-[n] instructions
    assert middle == history
    assert f"[1] {pdf.name}" in user["content"] and f"[2] {pdf.name}" in user["content"]
    assert user["content"].rstrip().endswith(passage)
