"""Evaluation: TREC / BEIR file IO, bundled datasets, trec_eval-exact metrics and re-ranking jobs.

Nothing heavy is imported here: ``ir_measures`` is imported when a metric is computed.

>>> from unirank.eval import available_datasets, format_table
>>> available_datasets()
['scifact', 'trec-dl-2019', 'trec-dl-2020']
"""

from __future__ import annotations

from .datasets import available_datasets, dataset_folder, load_dataset
from .io import (
    Dataset,
    Run,
    atomic_write,
    load_beir,
    read_corpus,
    read_qrels,
    read_queries,
    read_trec_run,
    results_to_run,
    run_to_candidates,
    write_qrels,
    write_trec_run,
)
from .job import PartialRunError, check_query_text, eval_header, eval_job, rerank_run
from .metrics import DEFAULT_METRICS, EvalResult, evaluate, format_table, parse_metric

__all__ = [
    "DEFAULT_METRICS",
    "Dataset",
    "EvalResult",
    "PartialRunError",
    "Run",
    "atomic_write",
    "available_datasets",
    "check_query_text",
    "dataset_folder",
    "eval_header",
    "eval_job",
    "evaluate",
    "format_table",
    "load_beir",
    "load_dataset",
    "parse_metric",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_trec_run",
    "rerank_run",
    "results_to_run",
    "run_to_candidates",
    "write_qrels",
    "write_trec_run",
]
