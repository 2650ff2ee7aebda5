"""Multimodal re-ranking: documents that are images (or image + text), scored by a vision-language model.

An image document is a :class:`~unirank.types.Document` whose ``metadata["image"]`` is a file path, raw bytes
or a PIL image; its ``text`` (may be empty) is shown to the model next to the image. Scoring is pointwise
yes/no, MonoQwen2-VL style: the model sees the image, then ``"Assert the relevance of the previous image
document to the following query, answer True or False. The query is: {query}"``, and the score is
``logit(True) - logit(False)`` for the next token (:attr:`ScoreKind.LOGIT`).

- :class:`VLMRanker`: local transformers (``AutoProcessor`` + ``AutoModelForImageTextToText``, e.g. Qwen2-VL).
  A PEFT LoRA adapter (MonoQwen2-VL is one, on Qwen2-VL-2B-Instruct) is merged into the base weights by
  :mod:`unirank.backends.lora`, so PEFT is not needed: give the adapter folder as the model (its
  ``adapter_config.json`` names the base model) or ``adapter=`` next to the base model.
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
import re
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


class _ImageTokenProcessor:
    """Qwen2-VL-style inputs without the processor class: transformers 5 builds ``Qwen2VLProcessor`` with a
    video processor that needs torchvision, so without it this uses the tokenizer (and its chat template),
    the image processor (PIL backend) and repeats the image token once per merged patch
    (``grid_t * grid_h * grid_w / merge_size**2``), as the processor does."""

    def __init__(self, path: Path, image_token_id: int, trust_remote_code: bool = False) -> None:
        from ..backends import hf

        _, transformers = hf.torch_modules()
        self._batch = transformers.BatchFeature
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=trust_remote_code
        )
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(
            str(path), trust_remote_code=trust_remote_code
        )
        self.merge = getattr(self.image_processor, "merge_size", None)
        if not isinstance(self.merge, int):
            raise SpecError(f"{path}: no processor could be built and the image processor has no merge_size")
        if not self.tokenizer.chat_template:
            jinja, js = path / "chat_template.jinja", hf.read_json(path / "chat_template.json")
            self.tokenizer.chat_template = (
                jinja.read_text("utf-8") if jinja.is_file() else js.get("chat_template")
            )
        self.image_token_id = image_token_id
        self.image_token = self.tokenizer.convert_ids_to_tokens(image_token_id)

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, text: list[str], images: list[Any] | None = None, return_tensors: str = "pt") -> Any:
        feats: dict[str, Any] = {}
        if images:
            feats = dict(self.image_processor(images=images, return_tensors=return_tensors))
            counts = iter([int(g.prod()) // self.merge**2 for g in feats["image_grid_thw"]])
            pad = re.compile(re.escape(self.image_token))
            text = [pad.sub(lambda _: self.image_token * next(counts), t) for t in text]
        enc = dict(self.tokenizer(text, return_tensors=return_tensors, padding=True))
        enc["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).long()
        return self._batch({**enc, **feats})


def _load_processor(path: Path, config: dict[str, Any], trust_remote_code: bool) -> Any:
    from ..backends import hf

    _, transformers = hf.torch_modules()
    try:
        return transformers.AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except ImportError as exc:
        if not isinstance(config.get("image_token_id"), int):
            raise
        logger.warning("%s: AutoProcessor failed (%s); using the tokenizer and image processor", path, exc)
        return _ImageTokenProcessor(path, config["image_token_id"], trust_remote_code)


class VLMRanker(Ranker):
    """Pointwise VLM reranker on local transformers (MonoQwen2-VL style True/False logits).

    Args:
        model_name_or_path: a vision-language checkpoint (``*ForConditionalGeneration`` with a processor),
            or a PEFT LoRA adapter folder / hub id whose ``adapter_config.json`` names the base model.
        adapter: a LoRA adapter (folder or hub id) to merge into ``model_name_or_path``'s weights.
        tokens: ``(false_token, true_token)``; default ``("False", "True")`` (MonoQwen2-VL).
        prompt: the instruction after the image, with ``{query}``.
        processor: where to load the processor from (default: the (base) model folder).
        device, dtype, trust_remote_code, revision: as for the other HF rankers.

    The MonoQwen2-VL adapter: its base model (Qwen/Qwen2-VL-2B-Instruct) with the LoRA merged in.

    >>> VLMRanker("lightonai/MonoQwen2-VL-v0.1")  # doctest: +SKIP
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
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        from ..backends import hf, lora

        super().__init__(name or f"vlm:{model_name_or_path}", calibrator=kwargs.pop("calibrator", None))
        if kwargs:
            raise TypeError(f"unknown option(s) for a VLM ranker: {sorted(kwargs)}")
        torch, _ = hf.torch_modules()
        self.path = hf.local_model_dir(model_name_or_path, revision=revision)
        self.adapter = hf.local_model_dir(adapter) if adapter else None
        if lora.is_adapter_dir(self.path):
            if self.adapter is not None:
                raise TypeError(f"{model_name_or_path} is itself a LoRA adapter; do not pass adapter= too")
            base = lora.read_adapter_config(self.path).get("base_model_name_or_path")
            if not base:
                raise SpecError(f"{self.path}: adapter_config.json names no base_model_name_or_path")
            self.adapter, self.path = self.path, hf.local_model_dir(base)
        elif self.adapter is not None and not lora.is_adapter_dir(self.adapter):
            raise SpecError(f"adapter={adapter!r} is not a PEFT adapter folder (no adapter_config.json)")
        config = hf.read_json(self.path / "config.json")
        archs = [str(a) for a in config.get("architectures") or []]
        if "vision_config" not in config or not any(a.endswith("ForConditionalGeneration") for a in archs):
            raise SpecError(
                f"{model_name_or_path}: a VLM ranker expects a vision-language checkpoint (a vision_config "
                "and a *ForConditionalGeneration head, e.g. Qwen2VLForConditionalGeneration); "
                f"got architectures={archs}"
            )
        proc_path = hf.local_model_dir(processor) if processor else self.path
        self.processor = _load_processor(proc_path, config, trust_remote_code)
        self.device = hf.pick_device(device)
        self.model = hf.load_model(
            self.path,
            "AutoModelForImageTextToText",
            device=self.device,
            dtype=hf.torch_dtype(dtype, self.device),
            trust_remote_code=trust_remote_code,
        )
        if self.adapter is not None:
            lora.merge_lora(self.model, self.adapter)
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
    own); with neither token listed the document scores NaN, with a warning; a server that returns no
    log-probabilities at all is an error, not a silent guess.

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
        if not any(k.strip() == t for k in first for t in self.tokens):
            # neither token listed (a reasoning model's "<think>", another casing): the floor for both
            # would score every document 0
            logger.warning(
                "%s: the server's top_logprobs name neither of %s (got %s); the document is scored NaN",
                self.name,
                list(self.tokens),
                sorted(first, key=lambda t: -first[t])[:5],
            )
            return float("nan")
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
