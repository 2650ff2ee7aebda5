"""Failure visibility, the last column of the invariance matrix (see ``test_invariance.py``).

A backend that returns nothing usable must raise a typed error or log a warning, and never hand back a
constant score that looks like a real one:

- every family with torch weights, its weights set to NaN (then restored);
- the OpenAI-compatible HTTP paths (``llm-pointwise``, ``llm-listwise``, ``vlm-api``) against a loopback
  server that misbehaves as real ones do: ``logprobs: null``, empty text, ``content: null`` with a
  reasoning trace,
  ``<think>`` traces, NaN log-probabilities, and a server that ignores the model name;
- the hosted-API clients against fakes that drop results or answer NaN.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from _invariance_fixtures import CASES, DOCS, Case, Q, models, params, rankers  # noqa: F401
from _llm_fixtures import tiny_causal_lm  # noqa: F401
from unirank.errors import UniRankError

UNSEEN = ["an unseen passage about clouds", "another text on the weather today", "third one"]
BY_ID = {c.id: c for c in CASES}


def outcome(caplog: Any, fn: Any) -> tuple[str, Any]:
    """``("raised", exc)``, ``("warned", scores)`` or ``("silent", scores)``."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        try:
            scores = fn()
        except (UniRankError, ValueError, RuntimeError) as exc:
            return "raised", exc
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("unirank")]
    return ("warned" if warned else "silent"), scores


def assert_visible(caplog: Any, fn: Any, what: str) -> tuple[str, Any]:
    how, got = outcome(caplog, fn)
    assert how != "silent", f"{what}: unusable backend output gave scores {got} with no error or warning"
    if how == "warned" and len(got) > 1:
        arr = np.asarray(got, dtype=np.float64)
        assert not (np.isfinite(arr).all() and np.ptp(arr) == 0), f"{what}: a constant score {got}"
    return how, got


def _torch_modules(ranker: Any) -> list[Any]:
    import torch

    found: list[Any] = []
    todo, seen = [ranker], set()
    for _ in range(4):  # the ranker, its engine / strategy / window, their model and heads
        nxt = []
        for obj in todo:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            for val in vars(obj).values() if hasattr(obj, "__dict__") else ():
                if isinstance(val, torch.nn.Module):
                    if all(val is not m for m in found):
                        found.append(val)
                elif type(val).__module__.startswith("unirank."):
                    nxt.append(val)
        todo = nxt
    return found


@pytest.mark.parametrize("case", params("nan", lambda c: c.weights))
def test_nan_weights_are_visible(case: Case, rankers, caplog) -> None:  # noqa: F811
    import torch

    r = rankers(case)
    mods = _torch_modules(r)
    assert mods, f"{case.id}: declared weights but no torch module found"
    # every float parameter and buffer (non-persistent ones such as rotary inv_freq too), kept to restore
    tensors = [t for m in mods for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    saved = [t.detach().clone() for t in tensors]
    try:
        with torch.no_grad():
            for t in tensors:
                t.fill_(float("nan"))
        assert_visible(caplog, lambda: r.score(Q, UNSEEN), f"{case.id} with NaN weights")
    finally:
        with torch.no_grad():
            for t, keep in zip(tensors, saved):
                t.copy_(keep)
    again = r.score(Q, UNSEEN[:2])
    assert np.isfinite(again).all() and again == r.score(Q, UNSEEN[:2]), "weights not restored"


SERVER_RANKERS = {
    "yesno-completions": ("llm-pointwise-server", {}),
    "yesno-chat": ("llm-pointwise-server", {"endpoint": "chat"}),
    "graded": ("llm-pointwise-server", {"mode": "graded"}),
    "likelihood": ("llm-pointwise-server", {"mode": "likelihood"}),
    "first": ("llm-listwise-server", {}),
    "first-chat": ("llm-listwise-server", {"endpoint": "chat"}),
    "generate": ("llm-listwise-server", {"method": "generate", "window_size": 3}),
    "generate-chat": ("llm-listwise-server", {"method": "generate", "endpoint": "chat", "window_size": 3}),
    "vlm-api": ("vlm-api", {}),
}
FAULTS = ("nologprobs", "emptytext", "nullcontent", "reasoning", "nan", "chatshape")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", sorted(SERVER_RANKERS))
def test_misbehaving_openai_server_is_visible(name, fault, models, rankers, caplog) -> None:  # noqa: F811
    case_id, opts = SERVER_RANKERS[name]
    r = rankers(BY_ID[case_id], **opts)
    server = models.get("llm_server")
    clean = r.score(Q, DOCS[:3])
    assert np.isfinite(clean).all(), f"{name}: the well-behaved server already gives {clean}"
    server.misbehave = fault
    try:
        if name.startswith("generate") and fault == "reasoning":  # the trace is dropped, the answer used
            how, got = outcome(caplog, lambda: r.score(Q, DOCS[:3]))
            assert how != "raised" and got == clean, f"{name}: a <think> trace changed the ranking {got}"
            return
        if name == "likelihood" and fault == "reasoning":  # an echo request generates nothing to reason
            return
        if fault == "chatshape" and name != "likelihood":  # llama.cpp's shape (no echo offsets: visible)
            how, got = outcome(caplog, lambda: r.score(Q, DOCS[:3]))
            assert how != "raised" and got == clean, f"{name}: chat-shaped logprobs gave {got}"
            return
        assert_visible(caplog, lambda: r.score(Q, DOCS[:3]), f"{name} / {fault}")
    finally:
        server.misbehave = None


def test_a_server_ignoring_the_model_name_is_warned_about(models, rankers, caplog) -> None:  # noqa: F811
    server = models.get("llm_server")
    from unirank import Reranker
    from unirank.backends.openai_compat import UnknownModelError

    r = Reranker("llm-pointwise:asked-model", base_url=server.base_url, max_retries=0, top_logprobs=100_000)
    with pytest.raises(UnknownModelError, match="test-model"):  # GET /v1/models does not list it: refused
        r.score(Q, DOCS[:2])
    server.list_models = False  # a server without the route: the name cannot be checked up front
    r = Reranker("llm-pointwise:asked-model", base_url=server.base_url, max_retries=0, top_logprobs=100_000)
    clean = r.score(Q, DOCS[:2])
    server.served_name = "some-other-model"
    try:
        how, got = outcome(
            caplog,
            lambda: Reranker(
                "llm-pointwise:asked-model", base_url=server.base_url, max_retries=0, top_logprobs=100_000
            ).score(Q, DOCS[:2]),
        )
    finally:
        server.served_name, server.list_models = None, True
    assert how == "warned" and got == clean
    assert any("some-other-model" in rec.getMessage() for rec in caplog.records)


# -- hosted APIs ---------------------------------------------------------------------------------------------
def _bad_api(provider: str, fault: str) -> Any:
    """A fake of ``provider`` whose every answer has ``fault``: "short" (the last result dropped), "none"
    (no results at all), "nan" (NaN scores) or "ok" (none)."""
    from fastapi.responses import Response

    from _fake_providers import PATHS, _body

    app = FastAPI()

    @app.post(PATHS[provider])
    async def rerank(request: Request) -> Response:
        out = _body(provider, await request.json())
        items = out if isinstance(out, list) else out.get("results") or out.get("data")
        if fault == "ok":
            pass
        elif fault == "short":
            items.pop()
        elif fault == "none":
            items.clear()
        else:
            for it in items:
                it["score" if "score" in it else "relevance_score"] = math.nan
        return Response(json.dumps(out), 200, media_type="application/json")

    return app


@pytest.mark.parametrize("fault", ["ok", "short", "none", "nan"])
@pytest.mark.parametrize("provider", ["cohere", "jina", "voyage", "mixedbread", "tei"])
def test_misbehaving_rerank_api_is_visible(provider, fault, caplog) -> None:
    from _fake_providers import serving
    from unirank import Reranker

    with serving(_bad_api(provider, fault)) as url:
        if provider == "tei":
            r = Reranker(f"tei:{url}", max_retries=0)
        else:
            r = Reranker(f"{provider}:m", base_url=url, api_key="k", max_retries=0)
        if fault == "ok":  # the fake itself answers correctly: a failure below is the client's doing
            how, got = outcome(caplog, lambda: r.score(Q, DOCS[:3]))
            assert how == "silent" and np.isfinite(got).all(), (how, got)
            return
        assert_visible(caplog, lambda: r.score(Q, DOCS[:3]), f"{provider} / {fault}")
