"""``astrai-app --self-test``: the headless check the installer build and CI run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_self_test_fails_clearly_without_a_model(tmp_path, capsys, qapp):
    code = main(["--self-test", "--data-dir", str(tmp_path), "--model", str(tmp_path / "no-such-model.gguf")])
    assert code == 1
    assert "no-such-model.gguf" in capsys.readouterr().err


@pytest.mark.slow
def test_self_test_answers_from_the_bundled_document(smollm2_gguf, tmp_path):
    """Slow (loads model + embedder in a fresh process): ``pytest -m slow tests/app/test_app_selftest.py``."""
    proc = subprocess.run([sys.executable, "-m", "app.main", "--self-test", "--model", str(smollm2_gguf)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sources: [1] self_test.txt p.1" in proc.stdout and "OK" in proc.stdout
