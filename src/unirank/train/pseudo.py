"""Pseudo queries for training without judgments: ICT sentences or salient keywords of corpus passages.

``pseudo:`` source keys (besides the common ones of :mod:`unirank.train.data`)::

    pseudo: ict                  # ict | keywords
    corpus: trec-dl-2020         # bundled dataset name, BEIR folder, corpus.jsonl[.gz] / corpus.tsv, irds:ID
    n: 4000                      # pseudo queries to generate
    depth: 30                    # BM25 negatives mined per query from the same corpus (default 30)
    keep_sentence: 0.1           # ict: probability that the query sentence stays in its passage
    min_words: 4                 # ict: shortest sentence (in words) used as a query
    words: [3, 6]                # keywords: query length range, drawn per query
    exclude_corpus_of: [trec-dl-2019]   # refuse that corpus, and drop passages whose text it holds

- ``ict`` (Inverse Cloze Task, Lee et al., ACL 2019): a sentence of a passage (one with 2 or more sentences)
  is the query; with probability ``keep_sentence`` the passage keeps it, else it is removed from the
  positive. Passages are visited in a seeded order, one new sentence per passage per round, until ``n``.
- ``keywords``: ``k`` (drawn from ``words``) distinct non-stopword words of the passage with the highest
  tf x idf (idf over the corpus), in passage order; the positive is the passage unchanged.

Negatives: BM25 over the corpus (one index), top ``depth`` for the query, the source passage (and any passage
with the same text) removed. The positive is document 0 of each pool, labels 1 / 0.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ._data_spec import Pool, check_keys, fold_text, get_choice, get_float, get_int, get_names

__all__ = ["PSEUDO_KINDS", "ict_queries", "keyword_queries", "split_sentences"]

logger = logging.getLogger(__name__)

PSEUDO_KINDS = ("ict", "keywords")
PSEUDO_KEYS = ("pseudo", "corpus", "n", "depth", "keep_sentence", "min_words", "words", "exclude_corpus_of")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[a-z][a-z0-9]+")
_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz", "corpus.tsv", "corpus.tsv.gz")

#: (source doc id, pseudo query id, query, positive text)
PseudoQuery = tuple[str, str, str, str]


def split_sentences(text: str) -> list[str]:
    """Sentences: split after ``.``, ``!`` or ``?`` followed by space and a capital, digit or quote.

    >>> split_sentences("Rain falls. It is wet! Is it 3.5 cm? Yes.")
    ['Rain falls.', 'It is wet!', 'Is it 3.5 cm?', 'Yes.']
    """
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def ict_queries(
    corpus: Mapping[str, Any], n: int, rng: random.Random, keep_sentence: float = 0.1, min_words: int = 4
) -> list[PseudoQuery]:
    """Inverse Cloze Task queries (see the module docstring); ``corpus`` maps id -> Document (or text).

    >>> text = "Rain falls from clouds. Clouds hold water vapour."
    >>> qs = ict_queries({"d1": text}, 1, random.Random(0), keep_sentence=0.0)
    >>> qs[0][2] in text, qs[0][2] in qs[0][3]
    (True, False)
    """
    eligible: dict[str, tuple[str, list[str], list[int]]] = {}
    for did, doc in corpus.items():
        text = getattr(doc, "text", doc)
        sents = split_sentences(text)
        usable = [i for i, s in enumerate(sents) if len(s.split()) >= min_words]
        if len(sents) >= 2 and usable:
            eligible[did] = (text, sents, usable)
    order = list(eligible)
    rng.shuffle(order)
    used: dict[str, set[int]] = {d: set() for d in order}
    out: list[PseudoQuery] = []
    while len(out) < n:
        before = len(out)
        for did in order:
            if len(out) >= n:
                break
            text, sents, usable = eligible[did]
            free = [i for i in usable if i not in used[did]]
            if not free:
                continue
            i = rng.choice(free)
            used[did].add(i)
            keep = rng.random() < keep_sentence
            positive = text if keep else " ".join(sents[:i] + sents[i + 1 :])
            out.append((did, f"ict:{did}:{i}", sents[i], positive))
        if len(out) == before:
            break
    if len(out) < n:
        logger.warning("ict: only %d of %d queries: the corpus has no more usable sentences", len(out), n)
    return out


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def keyword_queries(
    corpus: Mapping[str, Any], n: int, rng: random.Random, words: tuple[int, int] = (3, 6)
) -> list[PseudoQuery]:
    """Keyword queries (see the module docstring), one per passage, passages in a seeded order."""
    from ..errors import require

    stop = frozenset(require("bm25s", "bm25").stopwords.STOPWORDS_EN_PLUS)
    tokens = {did: [w for w in _words(getattr(d, "text", d)) if w not in stop] for did, d in corpus.items()}
    df: Counter[str] = Counter()
    for toks in tokens.values():
        df.update(set(toks))
    total = len(tokens)
    order = list(tokens)
    rng.shuffle(order)
    out: list[PseudoQuery] = []
    for did in order:
        if len(out) >= n:
            break
        toks = tokens[did]
        tf = Counter(toks)
        if len(tf) < words[0]:
            continue
        k = rng.randint(*words)
        first = {}
        for pos, w in enumerate(toks):
            first.setdefault(w, pos)
        idf = {w: math.log1p((total - df[w] + 0.5) / (df[w] + 0.5)) for w in tf}
        best = sorted(tf, key=lambda w: (-tf[w] * idf[w], first[w]))[:k]
        query = " ".join(sorted(best, key=first.__getitem__))
        out.append((did, f"keywords:{did}", query, getattr(corpus[did], "text", corpus[did])))
    if len(out) < n:
        logger.warning(
            "keywords: only %d of %d queries: one per passage with %d+ words", len(out), n, words[0]
        )
    return out


def load_corpus(where: str, name: str, ctx: Any) -> tuple[str, dict[str, Any]]:
    """(key, {id: Document}) for a bundled name, a BEIR folder, a corpus file or an ``irds:`` id."""
    from ..eval.datasets import dataset_folder
    from ..eval.io import read_corpus

    if name.strip().lower().startswith("irds:"):
        return name.strip().lower(), ctx.dataset(name).corpus
    try:
        folder: Any = dataset_folder(name)
    except ValueError:
        folder = Path(name) if Path(name).is_dir() else None
    if folder is not None:
        file = next((folder / f for f in _CORPUS_FILES if (folder / f).is_file()), None)
        if file is None:
            raise SpecError(f"{where}: {name}: no corpus file ({', '.join(_CORPUS_FILES)}) in {folder}")
    elif Path(name).is_file():
        file = Path(name)
    else:
        raise SpecError(f"{where}: corpus {name!r} is not a bundled dataset, a folder or a corpus file")
    key = str(Path(str(file)).resolve())
    cache = ctx.cache if ctx.cache is not None else {}
    if f"corpus:{key}" not in cache:
        cache[f"corpus:{key}"] = read_corpus(file)
    return key, cache[f"corpus:{key}"]


def pseudo_pools(src: Mapping[str, Any], ctx: Any, common: Sequence[str]) -> list[Pool]:
    """The pools of a ``pseudo:`` source: pseudo queries, their positive and BM25-mined negatives."""
    from ._data_dataset import bm25_index

    where = ctx.where
    check_keys(where, src, (*PSEUDO_KEYS, *common))
    kind = get_choice(where, src, "pseudo", "ict", PSEUDO_KINDS)
    if "corpus" not in src:
        raise SpecError(f"{where}: give `corpus:` (a bundled dataset name, a BEIR folder or a corpus file)")
    n = get_int(where, src, "n", None)
    depth = get_int(where, src, "depth", 30)
    key, corpus = load_corpus(where, str(src["corpus"]), ctx)
    excluded = ctx.exclude_corpus_of + get_names(f"{where}.exclude_corpus_of", src.get("exclude_corpus_of"))
    corpus = _without_corpora(where, key, corpus, excluded, ctx)
    if kind == "ict":
        keep = get_float(where, src, "keep_sentence", 0.1, 0.0, 1.0)
        queries = ict_queries(corpus, n, ctx.rng, keep, get_int(where, src, "min_words", 4))
    else:
        queries = keyword_queries(corpus, n, ctx.rng, _word_range(where, src.get("words", [3, 6])))
    index = bm25_index(ctx, f"{key}:{','.join(sorted(excluded))}", corpus)
    k = min(depth + 6, len(index))  # slack for the source passage and copies of it
    results = index.retrieve_many([q for _, _, q, _ in queries], k=k, show_progress=ctx.show_progress)
    pools = []
    for (did, qid, query, positive), res in zip(queries, results):
        source = fold_text(getattr(corpus[did], "text", ""))
        negs = [r for r in res.results if r.id != did and fold_text(r.text) != source][:depth]
        ids = [did, *(r.id for r in negs)]
        texts = [positive, *(r.text for r in negs)]
        pools.append(Pool(qid, query, ids, texts, [1.0] + [0.0] * len(negs), [0], len(ids)))
    logger.info("%s: %d %s queries from %d passages", where, len(pools), kind, len(corpus))
    return pools


def _word_range(where: str, value: Any) -> tuple[int, int]:
    ok = isinstance(value, Sequence) and len(value) == 2 and all(type(v) is int for v in value)
    if not ok or not 1 <= value[0] <= value[1]:
        raise SpecError(f"{where}.words: expected [min, max] word counts with 1 <= min <= max, got {value!r}")
    return int(value[0]), int(value[1])


def _without_corpora(
    where: str, key: str, corpus: dict[str, Any], names: list[str], ctx: Any
) -> dict[str, Any]:
    """Refuse a corpus named in ``exclude_corpus_of``; drop passages whose text an excluded corpus holds."""
    if not names:
        return corpus
    banned: set[str] = set()
    for name in names:
        other_key, other = load_corpus(f"{where}.exclude_corpus_of", name, ctx)
        if other_key == key:
            raise SpecError(
                f"{where}: corpus {key} is the corpus of {name!r}, named in exclude_corpus_of: pseudo "
                "queries are never generated from an evaluation corpus; choose another corpus"
            )
        banned.update(fold_text(getattr(d, "text", d)) for d in other.values())
    kept = {d: doc for d, doc in corpus.items() if fold_text(getattr(doc, "text", doc)) not in banned}
    logger.info(
        "%s: %d of %d passages dropped: their text is in %s",
        where,
        len(corpus) - len(kept),
        len(corpus),
        names,
    )
    if not kept:
        raise SpecError(f"{where}: every passage of the corpus is in {names}; nothing left to train on")
    return kept
