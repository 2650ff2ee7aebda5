"""Late interaction (ColBERT / ColBERTv2): MaxSim between query and document token embeddings.

``score(q, d) = sum over query tokens i of max over document tokens j of <q_i, d_j>``, with every token
embedding projected by the checkpoint's linear layer and L2-normalised. Done the way ColBERT does it:

- a marker token after ``[CLS]``: ``[Q]`` for queries, ``[D]`` for documents (``"[Q] "``/``"[D] "`` in PyLate
  checkpoints, ``[unused0]``/``[unused1]`` in Stanford ones);
- **query augmentation**: queries are padded to ``query_length`` with ``[MASK]`` tokens, which are *not*
  attended to (unless the checkpoint says ``attend_to_expansion_tokens``) but whose output embeddings take
  part in MaxSim;
- documents are never padded into the score: padding positions are dropped per document (a batch-mate's
  length never changes a score), and so are punctuation tokens (the skiplist);
- optional pre-computed document embeddings: :meth:`ColBERTRanker.encode_documents` once, then pass
  ``doc_embeddings={doc_id: array}`` (or call :meth:`ColBERTRanker.add_documents`); only queries are
  encoded then.

Reads PyLate folders (``modules.json``: Transformer + ``1_Dense``; prefixes and lengths in
``config_sentence_transformers.json``) and Stanford ``HF_ColBERT`` folders (``linear.weight`` in the weights,
``artifact.metadata``).
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import hf
from ..base import Capabilities, Ranker
from ..batching import token_budget_batches
from ..errors import SpecError
from ..types import Document, ScoreKind

__all__ = ["ColBERTRanker", "maxsim"]

logger = logging.getLogger(__name__)


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Sum over query tokens of the best dot product with any document token.

    >>> maxsim(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.6, 0.8], [1.0, 0.0]]))
    1.8
    """
    if doc.shape[0] == 0:
        return float("nan")
    return float(np.round((query @ doc.T).max(axis=1).sum(), 12))


def _read_settings(path: Path) -> dict[str, Any]:
    st = hf.read_json(path / "config_sentence_transformers.json")
    meta = hf.read_json(path / "artifact.metadata")
    archs = hf.read_json(path / "config.json").get("architectures") or []
    stanford = "HF_ColBERT" in archs
    modules = hf.read_json(path / "modules.json").get("_") or []
    dense = [path / m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Dense")]
    transformer = next(
        (path / m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Transformer")), path
    )
    if not dense and not stanford:
        raise SpecError(
            f"{path} is not a ColBERT checkpoint: expected a PyLate folder (modules.json with a Dense layer) "
            f"or a Stanford HF_ColBERT checkpoint (architectures={archs})"
        )
    return {
        "transformer": transformer,
        "dense": dense[0] if dense else None,
        "query_prefix": st.get("query_prefix")
        or meta.get("query_token_id")
        or ("[unused0]" if stanford else "[Q] "),
        "document_prefix": st.get("document_prefix")
        or meta.get("doc_token_id")
        or ("[unused1]" if stanford else "[D] "),
        "query_length": st.get("query_length") or meta.get("query_maxlen") or 32,
        "document_length": st.get("document_length") or meta.get("doc_maxlen") or 180,
        "attend": bool(st.get("attend_to_expansion_tokens", meta.get("attend_to_mask_tokens", False))),
        "skiplist": st.get("skiplist_words") or list(string.punctuation),
    }


class ColBERTRanker(Ranker):
    """ColBERT MaxSim reranker.

    Args:
        model_name_or_path: a PyLate ColBERT folder / model id, or a Stanford ``HF_ColBERT`` checkpoint.
        query_length, document_length: override the checkpoint's token lengths (markers included).
        doc_embeddings: ``{doc_id: (n_tokens, dim) array}`` from :meth:`encode_documents`; documents whose id
            is found here are not encoded again (give documents your own ids: a plain string list gets the
            positional ids ``"0"``, ``"1"``, ...).
        batch_size, max_tokens_per_batch, device, dtype: as for the other HF rankers.

    >>> r = ColBERTRanker("lightonai/GTE-ModernColBERT-v1")  # doctest: +SKIP
    >>> r.rank("what causes rain", ["Rain is condensed vapour.", "Cats purr."]).ids  # doctest: +SKIP
    ['0', '1']
    """

    score_kind = ScoreKind.UNBOUNDED
    capabilities = Capabilities(pointwise=True)

    def __init__(
        self,
        model_name_or_path: str,
        *,
        query_length: int | None = None,
        document_length: int | None = None,
        doc_embeddings: Mapping[str, np.ndarray] | None = None,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name or f"colbert:{model_name_or_path}", calibrator=kwargs.pop("calibrator", None))
        if kwargs:
            raise TypeError(f"unknown option(s) for ColBERT: {sorted(kwargs)}")
        self.path = hf.local_model_dir(model_name_or_path, revision=revision)
        cfg = _read_settings(self.path)
        self.device = hf.pick_device(device)
        self.tokenizer = hf.load_tokenizer(cfg["transformer"], trust_remote_code=trust_remote_code)
        self.model = hf.load_model(
            cfg["transformer"],
            "AutoModel",
            device=self.device,
            dtype=hf.torch_dtype(dtype, self.device),
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
        self.linear = self._load_linear(cfg["dense"])
        self.query_length = int(query_length or cfg["query_length"])
        self.document_length = int(document_length or cfg["document_length"])
        self.attend_to_expansion = cfg["attend"]
        tok = self.tokenizer
        if tok.mask_token_id is None:
            raise SpecError(f"{model_name_or_path}: the tokenizer has no [MASK] token for query augmentation")
        self.query_prefix_id = self._prefix_id(cfg["query_prefix"])
        self.document_prefix_id = self._prefix_id(cfg["document_prefix"])
        self.skiplist = {tok.convert_tokens_to_ids(w) for w in cfg["skiplist"]} - {tok.unk_token_id}
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch or hf.default_token_budget(self.device)
        self.doc_store: dict[str, np.ndarray] = dict(doc_embeddings or {})
        self._store_text: dict[str, str] = {}  # texts of add_documents() entries, checked on use

    def _prefix_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise SpecError(f"the ColBERT marker token {token!r} is not in the tokenizer's vocabulary")
        return int(tid)

    def _load_linear(self, dense_dir: Path | None) -> Any:
        torch, _ = hf.torch_modules()
        from safetensors import safe_open

        files = [dense_dir / "model.safetensors"] if dense_dir else sorted(self.path.glob("*.safetensors"))
        for f in files:
            if not f.is_file():
                continue
            with safe_open(str(f), framework="pt") as fh:
                if "linear.weight" in fh.keys():
                    w = fh.get_tensor("linear.weight")
                    b = fh.get_tensor("linear.bias") if "linear.bias" in fh.keys() else None
                    break
        else:
            raise SpecError(
                f"{self.path}: no ColBERT projection ('linear.weight') found in {[str(f) for f in files]}"
            )
        if dense_dir is not None:
            act = str(hf.read_json(dense_dir / "config.json").get("activation_function", "Identity"))
            if not act.endswith("Identity"):
                raise SpecError(f"{dense_dir}: a ColBERT projection has no activation, got {act}")
        hidden = self.model.config.hidden_size
        if w.shape[1] != hidden:
            raise SpecError(f"linear.weight has shape {tuple(w.shape)}; expected (dim, {hidden})")
        layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        layer.load_state_dict({"weight": w, **({"bias": b} if b is not None else {})})
        return layer.to(self.device, dtype=next(self.model.parameters()).dtype).eval()

    # -- encoding -----------------------------------------------------------------------------------------
    def _features(self, texts: Sequence[str], is_query: bool) -> list[dict[str, list[int]]]:
        tok = self.tokenizer
        length = (self.query_length if is_query else self.document_length) - 1
        enc = tok([t.strip() for t in texts], truncation=True, max_length=length, padding=False)
        prefix = self.query_prefix_id if is_query else self.document_prefix_id
        feats = []
        for ids in enc["input_ids"]:
            ids = [ids[0], prefix, *ids[1:]]
            mask = [1] * len(ids)
            if (
                is_query
            ):  # augmentation: [MASK] up to query_length, not attended unless the checkpoint says so
                pad = self.query_length - len(ids)
                ids += [tok.mask_token_id] * pad
                mask += [1 if self.attend_to_expansion else 0] * pad
            feats.append({"input_ids": ids, "attention_mask": mask})
        return feats

    def _encode(self, texts: Sequence[str], is_query: bool) -> list[np.ndarray]:
        torch, _ = hf.torch_modules()
        feats = self._features(texts, is_query)
        out: list[np.ndarray | None] = [None] * len(feats)
        batches = token_budget_batches(
            [len(f["input_ids"]) for f in feats], self.max_tokens_per_batch, self.batch_size
        )
        with torch.inference_mode():
            for batch in batches:
                # always right-padded: rows keep their positions and ``emb[row, : len(ids)]`` is the row's
                # tokens whatever the tokenizer's padding side (left padding shifted both)
                rows = [feats[i] for i in batch]
                inputs = hf.collate(rows, self.tokenizer, self.device, padding_side="right")
                hidden = self.model(**inputs).last_hidden_state
                emb = torch.nn.functional.normalize(self.linear(hidden).float(), p=2, dim=-1).cpu().numpy()
                for row, i in enumerate(batch):
                    ids = feats[i]["input_ids"]
                    if is_query:  # every query token counts, [MASK] expansions included
                        keep = np.ones(len(ids), dtype=bool)
                    else:  # real tokens only: no padding, no punctuation
                        keep = np.array([t not in self.skiplist for t in ids], dtype=bool)
                    out[i] = emb[row, : len(ids)][keep]
        return out  # type: ignore[return-value]

    def encode_queries(self, queries: Sequence[str]) -> list[np.ndarray]:
        """Query token embeddings, ``(query_length, dim)`` each."""
        return self._encode(list(queries), True)

    def encode_documents(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Document token embeddings ``(n_tokens, dim)`` each: store them and pass ``doc_embeddings=``."""
        return self._encode(list(texts), False)

    def add_documents(self, docs: Sequence[Document]) -> None:
        """Encode documents once and keep their embeddings by id for later queries (used only while the
        document's text is unchanged)."""
        todo = [d for d in docs if d.id is not None]
        for d, e in zip(todo, self.encode_documents([d.text for d in todo])):
            self.doc_store[str(d.id)] = e
            self._store_text[str(d.id)] = d.text

    def _stored(self, doc: Document) -> np.ndarray | None:
        emb = self.doc_store.get(str(doc.id)) if doc.id is not None else None
        if emb is not None and self._store_text.get(str(doc.id), doc.text) != doc.text:
            return None
        return emb

    # -- scoring ------------------------------------------------------------------------------------------
    def _score_many(self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False):
        qemb = self.encode_queries(queries)
        missing = list(dict.fromkeys(d.text for docs in docs_lists for d in docs if self._stored(d) is None))
        fresh = dict(zip(missing, self.encode_documents(missing))) if missing else {}
        out = []
        for q, docs in zip(qemb, docs_lists):
            embs = [e if (e := self._stored(d)) is not None else fresh[d.text] for d in docs]
            out.append(np.array([maxsim(q, e.astype(np.float32)) for e in embs], dtype=np.float64))
        return out
