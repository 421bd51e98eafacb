"""Light / dark appearance: follow the system unless the user picked one."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette


_OVERRIDE = "astraiPaletteOverride"  # set on the app while our own palette replaces the platform's


def apply_theme(app: QGuiApplication, theme: str) -> None:
    """``theme`` is "system", "light" or "dark".

    Qt >= 6.8 asks the platform for the scheme; where the platform cannot switch (some Linux
    desktops, offscreen) the palette is set directly so the choice still takes effect.
    """
    hints = app.styleHints()
    wanted = {"dark": Qt.ColorScheme.Dark, "light": Qt.ColorScheme.Light}.get(theme)
    if wanted is None:
        hints.unsetColorScheme()
        if app.property(_OVERRIDE):
            app.setPalette(QPalette())  # an empty palette hands colours back to the platform
            app.setProperty(_OVERRIDE, False)
        return
    hints.setColorScheme(wanted)
    if hints.colorScheme() != wanted:
        app.setPalette(dark_palette() if wanted == Qt.ColorScheme.Dark else light_palette())
        app.setProperty(_OVERRIDE, True)


def _palette(colors: dict) -> QPalette:
    p = QPalette()
    for role, color in colors.items():
        p.setColor(role, color)
    return p


def dark_palette() -> QPalette:
    return _palette({
        QPalette.ColorRole.Window: QColor(37, 37, 38), QPalette.ColorRole.WindowText: QColor(230, 230, 230),
        QPalette.ColorRole.Base: QColor(30, 30, 30), QPalette.ColorRole.AlternateBase: QColor(45, 45, 48),
        QPalette.ColorRole.Text: QColor(230, 230, 230), QPalette.ColorRole.Button: QColor(50, 50, 52),
        QPalette.ColorRole.ButtonText: QColor(230, 230, 230), QPalette.ColorRole.Highlight: QColor(58, 110, 200),
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255), QPalette.ColorRole.Link: QColor(110, 160, 255),
        QPalette.ColorRole.ToolTipBase: QColor(50, 50, 52), QPalette.ColorRole.ToolTipText: QColor(230, 230, 230),
        QPalette.ColorRole.PlaceholderText: QColor(140, 140, 140), QPalette.ColorRole.Mid: QColor(90, 90, 90),
    })


def light_palette() -> QPalette:
    return _palette({
        QPalette.ColorRole.Window: QColor(239, 239, 239), QPalette.ColorRole.WindowText: QColor(20, 20, 20),
        QPalette.ColorRole.Base: QColor(255, 255, 255), QPalette.ColorRole.AlternateBase: QColor(245, 245, 245),
        QPalette.ColorRole.Text: QColor(20, 20, 20), QPalette.ColorRole.Button: QColor(239, 239, 239),
        QPalette.ColorRole.ButtonText: QColor(20, 20, 20), QPalette.ColorRole.Highlight: QColor(48, 140, 198),
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255), QPalette.ColorRole.Link: QColor(0, 80, 200),
    })
