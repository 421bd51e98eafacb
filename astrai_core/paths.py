"""Where user data and shipped resources live.

Both are resolved when called, never at import, so tests and the CLI can point them elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "AstrAI"
ENV_HOME = "ASTRAI_HOME"


def user_data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The folder for collections, history and settings: ``override`` (a ``--data-dir`` flag)
    > ``$ASTRAI_HOME`` > the platform's user data folder (platformdirs). Created if missing."""
    if override not in (None, ""):
        path = Path(override).expanduser()
    elif os.environ.get(ENV_HOME):
        path = Path(os.environ[ENV_HOME]).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def resources_root() -> Path:
    """The ``resources/`` folder: inside a PyInstaller bundle (``sys._MEIPASS``) or the source checkout."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    """Path of a shipped resource, e.g. ``resource_path("embedder", "multilingual-e5-small")``."""
    return resources_root().joinpath(*parts)
