"""Denormal flushing: only inside the block, on the calling thread, and not leaked by onnxruntime."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from unirank.backends.fpmode import flush_denormals, supported

TINY = np.float32(1e-39)  # a denormal float32


def _product() -> float:
    return float(TINY * np.float32(1.0))


def test_flush_is_scoped_to_the_block_and_restored_after_an_error():
    if not supported():
        pytest.skip("no denormal control on this platform")
    assert _product() > 0
    with flush_denormals():
        assert _product() == 0.0
    assert _product() > 0
    with pytest.raises(RuntimeError), flush_denormals():
        raise RuntimeError("boom")
    assert _product() > 0


def test_flush_is_per_thread():
    if not supported():
        pytest.skip("no denormal control on this platform")
    seen = []
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen.append(_product())
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with flush_denormals():
        inside.set()
        done.wait(10)
        assert _product() == 0.0
    t.join()
    assert seen and seen[0] > 0  # the other thread kept gradual underflow


def test_building_the_first_onnx_session_leaves_the_callers_mode_alone(make_tiny_bert, tmp_path):
    """onnxruntime's own switch sets flush-to-zero for good on the thread that builds the process's first
    session; unirank's sessions use it for their pool threads but restore the caller's mode."""
    pytest.importorskip("onnxruntime")
    if not supported():
        pytest.skip("no denormal control on this platform")
    from unirank.backends.onnx import onnx_model_file

    path = onnx_model_file(make_tiny_bert("seqcls", seed=3), "seqcls", cache_dir=tmp_path)
    gradual = "print(float(np.float32(1e-39) * np.float32(1.0)) > 0)\n"  # True: denormals survive
    raw_session = (
        "import onnxruntime as ort\n"
        "so = ort.SessionOptions(); so.add_session_config_entry('session.set_denormal_as_zero', '1')\n"
        f"ort.InferenceSession({str(path)!r}, so, providers=['CPUExecutionProvider'])\n"
    )

    def child(code: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", "import numpy as np\n" + code],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return out.stdout.split()

    ours_first = f"from unirank.backends.onnx import make_session\nmake_session({str(path)!r}, threads=2)\n"
    # ours keeps gradual underflow; a raw session after it no longer flips it (the switch acts once)
    assert child(ours_first + gradual + raw_session + gradual) == ["True", "True"]
    # onnxruntime's own behaviour (1.x): what the guard prevents; if a release changes it, this line says so
    assert child(raw_session + gradual) == ["False"]


def test_onnx_scores_are_the_same_with_and_without_flushing(make_tiny_bert, monkeypatch):
    pytest.importorskip("onnxruntime")
    import contextlib

    import unirank.backends.onnx as onnx_backend
    from unirank import Reranker

    path = make_tiny_bert("seqcls", seed=4)
    r = Reranker(f"ce:{path}", device="cpu", backend="onnx", onnx_threads=2)
    docs = ["rain falls from clouds", "cats purr", "x", "a longer passage about the water cycle " * 5]
    flushed = np.array(r.score("what causes rain", docs))
    monkeypatch.setattr(onnx_backend, "flush_denormals", contextlib.nullcontext)
    plain = np.array(r.score("what causes rain", docs))
    np.testing.assert_allclose(flushed, plain, atol=1e-6, rtol=0)


def test_onnx_forward_runs_flushed_on_the_calling_thread(tmp_path, monkeypatch):
    """A graph whose output is denormal: zero through ``OnnxForward`` (the session runs on the calling
    thread, which flushes for the call), the denormal itself with the flushing switched off."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    if not supported():
        pytest.skip("no denormal control on this platform")
    import contextlib

    import unirank.backends.onnx as onnx_backend

    h, tp = onnx.helper, onnx.TensorProto
    graph = h.make_graph(
        [
            h.make_node("Cast", ["input_ids"], ["f"], to=tp.FLOAT),
            h.make_node("Mul", ["f", "tiny"], ["logits"]),
        ],
        "denormal",
        [h.make_tensor_value_info("input_ids", tp.INT64, ["b", "s"])],
        [h.make_tensor_value_info("logits", tp.FLOAT, ["b", "s"])],
        initializer=[onnx.numpy_helper.from_array(np.array(1e-40, np.float32), "tiny")],
    )
    path = tmp_path / "denormal.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    fwd = onnx_backend.OnnxForward(path, threads=1)
    ids = {"input_ids": np.ones((2, 3), np.int64)}
    assert not fwd.run(ids).any()
    assert _product() > 0  # the caller's mode is back after the call
    monkeypatch.setattr(onnx_backend, "flush_denormals", contextlib.nullcontext)
    assert (fwd.run(ids) > 0).all()
