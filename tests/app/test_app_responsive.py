"""Responsiveness: a GUI-thread heartbeat never stalls while a slow model answers and a big PDF indexes."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer

from app.store import DOC_INDEXING, DOCS_NONE
from app_pdfs import write_pdf

SLOW_STEP_S = 0.12  # every decode step takes at least this long
MEASURE_S = 4.0
MAX_GAP_MS = 100.0
LOREM = ("Lighthouses along the northern coast were automated in the nineteen-eighties; keepers kept "
         "logs of passing ships, storms and repairs. 灯塔的看守人记录过往船只、风暴和维修。 ") * 14


def test_heartbeat_never_stalls_while_generating_and_indexing(make_window, smollm2_engine, real_embedder,
                                                               fast_settings, tmp_path, qtbot, monkeypatch):
    big = write_pdf(tmp_path / "big.pdf", [f"Page {i + 1}. {LOREM}" for i in range(120)])
    real_decode = smollm2_engine._decode_token

    def slow_decode(*args, **kwargs):
        out = real_decode(*args, **kwargs)
        time.sleep(SLOW_STEP_S)  # a model whose decode step takes > 100 ms
        return out

    monkeypatch.setattr(smollm2_engine, "_decode_token", slow_decode)
    window = make_window(settings=fast_settings(max_new_tokens=400), engine=smollm2_engine, embedder=real_embedder)
    window.new_conversation()
    window.set_conversation_scope(DOCS_NONE, None)

    deltas: list[float] = []
    window.answer_delta.connect(lambda _d: deltas.append(time.perf_counter()))
    progress: list[float] = []
    window.document_changed.connect(lambda _p, _s: progress.append(time.perf_counter()))
    window.add_documents([str(big)])
    window.send("Tell me a long story about the sea and a lighthouse keeper.")
    qtbot.waitUntil(lambda: bool(deltas) and window.store.document(str(big)).status == DOC_INDEXING, timeout=120_000)

    beats: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    start = time.perf_counter()
    timer.start()
    qtbot.waitUntil(lambda: time.perf_counter() - start > MEASURE_S, timeout=int(MEASURE_S * 1000) + 30_000)
    timer.stop()

    during = [t for t in deltas if t >= start]
    assert window.generating and window.index_worker is not None, "both workers must be busy all along"
    assert len(during) >= 3, "the answer kept streaming during the measurement"
    step_gaps = [b - a for a, b in zip(during, during[1:])]
    assert min(step_gaps) >= SLOW_STEP_S  # the decode steps really were slow
    gaps_ms = [(b - a) * 1000 for a, b in zip(beats, beats[1:])]
    print(f"heartbeat: {len(beats)} beats, max gap {max(gaps_ms):.1f} ms, "
          f"{len(during)} deltas, index row {window.documents_model.row_for(str(big))}")
    assert max(gaps_ms) < MAX_GAP_MS, sorted(gaps_ms)[-5:]
    window.stop()
