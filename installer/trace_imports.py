"""Record every module the app imports while it runs its self-test from the source checkout.

``build_installer.py`` runs this in a subprocess and hands the recorded modules to PyInstaller as
hidden imports: transformers and sentence-transformers load most of their code lazily (by name, at
run time), which PyInstaller's static analysis cannot see. The same record tells the build which
parts of big packages the app never touches, so they can be left out of the bundle.

Usage: ``python installer/trace_imports.py OUT.json [MODEL]``; exit status = the self-test's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def loaded_modules() -> dict[str, str | None]:
    """Every module in ``sys.modules`` with the file it came from (``None`` for built-ins)."""
    return {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}


def write_record(path: Path, modules: dict[str, str | None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(modules, indent=0, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    model = argv[1] if len(argv) > 1 else ""
    code = 1
    try:
        # The embedder first: without a model the self-test stops before it would load it.
        from astrai_core.rag.embedder import load_embedder

        embedder = load_embedder()
        embedder.encode(["trace"], kind="query")
        embedder.count_tokens(["trace"])
        del embedder
        from app.main import main as app_main

        code = app_main(["--self-test"] + (["--model", model] if model else []))
    finally:
        write_record(out, loaded_modules())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
