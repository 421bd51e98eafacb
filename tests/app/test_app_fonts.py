"""Chinese must be readable: fonts dropped in the data folder are loaded; a missing CJK font is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.fonts import cjk_families, load_font_files

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")  # Debian fonts-noto-cjk


def test_missing_cjk_font_banner_names_the_fix(make_window, tmp_path):
    window = make_window()
    window.warn_missing_cjk_font(tmp_path / "fonts")
    assert "no_cjk_font" in window.banner_kinds()
    assert "fonts-noto-cjk" in window.banner.text() and str(tmp_path / "fonts") in window.banner.text()


@pytest.mark.skipif(not CJK_FONT.is_file(), reason="needs Debian's fonts-noto-cjk as a real font file")
def test_fonts_in_the_data_folder_are_registered(tmp_path, qapp):
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    shutil.copy(CJK_FONT, fonts / CJK_FONT.name)
    (fonts / "notes.txt").write_text("not a font")
    families = load_font_files([fonts, tmp_path / "missing"])
    assert any("CJK SC" in f for f in families)
    assert any("CJK SC" in f for f in cjk_families())
