"""A loopback OpenAI-compatible server for tests, backed by a REAL local causal LM (stdlib http.server).

Routes: ``GET /v1/models``, ``POST /v1/completions`` (``prompt``, ``max_tokens``, ``logprobs``, ``echo``,
``stop``) and ``POST /v1/chat/completions`` (``messages``, ``max_tokens``, ``logprobs``/``top_logprobs``).
Answers are computed by the model: greedy text, next-token top log-probabilities (for the first generated
position), and echoed prompt token log-probabilities. Chat messages are rendered with
:func:`unirank.prompts.messages_to_text`, as the local engine does.

Faults are injected per request from ``server.faults`` (consumed in order): ``"429:<retry-after>"``,
``"500"``, ``"400"`` / ``"401"`` / ``"403"`` / ``"404"``, ``"slow:<seconds>"``, ``"garbage"`` (200 with
malformed JSON), ``"empty"`` (200 without choices).
Every request is recorded in ``server.requests``.

It also misbehaves the way real servers do, on every request while ``server.misbehave`` is set (or once, as a
fault of the same name): ``"nologprobs"`` (``logprobs: null``: logprobs unsupported or dropped, as Ollama's
and several hosted endpoints did), ``"emptytext"`` (empty text, no logprobs), ``"nullcontent"`` (chat
``content: null`` with the text in ``reasoning_content``, as vLLM's reasoning parser answers when the
budget ends inside the reasoning), ``"chatshape"`` (``/completions`` log-probabilities in the chat shape,
``{"content": [{"token", "logprob", "top_logprobs": [...]}]}``, as llama.cpp's server answers),
``"reasoning"`` (a ``<think>...</think>`` trace before the answer, and a
first-token distribution that is all reasoning tokens), ``"nan"`` (NaN log-probabilities). ``served_name``
set: every answer names that model whatever was asked (llama.cpp's server ignores the ``model`` field).

``GET /v1/models`` lists ``model_name`` (``list_models = False``: 404, a server without the route; GETs are
recorded in ``server.gets``, not ``server.requests``). Every answer carries ``usage`` (prompt and completion
tokens as the backing tokenizer counts them). ``requests[i]["payload"]`` is the decoded request body.
A ``"slow:<s>"`` request watches its socket while it waits: a client that gives up and closes the connection
is recorded in ``server.disconnects`` (its time) and gets no answer. Chat requests honour a last assistant
message with ``continue_final_message`` (vLLM's prefill) while ``chat_prefill`` is set (default);
``chat_prefill = False`` is a server that ignores those fields and answers a fresh assistant turn (the
assistant message becomes an earlier turn); ``chat_prefill = "reject"`` answers HTTP 400 to them, as OpenAI's
API does to unknown arguments. ``fresh_turn = True``: a fresh chat answer (not a prefill continuation) has the
first-token distribution a real chat model had in issue 15 (``" <<"`` first, one identifier in the top 20).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from unirank.prompts import messages_to_text


class FakeOpenAIServer:
    def __init__(self, engine: Any, model_name: str = "test-model", max_logprobs: int = 20) -> None:
        self.engine, self.model_name, self.max_logprobs = engine, model_name, max_logprobs
        self.faults: list[str] = []
        self.misbehave: str | None = None
        self.served_name: str | None = None
        self.list_models = True
        self.chat_prefill: bool | str = True
        self.fresh_turn = False
        self.requests: list[dict[str, Any]] = []
        self.gets: list[str] = []
        self.disconnects: list[float] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with server._lock:
                    server.gets.append(self.path)
                if not server.list_models or not self.path.rstrip("/").endswith("/models"):
                    return self._send(404, b'{"error": "not found"}')
                self._send(200, json.dumps({"data": [{"id": server.model_name}]}).encode())

            def _wait(self, seconds: float) -> bool:
                """Sleep ``seconds`` unless the client hangs up first (recorded); False when it did."""
                end = time.time() + seconds
                while time.time() < end:
                    ready, _, _ = select.select([self.connection], [], [], min(0.02, end - time.time()))
                    if ready and self.connection.recv(1, socket.MSG_PEEK) == b"":
                        with server._lock:
                            server.disconnects.append(time.time())
                        self.close_connection = True
                        return False
                return True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    try:
                        decoded = json.loads(body)
                    except ValueError:
                        decoded = None
                    server.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "t": time.time(),
                            "payload": decoded,
                        }
                    )
                    fault = server.faults.pop(0) if server.faults else None
                bad = fault if fault in MISBEHAVIOURS else server.misbehave
                if fault:
                    kind, _, arg = fault.partition(":")
                    if kind == "429":
                        return self._send(429, b'{"error": "rate limited"}', {"Retry-After": arg or "0"})
                    if kind == "500":
                        return self._send(500, b'{"error": "boom"}')
                    if kind in ("400", "401", "403", "404"):  # what no retry can fix
                        return self._send(int(kind), b'{"error": "client error"}')
                    if kind == "garbage":
                        return self._send(200, b'{"choices": [{"text": "unterminated')
                    if kind == "empty":
                        return self._send(200, b'{"choices": []}')
                    if kind == "slow" and not self._wait(float(arg or 1)):
                        return None
                try:
                    payload = json.loads(body)
                    if self.path.endswith("/chat/completions"):
                        out = server.chat(payload)
                    elif self.path.endswith("/completions"):
                        out = server.complete(payload)
                    else:
                        return self._send(404, b'{"error": "not found"}')
                except ValueError as exc:
                    return self._send(400, json.dumps({"error": str(exc)}).encode())
                if bad:
                    _misbehave(bad, out)
                if server.served_name:
                    out["model"] = server.served_name
                self._send(200, json.dumps(out).encode())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- model-backed answers -----------------------------------------------------------------------------
    def _token_str(self, tid: int) -> str:
        """The token's text: SentencePiece "▁" becomes a space; WordPiece pieces stay as they are."""
        return str(self.engine.tokenizer.convert_ids_to_tokens(int(tid))).replace("▁", " ")

    def _top(self, ids: list[int], k: int) -> list[tuple[str, float]]:
        if k > self.max_logprobs:
            raise ValueError(f"logprobs={k} is over this server's limit of {self.max_logprobs}")
        row = self.engine.next_token_logprobs([ids])[0]
        best = np.argsort(-row, kind="stable")[:k]
        return [(self._token_str(i), float(row[i])) for i in best]

    def _generate(self, ids: list[int], payload: dict[str, Any]) -> str:
        n = int(payload.get("max_tokens") or 16)
        text = self.engine.generate([ids], n)[0]
        for stop in payload.get("stop") or []:
            text = text.split(stop)[0]
        return text

    def _echo(self, prompt: str) -> dict[str, Any]:
        tok = self.engine.tokenizer
        enc = tok(prompt, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        bos = self.engine.encode("", special=True)
        if bos:
            lps: list[float | None] = [float(x) for x in self.engine.continuation_logprobs([bos], [ids])[0]]
        else:  # no BOS: the first token has no log-probability
            lps = [None, *(float(x) for x in self.engine.continuation_logprobs([ids[:1]], [ids[1:]])[0])]
        return {
            "tokens": [prompt[a:b] for a, b in offsets],
            "token_logprobs": lps,
            "top_logprobs": None,
            "text_offset": [a for a, _ in offsets],
        }

    def complete(self, p: dict[str, Any]) -> dict[str, Any]:
        prompt = p["prompt"]
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        if p.get("echo") and not p.get("max_tokens"):
            choice.update(text=prompt, logprobs=self._echo(prompt))
            usage = self._usage(self.engine.encode(prompt), "")
        else:
            ids = self.engine.encode(prompt)
            choice["text"] = self._generate(ids, p)
            usage = self._usage(ids, choice["text"])
            if p.get("logprobs") is not None:
                top = self._top(ids, int(p["logprobs"]))
                choice["logprobs"] = {
                    "tokens": [top[0][0]],
                    "token_logprobs": [top[0][1]],
                    "top_logprobs": [dict(reversed(top))],  # the likeliest wins a name clash
                    "text_offset": [len(prompt)],
                }
        return {"object": "text_completion", "model": self.model_name, "choices": [choice], "usage": usage}

    def _usage(self, ids: list[int], text: str) -> dict[str, int]:
        done = len(self.engine.encode(text, special=False)) if text else 0
        return {"prompt_tokens": len(ids), "completion_tokens": done, "total_tokens": len(ids) + done}

    def chat(self, p: dict[str, Any]) -> dict[str, Any]:
        msgs = [_flat(m) for m in p["messages"]]
        if self.chat_prefill == "reject" and "continue_final_message" in p:
            raise ValueError("Unrecognized request argument supplied: continue_final_message")
        prefix = ""
        if self.chat_prefill and p.get("continue_final_message") and msgs and msgs[-1]["role"] == "assistant":
            prefix = msgs.pop()["content"]  # vLLM: the answer continues the last assistant message
        prompt = messages_to_text(msgs, self.engine.tokenizer, prefix)
        ids = self.engine.encode(prompt)
        text = self._generate(ids, p)
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": "length",
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
        }
        if p.get("logprobs"):
            top = self._top(ids, int(p.get("top_logprobs") or 1))
            if self.fresh_turn and not prefix:
                top = FRESH_TURN[: int(p.get("top_logprobs") or 1)]
            entries = [{"token": t, "logprob": v} for t, v in top]
            choice["logprobs"] = {
                "content": [{"token": top[0][0], "logprob": top[0][1], "top_logprobs": entries}]
            }
        usage = self._usage(ids, text)
        return {"object": "chat.completion", "model": self.model_name, "choices": [choice], "usage": usage}


def _flat(message: dict[str, Any]) -> dict[str, Any]:
    """A vision message's text parts joined (images are dropped: the backing model reads text only)."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"]
        return {**message, "content": "\n".join(parts)}
    return message


#: a chat model's first token when it starts its own answer (issue 15: " <<", one identifier in the top 20)
_FRESH = (" <<", "Based", "[", "Here", "1", "It", "**", "The", "Passage", "Ranking", "To", "Sure", "Let", "<")
FRESH_TURN = [(t, -0.4 - 0.5 * i) for i, t in enumerate((*_FRESH, "A", "\n", "Of", "As", "We", "My"))]

MISBEHAVIOURS = ("nologprobs", "emptytext", "nullcontent", "reasoning", "nan", "chatshape")
THINK = "<think>\nPassage [2] talks about rain, [1] is short; maybe 3 > 1.\n</think>\n\n"


def _misbehave(kind: str, out: dict[str, Any]) -> None:
    """Rewrite a correct answer the way a misbehaving real server would (see the module docstring)."""
    for choice in out["choices"]:
        msg = choice.get("message")
        lp = choice.get("logprobs")
        if kind in ("nologprobs", "emptytext", "nullcontent"):
            choice["logprobs"] = None
        if kind == "emptytext":
            if msg is not None:
                msg["content"] = ""
            else:
                choice["text"] = ""
        elif kind == "nullcontent" and msg is not None:
            msg["reasoning_content"], msg["content"] = THINK.strip(), None
        elif kind == "nullcontent":
            choice["text"] = ""
        elif kind == "reasoning":
            if msg is not None:
                msg["content"] = THINK + msg["content"]
            else:
                choice["text"] = THINK + choice["text"]
            top = {"<think>": -0.01, "Okay": -5.2, "\n": -6.0}
            if lp and "content" in lp:
                entries = [{"token": t, "logprob": v} for t, v in top.items()]
                lp["content"] = [{"token": "<think>", "logprob": -0.01, "top_logprobs": entries}]
            elif lp and lp.get("top_logprobs"):
                lp.update(tokens=["<think>"], token_logprobs=[-0.01], top_logprobs=[top])
        elif kind == "chatshape" and lp and "top_logprobs" in lp:
            tops = lp.get("top_logprobs") or []
            choice["logprobs"] = {
                "content": [
                    {
                        "token": tok,
                        "logprob": val,
                        "top_logprobs": [{"token": t, "logprob": v} for t, v in (top or {}).items()],
                    }
                    for tok, val, top in zip(lp["tokens"], lp["token_logprobs"], tops)
                ]
            }
        elif kind == "nan" and lp:
            if "content" in lp:
                for item in lp["content"]:
                    item["logprob"] = float("nan")
                    for t in item.get("top_logprobs") or []:
                        t["logprob"] = float("nan")
            else:
                lp["token_logprobs"] = [None if x is None else float("nan") for x in lp["token_logprobs"]]
                lp["top_logprobs"] = [
                    {k: float("nan") for k in d} if d else d for d in lp.get("top_logprobs") or []
                ]
