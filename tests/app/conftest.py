"""Fixtures for the desktop app tests: a real window over a fresh data dir, real model and embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.i18n import LanguageSwitcher
from app.settings import AppSettings
from app.store import Store
from app.windows.main_window import MainWindow


@pytest.fixture(scope="session")
def real_embedder():
    """The bundled embedder (loaded once; the store format is what the app ships)."""
    from astrai_core.rag import load_embedder

    return load_embedder()


@pytest.fixture
def make_window(qtbot, qapp, tmp_path):
    """``make_window(data_dir=None, **kwargs)``: a shown MainWindow; closed (workers stopped) at teardown."""
    made: list[tuple[MainWindow, Store, LanguageSwitcher]] = []

    def make(data_dir: Path | None = None, settings: AppSettings | None = None, **kwargs) -> MainWindow:
        data_dir = Path(data_dir or tmp_path / "data")
        store = Store.open(data_dir)
        if settings is None:
            settings = AppSettings.from_dict(store.get_settings())
        languages = LanguageSwitcher(qapp)
        kwargs.setdefault("autoload", False)
        window = MainWindow(store, data_dir, settings, languages, **kwargs)
        qtbot.addWidget(window)
        window.show()
        made.append((window, store, languages))
        return window

    yield make
    for window, store, languages in made:
        window.shutdown()
        languages.apply("en")
        store.close()


@pytest.fixture
def fast_settings():
    """``fast_settings(**changes)``: deterministic, short answers keep the GUI tests quick."""

    def make(**changes) -> AppSettings:
        base = dict(temperature=0.0, top_p=1.0, max_new_tokens=24)
        base.update(changes)
        return AppSettings(**base)

    return make
