"""A scripted loopback OpenAI-compatible server for reasoning rerankers and strategy options.

No model: it reads each passage's hidden relevance from its text (``"... relevance 7"``) and answers as a
noiseless reasoning model would, the way real servers shape such answers:

- listwise: a ``<think>`` trace that names the passages in the WRONG order (worst first), then the right
  ranking. ``shape``: ``"plain"`` (no trace), ``"tagged"`` (``<think>...</think>\\n[2] > [1]``),
  ``"noopen"`` (the chat template opened the trace: ``...</think>\\n[2] > [1]``), ``"answer"``
  (ReasonRank's ``<answer>`` tags), ``"separate"`` (chat: the trace in ``reasoning_content``, the ranking in
  ``content``, as vLLM's reasoning parser answers);
- pointwise (a prompt with ``Passage: ``, Rank1 style): a trace, ``</think>``, then `` true`` / `` false``
  with log-probabilities ``log P(true) = log(r / 10)``; ``first_only=True`` returns log-probabilities for the
  first generated position only (as llama.cpp's server and the model-backed fake do), so the label must be
  read in a second call with the trace prefilled;
- ``max_tokens`` counts words: a budget shorter than the trace cuts it before ``</think>`` (``separate``: the
  content is then ``null`` and everything is reasoning, as vLLM answers); a prompt ending in ``</think>`` or
  ``</think>\\n\\n[`` continues with the answer only.

Every answer carries ``usage`` (words as tokens). ``in_flight`` / ``max_in_flight`` count concurrent requests
(each held ``delay`` seconds); ``requests`` keeps every payload.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from unirank.types import Document

TRACE_FILLER = "weighing the passages against the query carefully"


def rel_docs(rels: list[int]) -> list[Document]:
    return [Document(f"passage {i} about rain relevance {r}", id=str(i)) for i, r in enumerate(rels)]


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


class ReasoningServer:
    def __init__(
        self, shape: str = "tagged", trace_words: int = 40, first_only: bool = False, delay: float = 0.0
    ) -> None:
        self.shape, self.trace_words, self.first_only, self.delay = shape, trace_words, first_only, delay
        self.model_name = "test-model"
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> ReasoningServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, out: Any) -> None:
                body = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, {"data": [{"id": server.model_name}]})

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    server.requests.append({"path": self.path, **payload})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    self._send(200, server.answer(self.path.endswith("/chat/completions"), payload))
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- answers ------------------------------------------------------------------------------------------
    def _trace(self, ids: list[str]) -> str:
        words = " ".join(f"maybe [{i}] is best," for i in ids).split()
        filler = TRACE_FILLER.split()
        while len(words) < self.trace_words:
            words.append(filler[len(words) % len(filler)])
        return " ".join(words)

    def answer(self, chat: bool, p: dict[str, Any]) -> dict[str, Any]:
        prompt = "\n".join(m["content"] for m in p["messages"]) if chat else p["prompt"]
        if "Passage: " in prompt:
            return self._pointwise(chat, p, prompt)
        found = re.findall(r"(?:\[|Passage)(\d+)\]?[ =]+passage \d+ about rain relevance (\d+)", prompt)
        rel = {i: int(r) for i, r in found}
        best = sorted(rel, key=lambda i: -rel[i])
        ranking = " > ".join(f"[{i}]" for i in best)
        if prompt.endswith("</think>\n\n["):  # forced close: the answer only, its "[" prefilled
            return self._wrap(chat, ranking[1:], None, p)
        if self.shape == "plain":  # no reasoning at all
            return self._wrap(chat, ranking, None, p)
        trace = self._trace(best[::-1])
        answer = f"<answer>{ranking}</answer>" if self.shape == "answer" else ranking
        if chat and self.shape == "separate":
            budget = int(p.get("max_tokens") or 10**6)
            if len(trace.split()) >= budget:  # ran out while reasoning: all of it is reasoning
                return self._wrap(chat, None, " ".join(trace.split()[:budget]), p)
            return self._wrap(chat, answer, trace, p)
        opener = "" if self.shape == "noopen" else "<think>\n"
        return self._wrap(chat, f"{opener}{trace}\n</think>\n\n{answer}", None, p)

    def _pointwise(self, chat: bool, p: dict[str, Any], prompt: str) -> dict[str, Any]:
        r = int(re.search(r"relevance (\d+)", prompt.split("Passage: ")[-1]).group(1))  # type: ignore[union-attr]
        lp = {" true": math.log(max(r, 0.5) / 10), " false": math.log(1 - max(r, 0.5) / 10)}
        label = max(lp, key=lambda t: lp[t])
        if prompt.rstrip().endswith("</think>"):
            return self._wrap(chat, label, None, p, {0: lp})
        trace = self._trace([])
        if chat and self.shape == "separate":
            return self._wrap(chat, label, trace, p, {0: lp})
        text = f"{trace} </think>{label}"
        return self._wrap(chat, text, None, p, {len(_tokens(text)) - 1: lp})

    def _wrap(
        self,
        chat: bool,
        text: str | None,
        reasoning: str | None,
        p: dict[str, Any],
        label_lp: dict[int, dict[str, float]] | None = None,
    ) -> dict[str, Any]:
        budget = int(p.get("max_tokens") or 10**6)
        for stop in p.get("stop") or []:  # as servers do: the text ends before the first stop string
            text = None if text is None else text.split(stop)[0]
        toks = _tokens(text or "")
        if len(toks) > budget:
            toks, text = toks[:budget], "".join(toks[:budget])
        k = int(p.get("top_logprobs") or 0) if chat else int(p.get("logprobs") or 0)
        tops = [(label_lp or {}).get(i, {t: -0.05, " maybe": -3.0}) for i, t in enumerate(toks)]
        if self.first_only:
            tops = tops[:1]
        usage = {"prompt_tokens": len(_tokens(str(p.get("prompt") or p.get("messages"))))}
        usage["completion_tokens"] = len(toks) + len((reasoning or "").split())
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
            if reasoning is not None:
                choice["message"]["reasoning_content"] = reasoning
            if k:
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": t,
                            "logprob": max(top.values()),
                            "top_logprobs": [{"token": a, "logprob": b} for a, b in top.items()],
                        }
                        for t, top in zip(toks, tops)
                    ]
                }
            return {"model": self.model_name, "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "logprobs": None}
        if k:
            choice["logprobs"] = {
                "tokens": toks[: len(tops)],
                "token_logprobs": [max(top.values()) for top in tops],
                "top_logprobs": tops,
                "text_offset": [0] * len(tops),
            }
        return {"model": self.model_name, "choices": [choice], "usage": usage}
