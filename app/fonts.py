"""Make sure Chinese text is readable.

Qt draws CJK characters as empty boxes when no installed font covers them (minimal Linux
installs, some containers). We do not ship a CJK font (a usable Simplified Chinese font is
10-20 MB, larger than the model it would sit next to); instead the app loads any font files the
user drops into ``<data dir>/fonts`` (or that are bundled under ``resources/fonts``) and, when
still no font covers Simplified Chinese, shows a warning naming the fix.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QFontDatabase

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


def load_font_files(dirs: list[Path]) -> list[str]:
    """Register every font file in ``dirs`` with Qt; return the families they added."""
    families: list[str] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in FONT_SUFFIXES:
                font_id = QFontDatabase.addApplicationFont(str(f))
                if font_id >= 0:
                    families.extend(QFontDatabase.applicationFontFamilies(font_id))
    return families


def cjk_families() -> list[str]:
    """Installed font families that cover Simplified Chinese."""
    return list(QFontDatabase.families(QFontDatabase.WritingSystem.SimplifiedChinese))


def has_cjk_font() -> bool:
    return bool(cjk_families())
