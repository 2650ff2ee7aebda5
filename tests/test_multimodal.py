"""Image documents scored by a VLM: a tiny random LLaVA on local transformers (a hand-computed forward is
the oracle) and an OpenAI-compatible vision endpoint on loopback (scores derived from the decoded image)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from _family_fixtures import save_tiny_llava, save_tiny_t5
from unirank import Reranker
from unirank.errors import SpecError
from unirank.methods.multimodal import VLM_PROMPT, VLMApiRanker, image_data_url, load_image
from unirank.types import Document

PIL = pytest.importorskip("PIL.Image")
Q = "what causes rain"


def _image(seed: int, size=(40, 50)):
    return PIL.fromarray((np.random.RandomState(seed).rand(*size, 3) * 255).astype("uint8"))


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory):
    pytest.importorskip("transformers")
    return save_tiny_llava(tmp_path_factory.mktemp("vlm") / "tiny-llava")


def test_local_vlm_hand_computed(llava_path, tmp_path):
    import torch
    import transformers

    r = Reranker(f"vlm:{llava_path}")
    img_a, img_b = _image(0), _image(1, (30, 30))
    docs = [Document("", "a", {"image": img_a}), Document("clouds", "b", {"image": img_b})]
    got = r.score(Q, docs)
    proc = transformers.AutoProcessor.from_pretrained(llava_path)
    model = transformers.AutoModelForImageTextToText.from_pretrained(llava_path).eval()
    true_id, false_id = proc.tokenizer.convert_tokens_to_ids(["True", "False"])
    prompts = [
        f"USER:<image>\n{VLM_PROMPT.format(query=Q)}\nASSISTANT:",
        f"USER:<image>\nclouds{VLM_PROMPT.format(query=Q)}\nASSISTANT:",
    ]
    for score, text, img in zip(got, prompts, [img_a, img_b]):
        inputs = proc(text=[text], images=[img], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        assert score == pytest.approx(float(logits[true_id] - logits[false_id]), abs=1e-4)
    assert abs(got[0] - got[1]) > 1e-4
    # the same image as a path, as PNG bytes and as a PIL image scores the same
    path = tmp_path / "a.png"
    path.write_bytes(_png(img_a))
    same = r.score(Q, [Document("", "p", {"image": str(path)}), Document("", "b", {"image": _png(img_a)})])
    np.testing.assert_allclose(same, [got[0], got[0]], atol=1e-5)
    assert r.rank(Q, docs, normalize="auto").normalized == "sigmoid"


def test_vlm_head_mismatch_and_bad_images(tmp_path):
    t5 = save_tiny_t5(tmp_path / "t5")
    with pytest.raises(SpecError, match="vision-language"):
        Reranker(f"vlm:{t5}")
    with pytest.raises(TypeError, match="path, bytes or a PIL image"):
        load_image(12)
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="cannot decode"):
        load_image(b"not an image")


class _VisionServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions: logprob(True) = -(1 - mean red / 255), logprob(False) = -mean
    red / 255 of the image it receives, so the expected score is computable from the image alone."""

    requests: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        parts = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        img = np.asarray(load_image(url), dtype=np.float64)
        red = img[..., 0].mean() / 255.0
        top = [
            {"token": "True", "logprob": -(1 - red)},
            {"token": "False", "logprob": -red},
            {"token": "Maybe", "logprob": -5.0},
        ]
        if "omit-false" in json.dumps(parts):
            top = top[:1] + top[2:]
        answer = {
            "choices": [
                {
                    "message": {"role": "assistant", "content": "True"},
                    "logprobs": {
                        "content": [{"token": "True", "logprob": top[0]["logprob"], "top_logprobs": top}]
                    },
                }
            ]
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def vision_server():
    _VisionServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VisionServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_compatible_vision_endpoint(vision_server):
    r = Reranker(f"vlm-api:{vision_server}@tiny-vlm", max_retries=0)
    imgs = [_image(2), _image(3), PIL.new("RGB", (8, 8), (255, 0, 0))]
    docs = [Document("", str(i), {"image": im}) for i, im in enumerate(imgs)]
    reds = [np.asarray(im, dtype=np.float64)[..., 0].mean() / 255 for im in imgs]
    expected = [-(1 - x) + x for x in reds]  # logprob(True) - logprob(False)
    np.testing.assert_allclose(r.score(Q, docs), expected, atol=1e-9)
    # the requests run concurrently, so they arrive in any order: every image must arrive exactly once
    decoded = []
    for body in _VisionServer.requests[: len(imgs)]:
        assert body["model"] == "tiny-vlm" and body["max_tokens"] == 1 and body["logprobs"] is True
        parts = body["messages"][0]["content"]
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert parts[-1] == {"type": "text", "text": VLM_PROMPT.format(query=Q)}
        payload = base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1])
        decoded.append(np.asarray(load_image(payload)))
    for im in map(np.asarray, imgs):
        assert sum(d.shape == im.shape and np.array_equal(d, im) for d in decoded) == 1
    res = asyncio.run(r.arank(Q, docs))
    assert res.indices[0] == 2 and res.scores[0] == pytest.approx(1.0)
    # a candidate token missing from top_logprobs gets the smallest listed log-probability
    missing = r.score(Q, [Document("omit-false", "m", {"image": imgs[2]})])[0]
    assert missing == pytest.approx(0.0 - (-5.0))


def test_api_bad_documents():
    r = VLMApiRanker("m", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(ValueError, match="neither an image nor text"):
        r.score(Q, [Document("  ", "x")])
    with pytest.raises(TypeError, match="PIL image"):
        image_data_url(3.5)
