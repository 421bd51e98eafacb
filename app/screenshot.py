"""Take the README screenshots from a real window with a real conversation that cites a document.

Run under a real X server (Xvfb) so the window is drawn by the platform, e.g.::

    xvfb-run -a -s "-screen 0 1280x800x24" python -m app.screenshot --lang en --out docs/screenshot.png
    xvfb-run -a -s "-screen 0 1280x800x24" python -m app.screenshot --lang zh_CN --out docs/screenshot-zh.png

``--model`` picks a model other than the shipped one. Everything happens in a scratch data folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QMarginsF, QRectF, Qt, QTimer
from PySide6.QtGui import QFont, QPageLayout, QPageSize, QPainter, QPdfWriter
from PySide6.QtWidgets import QApplication

GUIDE_PAGES = [
    "Port Ellery Lighthouse — Visitor Guide\n\n"
    "The Harbour Lighthouse of Port Ellery was built in 1887 from grey granite and stands 31 metres tall. "
    "Visitors may climb the 142 steps to the lamp room between April and October.\n\n"
    "港口灯塔建于 1887 年，由灰色花岗岩砌成，高 31 米。每年四月至十月开放参观。",
    "Opening hours and tickets\n\n"
    "The tower is open daily from 10:00 to 17:00. Tickets cost 6 euros for adults and 3 euros for children; "
    "the last climb starts at 16:30. The lamp flashes white twice every ten seconds.\n\n"
    "开放时间为每天 10:00 至 17:00。成人票 6 欧元，儿童票 3 欧元；最后一次登塔为 16:30。",
]
QUESTIONS = {"en": "When is the lighthouse open, and how much are the tickets?",
             "zh_CN": "灯塔几点开放？门票多少钱？"}


def write_guide(path: Path) -> Path:
    writer = QPdfWriter(str(path))
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(20, 20, 20, 20), QPageLayout.Unit.Millimeter))
    painter = QPainter(writer)
    font = QFont()
    font.setPointSize(12)
    painter.setFont(font)
    for i, text in enumerate(GUIDE_PAGES):
        if i:
            writer.newPage()
        painter.drawText(QRectF(painter.viewport()), int(Qt.TextFlag.TextWordWrap), text)
    painter.end()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.screenshot")
    p.add_argument("--out", required=True)
    p.add_argument("--lang", choices=("en", "zh_CN"), default="en")
    p.add_argument("--model", default="")
    p.add_argument("--max-new-tokens", type=int, default=96)
    args = p.parse_args(argv)

    from app.i18n import LanguageSwitcher
    from app.settings import AppSettings
    from app.store import DOC_INDEXED, Store
    from app.windows.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    scratch = tempfile.TemporaryDirectory(prefix="astrai-screenshot-")
    data_dir = Path(scratch.name)
    store = Store.open(data_dir)
    settings = AppSettings(model_path=args.model, language=args.lang, temperature=0.0,
                           max_new_tokens=args.max_new_tokens, num_sources=3)
    store.put_settings(settings.to_dict())
    languages = LanguageSwitcher(app)
    languages.apply(args.lang)
    window = MainWindow(store, data_dir, settings, languages)
    window.resize(1280, 800)
    window.show()
    name = "Port Ellery lighthouse guide.pdf" if args.lang == "en" else "港口灯塔参观指南.pdf"
    guide = write_guide(data_dir / name)
    other = Path(__file__).resolve().parent / "data" / "self_test.txt"
    state = {"asked": False, "code": 1}

    def ready() -> None:
        if window.engine is not None and window.embedder is not None and not state["asked"]:
            state["asked"] = True
            window.add_documents([str(guide), str(other)])

    def on_document(path: str, status: str) -> None:
        if path == str(guide.resolve()) and status == DOC_INDEXED:
            older = window.new_conversation()
            window.rename_conversation(older.id, "Trip packing list" if args.lang == "en" else "旅行清单")
            window.new_conversation()
            window.send(QUESTIONS[args.lang])

    def on_answer(result) -> None:
        print(f"answer: {result.text!r}\nsources: {result.sources and result.sources[0]['file']}", flush=True)
        QTimer.singleShot(800, shoot)

    def shoot() -> None:
        screen = window.screen()
        image = screen.grabWindow(window.winId()) if screen is not None else None
        if image is None or image.isNull():
            image = window.grab()
        image.save(args.out)
        print(f"wrote {args.out} ({image.width()}x{image.height()})", flush=True)
        state["code"] = 0
        app.quit()

    window.engine_ready.connect(ready)
    window.embedder_ready.connect(ready)
    window.document_changed.connect(on_document)
    window.turn_finished.connect(on_answer)
    window.error_shown.connect(lambda text: (print("error:", text, file=sys.stderr), app.exit(1)))
    QTimer.singleShot(20 * 60 * 1000, app.quit)
    app.exec()
    window.shutdown()
    store.close()
    scratch.cleanup()
    return state["code"]


if __name__ == "__main__":
    sys.exit(main())
