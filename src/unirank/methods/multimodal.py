"""Multimodal re-ranking: documents that are images (or image + text), scored by a vision-language model.

An image document is a :class:`~unirank.types.Document` whose ``metadata["image"]`` is a file path, raw bytes
or a PIL image; its ``text`` (may be empty) is shown to the model next to the image. Scoring is pointwise
yes/no, MonoQwen2-VL style: the model sees the image, then ``"Assert the relevance of the previous image
document to the following query, answer True or False. The query is: {query}"``, and the score is
``logit(True) - logit(False)`` for the next token (:attr:`ScoreKind.LOGIT`).

- :class:`VLMRanker`: local transformers (``AutoProcessor`` + ``AutoModelForImageTextToText``, e.g. Qwen2-VL).
- :class:`VLMApiRanker`: any OpenAI-compatible vision endpoint (vLLM, SGLang, Ollama, hosted APIs): the image
  goes as a base64 ``data:`` URL in an ``image_url`` content part, one request per document (truly async),
  and the score is ``logprob(True) - logprob(False)`` from the first token's ``top_logprobs``.

Text-only rankers refuse image documents with a ``TypeError`` (:func:`reject_image_documents`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Capabilities, Ranker, has_image, reject_image_documents
from ..errors import SpecError, require
from ..types import Document, ScoreKind

__all__ = [
    "VLM_PROMPT",
    "VLMApiRanker",
    "VLMRanker",
    "has_image",
    "image_data_url",
    "load_image",
    "reject_image_documents",
]

logger = logging.getLogger(__name__)

VLM_PROMPT = (
    "Assert the relevance of the previous image document to the following query, answer True or False. "
    "The query is: {query}"
)


def load_image(image: Any) -> Any:
    """A PIL RGB image from a path, bytes or PIL image; ``TypeError``/``ValueError`` otherwise."""
    pil = require("PIL.Image", "vision", "pillow")
    if isinstance(image, pil.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray, memoryview)):
        src: Any = io.BytesIO(bytes(image))
    elif isinstance(image, (str, Path)):
        if str(image).startswith("data:"):
            src = io.BytesIO(base64.b64decode(str(image).split(",", 1)[1]))
        elif not Path(image).is_file():
            raise ValueError(f"image file not found: {image}")
        else:
            src = str(image)
    else:
        raise TypeError(f"metadata['image'] must be a path, bytes or a PIL image, not {type(image).__name__}")
    try:
        with pil.open(src) as img:
            return img.convert("RGB")
    except Exception as exc:
        raise ValueError(f"cannot decode the image ({type(exc).__name__}: {exc})") from exc


def image_data_url(image: Any) -> str:
    """A ``data:image/png;base64,...`` URL of the image (what OpenAI-compatible vision APIs accept)."""
    buf = io.BytesIO()
    load_image(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _check_docs(docs_lists: list[list[Document]]) -> None:
    for docs in docs_lists:
        for i, d in enumerate(docs):
            if not has_image(d) and not d.text.strip():
                raise ValueError(f"document {d.id!r} (index {i}) has neither an image nor text")


class VLMRanker(Ranker):
    """Pointwise VLM reranker on local transformers (MonoQwen2-VL style True/False logits).

    Args:
        model_name_or_path: a vision-language checkpoint (``*ForConditionalGeneration`` with a processor).
        tokens: ``(false_token, true_token)``; default ``("False", "True")`` (MonoQwen2-VL).
        prompt: the instruction after the image, with ``{query}``.
        processor: where to load the processor from (default: the model folder).
        device, dtype, trust_remote_code, revision: as for the other HF rankers.

    >>> VLMRanker("lightonai/MonoQwen2-VL-v0.1", processor="Qwen/Qwen2-VL-2B-Instruct")  # doctest: +SKIP
    """

    score_kind = ScoreKind.LOGIT
    capabilities = Capabilities(pointwise=True)
    accepts_images = True  # read by the base class check that refuses image documents elsewhere

    def __init__(
        self,
        model_name_or_path: str,
        *,
        tokens: tuple[str, str] = ("False", "True"),
        prompt: str = VLM_PROMPT,
        processor: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        from ..backends import hf

        super().__init__(name or f"vlm:{model_name_or_path}", calibrator=kwargs.pop("calibrator", None))
        if kwargs:
            raise TypeError(f"unknown option(s) for a VLM ranker: {sorted(kwargs)}")
        torch, transformers = hf.torch_modules()
        self.path = hf.local_model_dir(model_name_or_path, revision=revision)
        config = hf.read_json(self.path / "config.json")
        archs = [str(a) for a in config.get("architectures") or []]
        if "vision_config" not in config or not any(a.endswith("ForConditionalGeneration") for a in archs):
            raise SpecError(
                f"{model_name_or_path}: a VLM ranker expects a vision-language checkpoint (a vision_config "
                "and a *ForConditionalGeneration head, e.g. Qwen2VLForConditionalGeneration); "
                f"got architectures={archs}"
            )
        proc_path = hf.local_model_dir(processor) if processor else self.path
        self.processor = transformers.AutoProcessor.from_pretrained(
            str(proc_path), trust_remote_code=trust_remote_code
        )
        self.device = hf.pick_device(device)
        self.model = hf.load_model(
            self.path,
            "AutoModelForImageTextToText",
            device=self.device,
            dtype=hf.torch_dtype(dtype, self.device),
            trust_remote_code=trust_remote_code,
        )
        tok = self.processor.tokenizer
        ids = []
        for t in tokens:
            tid = tok.convert_tokens_to_ids(t)
            if tid is None or tid == tok.unk_token_id:
                raise SpecError(f"the tokenizer has no {t!r} token; pass tokens=(false_token, true_token)")
            ids.append(int(tid))
        self.false_id, self.true_id = ids
        self.prompt = prompt
        self._torch = torch

    def messages(self, query: str, doc: Document) -> list[dict[str, Any]]:
        """The chat messages for one (query, document): image, the document's text if any, the instruction."""
        content: list[dict[str, Any]] = [{"type": "image"}] if has_image(doc) else []
        if doc.text.strip():
            content.append({"type": "text", "text": doc.text})
        content.append({"type": "text", "text": self.prompt.format(query=query)})
        return [{"role": "user", "content": content}]

    def _score_one(self, query: str, doc: Document) -> float:
        text = self.processor.apply_chat_template(
            self.messages(query, doc), tokenize=False, add_generation_prompt=True
        )
        images = [load_image(doc.metadata["image"])] if has_image(doc) else None
        inputs = self.processor(text=[text], images=images, return_tensors="pt").to(self.device)
        with self._torch.inference_mode():
            logits = self.model(**inputs).logits[0, -1].float()
        return float(logits[self.true_id] - logits[self.false_id])

    def _score_many(self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False):
        _check_docs(docs_lists)
        return [np.array([self._score_one(q, d) for d in docs]) for q, docs in zip(queries, docs_lists)]


class VLMApiRanker(Ranker):
    """Pointwise VLM reranker over an OpenAI-compatible vision endpoint (async, one request per document).

    Spec: ``"vlm-api:<model>"`` or ``"vlm-api:<base_url>@<model>"``.

    Args:
        model: the server's model name. base_url, api_key, timeout, max_retries, concurrency: see
            :class:`~unirank.backends.openai_compat.OpenAICompatEngine`.
        tokens: ``(false_token, true_token)`` as the server spells them.
        top_logprobs: how many candidate tokens to ask for.

    A token missing from ``top_logprobs`` gets the smallest log-probability listed (an upper bound on its
    own); a server that returns no log-probabilities at all is an error, not a silent guess.

    >>> VLMApiRanker("Qwen/Qwen2-VL-2B-Instruct", base_url="http://127.0.0.1:8000/v1").engine.model
    'Qwen/Qwen2-VL-2B-Instruct'
    """

    score_kind = ScoreKind.LOGIT
    capabilities = Capabilities(pointwise=True, native_async=True)
    accepts_images = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        tokens: tuple[str, str] = ("False", "True"),
        prompt: str = VLM_PROMPT,
        top_logprobs: int = 20,
        name: str | None = None,
        **options: Any,
    ) -> None:
        from ..backends.openai_compat import OpenAICompatEngine

        super().__init__(name or f"vlm-api:{model}", calibrator=options.pop("calibrator", None))
        self.engine = OpenAICompatEngine(model, base_url=base_url, **options)
        self.tokens, self.prompt, self.top_logprobs = tuple(tokens), prompt, top_logprobs

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> VLMApiRanker:
        if not arg:
            raise SpecError("vlm-api needs a model: 'vlm-api:<model>' or 'vlm-api:<base_url>@<model>'")
        if "@" in arg and arg.split("@", 1)[0].startswith(("http://", "https://")):
            url, _, model = arg.partition("@")
            options.setdefault("base_url", url)
            arg = model
        return cls(arg, **options)

    def messages(self, query: str, doc: Document) -> list[dict[str, Any]]:
        """OpenAI chat messages: the image as a base64 data URL, the document's text, the instruction."""
        content: list[dict[str, Any]] = []
        if has_image(doc):
            content.append({"type": "image_url", "image_url": {"url": image_data_url(doc.metadata["image"])}})
        if doc.text.strip():
            content.append({"type": "text", "text": doc.text})
        content.append({"type": "text", "text": self.prompt.format(query=query)})
        return [{"role": "user", "content": content}]

    def _score_from(self, top: list[dict[str, float]]) -> float:
        from ..backends.openai_compat import ServerError

        if not top or not top[0]:
            raise ServerError(f"{self.engine.base_url} returned no top_logprobs; the VLM score needs them")
        first = top[0]
        floor = min(first.values())
        lp = [max((v for k, v in first.items() if k.strip() == t), default=floor) for t in self.tokens]
        return float(lp[1] - lp[0]) if all(math.isfinite(x) for x in lp) else float("nan")

    async def _ascore_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ):
        _check_docs(docs_lists)

        async def one(q: str, d: Document) -> float:
            out = await self.engine.achat(self.messages(q, d), max_tokens=1, top_logprobs=self.top_logprobs)
            return self._score_from(out.top_logprobs)

        flat = await asyncio.gather(*(one(q, d) for q, docs in zip(queries, docs_lists) for d in docs))
        out, start = [], 0
        for docs in docs_lists:
            out.append(np.array(flat[start : start + len(docs)], dtype=np.float64))
            start += len(docs)
        return out

    def _score_many(self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False):
        from ..backends.openai_compat import run_sync

        return run_sync(self._ascore_many(queries, docs_lists))  # type: ignore[no-any-return]
