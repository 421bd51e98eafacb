"""user_data_dir precedence (flag > ASTRAI_HOME > platformdirs) and resource_path in a checkout / bundle."""

from __future__ import annotations

import sys
from pathlib import Path

from astrai_core.paths import resource_path, user_data_dir


def test_flag_beats_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRAI_HOME", str(tmp_path / "env"))
    assert user_data_dir(tmp_path / "flag") == (tmp_path / "flag").resolve()
    assert (tmp_path / "flag").is_dir()


def test_env_used_when_no_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRAI_HOME", str(tmp_path / "env"))
    assert user_data_dir() == (tmp_path / "env").resolve()
    assert user_data_dir("") == (tmp_path / "env").resolve()


def test_platformdirs_fallback_resolved_at_call(tmp_path, monkeypatch):
    monkeypatch.delenv("ASTRAI_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path = user_data_dir()
    assert path == (tmp_path / "xdg" / "AstrAI").resolve()


def test_resource_path_checkout_and_bundle(tmp_path, monkeypatch):
    assert (resource_path("embedder", "multilingual-e5-small") / "modules.json").is_file()
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resource_path("embedder") == Path(tmp_path) / "resources" / "embedder"
