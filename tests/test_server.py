"""The OpenAI-compatible API, driven by the official ``openai`` client against a real server.

One server (uvicorn in a thread, free loopback port) serves the whole module with the real
SmolLM2-135M GGUF; it is stopped, and its threads joined, when the module ends.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest

from astrai_core.assistant import Assistant, AssistantSettings
from astrai_core.errors import ConfigError
from astrai_core.generation import GenerationConfig
from astrai_core.server import ServerConfig, check_bind, create_app, start_server

MODEL_ID = "SmolLM2-135M-Instruct"
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(smollm2_engine, tmp_path_factory):
    assistant = Assistant(smollm2_engine, AssistantSettings(generation=GenerationConfig(max_new_tokens=16)))
    data_dir = tmp_path_factory.mktemp("server-data")
    app = create_app(assistant, ServerConfig(MODEL_ID, data_dir))
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
    assert [m.id for m in models.data] == [MODEL_ID]
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
                  temperature=0.9, top_p=0.95, seed=1234, max_tokens=20)
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
            kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=6)
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
                                                 temperature=0, max_tokens=6).choices[0].message.content
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
