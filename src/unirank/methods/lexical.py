"""BM25 on `bm25s <https://github.com/xhluca/bm25s>`_: a candidate re-ranker and a first-stage retriever.

Where the statistics come from decides what a BM25 score means. :class:`BM25Ranker` takes document
frequencies and the average length either from the candidate list of each query (the default, no corpus
needed) or from a corpus you indexed, in which case its scores equal first-stage BM25 exactly.
:class:`BM25Retriever` indexes a corpus with bm25s and retrieves top-k, saving and loading with bm25s's own
(pickle-free) format.

Variants follow Kamphuis et al. (ECIR 2020) as bm25s implements them; ``"lucene"`` (default) sums over query
tokens ``ln(1 + (N - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl))``.
Text analysis: lower-case, tokens of two or more word characters, stopwords removed, then Snowball stemming.

Fields: ``fields="flat"`` (default) scores the text as one field; ``fields="multi"`` scores title and body as
two fields with their own statistics, summing ``field_weights``-boosted per-field BM25 (a Lucene multi-field
query, as in BEIR's published BM25 figures); see :mod:`unirank.methods._bm25_fields`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Capabilities, Ranker
from ..errors import SpecError, require
from ..normalize import PlattCalibrator
from ..text import whitespace_slices
from ..types import DocLike, Document, RankedResults, Result, ScoreKind, check_query, to_documents
from . import _bm25_fields as _bf

__all__ = ["METHODS", "BM25Ranker", "BM25Retriever"]

logger = logging.getLogger(__name__)

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
_ALIASES = {"bm25plus": "bm25+", "bm25p": "bm25+", "bm25-plus": "bm25+"}
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn / bm25s token pattern
_META_FILE = "unirank_bm25.json"
_FORMAT_VERSION = 1  # flat: bm25s files in the folder itself
_MULTI_FORMAT_VERSION = 2  # multi: one bm25s sub-folder per field, the documents saved with the first


def _check_method(method: str) -> str:
    m = _ALIASES.get(str(method).strip().lower(), str(method).strip().lower())
    if m not in METHODS:
        raise ValueError(f"unknown BM25 method {method!r}; expected one of {METHODS}")
    return m


class _Analyzer:
    """Lower-case, split, drop stopwords, stem (the same pipeline as ``bm25s.tokenize``)."""

    def __init__(self, stemmer: str | None, stopwords: str | Sequence[str] | None) -> None:
        self._stop = frozenset(_stopword_list(stopwords))
        self._stem: Callable[[list[str]], list[str]] | None = None
        if stemmer:
            mod = require("Stemmer", "bm25", package="PyStemmer")
            if stemmer not in mod.algorithms():
                raise ValueError(f"unknown stemmer language {stemmer!r}; available: {mod.algorithms()}")
            self._stem = mod.Stemmer(stemmer).stemWords

    def __call__(self, text: str) -> list[str]:
        words: list[str] = []
        for piece in whitespace_slices(text):
            found = [w for w in _TOKEN_RE.findall(piece.lower()) if w not in self._stop]
            words.extend(self._stem(found) if self._stem is not None and found else found)
        return words


def _counts(words: list[str], step: int = 1 << 16) -> Counter[str]:
    """``Counter(words)`` in steps (one ``Counter`` call over a million words holds the GIL ~0.2 s)."""
    c: Counter[str] = Counter()
    for i in range(0, len(words), step):
        c.update(words[i : i + step])
    return c


def _stopword_list(stopwords: str | Sequence[str] | None) -> list[str]:
    if not stopwords:
        return []
    if isinstance(stopwords, str):  # a language name or code that bm25s knows ("en", "german", ...)
        bm25s = require("bm25s", "bm25")
        return list(bm25s.tokenization.Tokenizer(stopwords=stopwords, stemmer=None).stopwords)
    return [str(w).lower() for w in stopwords]


def _idf(method: str, df: np.ndarray, n: int) -> np.ndarray:
    df = np.asarray(df, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "lucene":
            v = np.log1p((n - df + 0.5) / (df + 0.5))
        elif method == "robertson":  # clipped at 0, as bm25s does
            v = np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1.0))
        elif method == "atire":
            v = np.log(n / df)
        elif method == "bm25l":
            v = np.log((n + 1) / (df + 0.5))
        else:  # bm25+
            v = np.log((n + 1) / df)
    return np.where(df > 0, v, 0.0)


def _tfc(method: str, tf: Any, dl: Any, avgdl: float, k1: float, b: float, delta: float) -> Any:
    norm = 1.0 - b + b * dl / avgdl
    if method in ("lucene", "robertson"):
        return tf / (k1 * norm + tf)
    if method == "atire":
        return tf * (k1 + 1.0) / (tf + k1 * norm)
    if method == "bm25l":
        c = tf / norm
        return (k1 + 1.0) * (c + delta) / (k1 + c + delta)
    return (k1 + 1.0) * tf / (k1 * norm + tf) + delta  # bm25+


def _bm25(
    tf: np.ndarray, dl: np.ndarray, df: np.ndarray, qtf: np.ndarray, n: int, avgdl: float, p: dict[str, Any]
) -> np.ndarray:
    """Scores of ``len(dl)`` documents; ``tf`` is (docs x query terms), ``qtf`` query-term multiplicities."""
    if tf.shape[1] == 0 or avgdl <= 0 or n <= 0:
        return np.zeros(tf.shape[0])
    m, k1, b, delta = p["method"], p["k1"], p["b"], p["delta"]
    with np.errstate(divide="ignore", invalid="ignore"):
        hit = _tfc(m, tf, dl[:, None], avgdl, k1, b, delta)
        miss = _tfc(m, 0.0, avgdl, avgdl, k1, b, delta)  # BM25L / BM25+ score absent terms too
        contrib = np.where(tf > 0, hit, miss) * _idf(m, df, n)
    return np.nan_to_num(contrib, nan=0.0, posinf=0.0, neginf=0.0) @ qtf


def _corpus_documents(corpus: Mapping[str, DocLike] | Iterable[DocLike]) -> list[Document]:
    docs = to_documents(list(corpus.values() if isinstance(corpus, Mapping) else corpus))
    if isinstance(corpus, Mapping):  # the key is the id
        docs = [Document(d.text, str(i), d.metadata) for i, d in zip(corpus, docs)]
    if not docs:
        raise ValueError("the corpus is empty; BM25 needs at least one document to index")
    dups = [i for i, c in Counter(d.id for d in docs).items() if c > 1]
    if dups:
        raise ValueError(f"duplicate document ids in the corpus (ids must be unique): {dups[:5]}")
    return docs


def _progress(it: Iterable[Any], show: bool, total: int, desc: str) -> Iterable[Any]:
    if not show:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc)


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores; ties broken by corpus order (deterministic)."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        cand = np.flatnonzero(scores >= scores[part].min())
    else:
        cand = np.arange(len(scores))
    return cand[np.lexsort((cand, -scores[cand]))][:k]


class BM25Retriever:
    """First-stage BM25 over a corpus (a dict ``id -> document`` or a list of str / Document / dict).

    >>> r = BM25Retriever().index({"d1": "rain falls from clouds", "d2": "the sun is hot"})
    >>> r.retrieve("what causes rain", k=1).ids
    ['d1']
    """

    def __init__(
        self,
        method: str = "lucene",
        *,
        k1: float = 1.2,
        b: float = 0.75,
        delta: float = 0.5,
        stemmer: str | None = "english",
        stopwords: str | Sequence[str] | None = "en",
        dtype: str = "float32",
        fields: str = "flat",
        field_weights: Sequence[float] | None = None,
    ) -> None:
        self.method = _check_method(method)
        self.k1, self.b, self.delta = float(k1), float(b), float(delta)
        self.stemmer, self.stopwords, self.dtype = stemmer, stopwords, dtype
        self.fields, self.field_weights = _bf.check_fields(fields, field_weights)
        self._analyzer = _Analyzer(stemmer, stopwords)
        self._fields: list[_bf.FieldIndex] = []
        self._docs: list[Document] = []

    @property
    def options(self) -> dict[str, Any]:
        """Constructor options (what :meth:`save` records)."""
        sw = self.stopwords
        sw = sw if sw is None or isinstance(sw, str) else list(sw)
        params = {"method": self.method, "k1": self.k1, "b": self.b, "delta": self.delta}
        opts = {**params, "stemmer": self.stemmer, "stopwords": sw, "dtype": self.dtype}
        return {**opts, **_bf.fields_options(self)}

    @property
    def documents(self) -> list[Document]:
        return list(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    def index(
        self, corpus: Mapping[str, DocLike] | Iterable[DocLike], show_progress: bool = False
    ) -> BM25Retriever:
        """Tokenise and index ``corpus`` (replacing any earlier index); returns ``self``."""
        docs = _corpus_documents(corpus)
        texts = _progress(docs, show_progress, len(docs), "BM25 tokenise")
        per_doc = [[self._analyzer(t) for t in _bf.field_texts(d, self.fields)] for d in texts]
        params = {"method": self.method, "k1": self.k1, "b": self.b, "delta": self.delta}
        self._fields = [
            _bf.FieldIndex.build([toks[f] for toks in per_doc], params, self.dtype, show_progress)
            for f in range(len(per_doc[0]))
        ]
        self._docs = docs
        avgdl = ", ".join(f"{fi.avgdl:.1f}" for fi in self._fields)
        logger.info("indexed %d documents, fields=%s (avgdl %s)", len(docs), self.fields, avgdl)
        return self

    def _require_index(self) -> list[_bf.FieldIndex]:
        if not self._fields:
            raise RuntimeError("BM25Retriever has no index: call .index(corpus) or BM25Retriever.load(path)")
        return self._fields

    def retrieve(self, query: str, k: int = 100) -> RankedResults:
        """Top-``k`` documents for ``query``, best first (``k`` larger than the corpus is clipped)."""
        return self.retrieve_many([query], k=k)[0]

    def retrieve_many(
        self, queries: Sequence[str], k: int = 100, show_progress: bool = False
    ) -> list[RankedResults]:
        """Top-``k`` for each query. Zero-score documents fill the list when fewer than ``k`` match."""
        fields = self._require_index()
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings; use retrieve() for a single query")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        n = len(self._docs)
        if k > n:
            logger.warning("k=%d is larger than the corpus (%d documents); returning %d", k, n, n)
            k = n
        qs = [check_query(q) for q in queries]
        out = []
        weights = self.field_weights or (1.0,)
        for q in _progress(qs, show_progress, len(qs), "BM25 retrieve"):
            terms = self._analyzer(q)
            scores = np.zeros(n)
            for w, fi in zip(weights, fields):
                if w:
                    scores += w * fi.scores(terms, n)
            order = _topk(scores, k)
            results = [Result(self._docs[i], float(scores[i]), r + 1, int(i)) for r, i in enumerate(order)]
            out.append(RankedResults(q, results, ScoreKind.UNBOUNDED, "bm25"))
        return out

    def save(self, path: str | Path) -> None:
        """Write the index (bm25s's numpy + JSON files, no pickle), the documents and the options.

        Flat: the bm25s files in ``path``. Multi: one bm25s folder per field (``path/title``, ``path/body``).
        """
        path = Path(path)
        avgdl = _bf.save_indexes(path, self.fields, self._require_index(), [d.to_dict() for d in self._docs])
        fmt = _FORMAT_VERSION if self.fields == "flat" else _MULTI_FORMAT_VERSION
        meta = {"format": fmt, "options": self.options, "avgdl": avgdl, "n_docs": len(self)}
        (path / _META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BM25Retriever:
        """Load what :meth:`save` wrote."""
        path = Path(path)
        meta_path = path / _META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: {path} is not a saved unirank BM25 index")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") not in (_FORMAT_VERSION, _MULTI_FORMAT_VERSION):
            raise ValueError(f"unsupported BM25 index format {meta.get('format')!r} in {path}")
        self = cls(**meta["options"])
        self._fields, corpus = _bf.load_indexes(path, self.fields, meta["avgdl"])
        self._docs = [Document(d["text"], d.get("id"), dict(d.get("metadata") or {})) for d in corpus]
        if len(self._docs) != meta["n_docs"]:
            raise ValueError(f"{path}: {len(self._docs)} documents stored but the index has {meta['n_docs']}")
        return self

    def __repr__(self) -> str:
        f = _bf.fields_repr(self)
        return f"BM25Retriever(method={self.method!r}, k1={self.k1}, b={self.b}{f}, docs={len(self)})"


class BM25Ranker(Ranker):
    """BM25 re-ranking of given candidates.

    Without a corpus, document frequencies and average length come from each query's candidate list
    (scores then depend on the list, so they are not pointwise). With ``corpus=...`` (or :meth:`index`, or
    :meth:`from_retriever`) they come from the corpus, and scores equal first-stage BM25.

    >>> r = BM25Ranker()
    >>> r.rank("rain clouds", ["sunny day", "rain falls from clouds"]).ids
    ['1', '0']
    """

    score_kind = ScoreKind.UNBOUNDED

    def __init__(
        self,
        method: str = "lucene",
        *,
        k1: float = 1.2,
        b: float = 0.75,
        delta: float = 0.5,
        stemmer: str | None = "english",
        stopwords: str | Sequence[str] | None = "en",
        fields: str = "flat",
        field_weights: Sequence[float] | None = None,
        corpus: Mapping[str, DocLike] | Iterable[DocLike] | None = None,
        name: str = "bm25",
        calibrator: PlattCalibrator | None = None,
    ) -> None:
        super().__init__(name, calibrator=calibrator)
        self.method = _check_method(method)
        self.k1, self.b, self.delta = float(k1), float(b), float(delta)
        self.stemmer, self.stopwords = stemmer, stopwords
        self.fields, self.field_weights = _bf.check_fields(fields, field_weights)
        self._analyzer = _Analyzer(stemmer, stopwords)
        self.retriever: BM25Retriever | None = None
        self.capabilities = Capabilities(pointwise=False)
        if corpus is not None:
            self.index(corpus)

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> BM25Ranker:
        """``"bm25"`` (arg ``None``) or a variant: ``"bm25:lucene"``, ``"bm25:bm25+"``, ...

        >>> BM25Ranker.from_spec("bm25+").method
        'bm25+'
        """
        if arg is None or arg.strip().lower() in ("", "bm25"):
            return cls(**options)
        try:
            method = _check_method(arg)
        except ValueError as exc:
            raise SpecError(f"bm25:{arg}: {exc}") from None
        if "method" in options and _check_method(options["method"]) != method:
            raise SpecError(f"bm25:{arg} conflicts with method={options['method']!r}")
        options.pop("method", None)
        return cls(method, **options)

    @classmethod
    def from_retriever(cls, retriever: BM25Retriever, name: str = "bm25") -> BM25Ranker:
        """A ranker that scores with ``retriever``'s corpus statistics and settings."""
        retriever._require_index()
        opts = retriever.options
        opts.pop("dtype")
        self = cls(**opts, name=name)
        self.retriever = retriever
        self.capabilities = Capabilities(pointwise=True)
        return self

    def index(
        self, corpus: Mapping[str, DocLike] | Iterable[DocLike], show_progress: bool = False
    ) -> BM25Ranker:
        """Take IDF and average length from ``corpus`` from now on; returns ``self``."""
        opts = {"k1": self.k1, "b": self.b, "delta": self.delta, "stopwords": self.stopwords}
        retriever = BM25Retriever(self.method, stemmer=self.stemmer, **opts, **_bf.fields_options(self))
        self.retriever = retriever.index(corpus, show_progress=show_progress)
        self.capabilities = Capabilities(pointwise=True)
        return self

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        params = {"method": self.method, "k1": self.k1, "b": self.b, "delta": self.delta}
        cache: dict[str, Counter[str]] = {}  # one tokenisation per distinct text across all queries

        def counts(text: str) -> Counter[str]:
            c = cache.get(text)
            if c is None:
                c = cache[text] = _counts(self._analyzer(text))
            return c

        weights = self.field_weights or (1.0,)
        out = []
        for query, docs in _progress(zip(queries, docs_lists), show_progress, len(queries), self.name):
            qtf = Counter(self._analyzer(query))
            terms = list(qtf)
            qw = np.array([qtf[t] for t in terms], dtype=float)
            per_doc = [_bf.field_texts(d, self.fields) for d in docs]
            total = np.zeros(len(docs))
            for f, w in enumerate(weights):
                if not w:
                    continue
                cs = [counts(texts[f]) for texts in per_doc]
                dl = np.array([c.total() for c in cs], dtype=float)
                tf = np.array([[c.get(t, 0) for t in terms] for c in cs], dtype=float)
                tf = tf.reshape(len(cs), len(terms))
                if self.retriever is not None:
                    fi = self.retriever._require_index()[f]
                    df, n, avgdl = fi.doc_freqs(terms), len(self.retriever), fi.avgdl
                else:
                    df, n, avgdl = (tf > 0).sum(axis=0), len(docs), float(dl.mean())
                total += w * _bm25(tf, dl, df, qw, n, avgdl, params)
            out.append(total)
        return out

    def __repr__(self) -> str:
        stats = f"corpus of {len(self.retriever)}" if self.retriever is not None else "candidate lists"
        f = _bf.fields_repr(self)
        return f"BM25Ranker(method={self.method!r}, k1={self.k1}, b={self.b}{f}, idf from {stats})"
