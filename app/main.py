"""``astrai-app``: start the desktop app (or, with ``--self-test``, check it headless and exit)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
SELF_TEST_DOCUMENT = APP_DIR / "data" / "self_test.txt"
SELF_TEST_QUESTION = "What is the name of the lighthouse keeper's cat?"
SELF_TEST_TIMEOUT_MS = 15 * 60 * 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="astrai-app", description="AstrAI, the offline desktop assistant.")
    p.add_argument("--data-dir", help="where conversations, documents and settings live "
                                      "(default: the platform's user data folder, or $ASTRAI_HOME)")
    p.add_argument("--model", help="model folder or GGUF file to use instead of the saved setting")
    p.add_argument("--lang", choices=("system", "en", "zh_CN"), help="UI language for this run")
    p.add_argument("--self-test", action="store_true",
                   help="start offscreen, load the model, answer one question from a bundled document, exit 0 on success")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.self_test:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    from app.fonts import has_cjk_font, load_font_files
    from app.i18n import LanguageSwitcher, resolve_language
    from app.settings import AppSettings
    from app.store import Store
    from app.theme import apply_theme
    from app.windows.main_window import MainWindow
    from astrai_core.errors import AstraiError
    from astrai_core.paths import resource_path, user_data_dir

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("AstrAI")
    app.setOrganizationName("AstrAI")
    icon = Path(resource_path("icons", "astrai.svg"))
    if icon.is_file():
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))

    scratch = tempfile.TemporaryDirectory(prefix="astrai-self-test-") if args.self_test and not args.data_dir else None
    data_dir = Path(scratch.name) if scratch else Path(user_data_dir(args.data_dir))
    try:
        store = Store.open(data_dir)
    except AstraiError as exc:
        print(f"astrai-app: {exc}", file=sys.stderr)
        return 2
    try:
        settings = AppSettings.from_dict(store.get_settings())
    except AstraiError as exc:  # a hand-edited or foreign value: start from defaults, say why
        print(f"astrai-app: ignoring saved settings ({exc})", file=sys.stderr)
        settings = AppSettings()
    if args.model:
        settings = settings.replace(model_path=str(Path(args.model).expanduser().resolve()))
    if args.lang:
        settings = settings.replace(language=args.lang)
    if args.self_test:  # a short, deterministic answer is enough to prove the whole path works
        settings = settings.replace(max_new_tokens=min(settings.max_new_tokens, 64), temperature=0.0)
        from astrai_core.assistant import default_model_path

        try:
            default_model_path(settings.model_path or None)
        except AstraiError as exc:
            print(f"[self-test] FAILED: {exc}", file=sys.stderr)
            store.close()
            return 1

    languages = LanguageSwitcher(app)
    languages.apply(resolve_language(settings.language))
    apply_theme(app, settings.theme)
    font_dir = data_dir / "fonts"
    load_font_files([font_dir, Path(resource_path("fonts"))])

    window = MainWindow(store, data_dir, settings, languages, theme_applier=lambda t: apply_theme(app, t))
    if not has_cjk_font():
        window.warn_missing_cjk_font(font_dir)
    if args.self_test:
        from app.self_test import SelfTest

        check = SelfTest(window, SELF_TEST_DOCUMENT, SELF_TEST_QUESTION, SELF_TEST_TIMEOUT_MS)
        check.finished.connect(app.exit)
        check.start()
    window.show()
    code = app.exec()
    stuck = window.shutdown()
    store.close()  # every write is already committed; closing just checkpoints the WAL
    if scratch is not None:
        scratch.cleanup()
    if stuck:  # a model load cannot be interrupted: leave without waiting for it (nothing is lost)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
