"""UI language: Qt translators for the app (``astrai_<lang>.qm`` next to this file) and Qt's own dialogs.

Sources are ``astrai_zh_CN.ts`` (edit with Qt Linguist or by hand); rebuild the ``.qm`` with
``pyside6-lupdate app -ts app/i18n/astrai_zh_CN.ts`` then ``pyside6-lrelease app/i18n/astrai_zh_CN.ts``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QCoreApplication, QLibraryInfo, QLocale, QTranslator

I18N_DIR = Path(__file__).resolve().parent
SUPPORTED = ("en", "zh_CN")


def resolve_language(setting: str, system_locale: QLocale | None = None) -> str:
    """Map the ``language`` setting ("system", "en", "zh_CN") to a supported UI language."""
    if setting in SUPPORTED:
        return setting
    name = (system_locale or QLocale.system()).name()  # e.g. "zh_CN", "zh_TW", "en_US"
    return "zh_CN" if name.startswith("zh") else "en"


class LanguageSwitcher:
    """Owns the installed translators so the language can change while the app runs.

    Installing or removing a translator makes Qt send ``QEvent.LanguageChange`` to every widget,
    which is where the windows call their ``retranslate()``.
    """

    def __init__(self, app: QCoreApplication) -> None:
        self.app = app
        self.language = "en"
        self._translators: list[QTranslator] = []

    def apply(self, language: str) -> str:
        """Install the translators for ``language``; return the language actually used."""
        for t in self._translators:
            self.app.removeTranslator(t)
        self._translators.clear()
        self.language = language
        if language == "en":
            return language
        ours = QTranslator(self.app)
        if not ours.load(str(I18N_DIR / f"astrai_{language}.qm")):
            self.language = "en"
            return "en"
        qt = QTranslator(self.app)  # standard buttons (OK/Cancel) and file dialogs
        qt_dir = QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)
        if qt.load(f"qtbase_{language}", qt_dir) or qt.load(f"qt_{language}", qt_dir):
            self.app.installTranslator(qt)
            self._translators.append(qt)
        self.app.installTranslator(ours)
        self._translators.append(ours)
        return language
