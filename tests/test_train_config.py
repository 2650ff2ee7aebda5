"""Training config validation: typed errors that name the key and what it accepts, raised before any model
loads (the model path in these configs does not exist: reaching the model would be a different error)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from unirank.errors import MissingExtraError, SpecError

pytest.importorskip("yaml")

NO_MODEL = "./no-such-model-folder"


def _base(**over):
    cfg = {"model": NO_MODEL, "data": {"train": [{"triples": "t.jsonl"}]}}
    cfg.update(over)
    return cfg


def test_defaults_and_overrides():
    from unirank.train import load_config

    cfg = load_config(_base(), overrides=["optimizer.lr=1e-4", "schedule.name=cosine", "max_steps=5"])
    assert cfg.optimizer == {"name": "adamw", "lr": 1e-4}
    assert cfg.schedule == {"name": "cosine", "warmup_ratio": 0.1}
    assert load_config(
        _base(loss="kl", data={"teacher": "bm25", "train": [{"triples": "t"}]}),
        overrides=["loss.temperature=2"],
    ).loss == {"name": "kl", "temperature": 2}
    assert (cfg.max_steps, cfg.save_steps, cfg.precision, cfg.seed) == (5, 100, "auto", 13)
    assert load_config(_base()).digest() == load_config(_base()).digest() != cfg.digest()


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (_base(learning_rate=1e-5), r"unknown config key\(s\) \['learning_rate'\]; allowed: model, data"),
        ({"model": NO_MODEL}, r"data: missing; give data.train"),
        ({"model": NO_MODEL, "data": {"group_size": 4}}, r"data.train: missing"),
        ({"data": {"train": [{"triples": "t.jsonl"}]}}, r"^model: name the model"),
        (_base(loss="listnet"), r"listnet.*bce.*rank_distill"),
        (_base(loss="kl"), r"loss 'kl' distils from a teacher, but data.teacher is not set"),
        (_base(precision="fp8"), r"precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
        (_base(optimizer={"name": "sgd"}), r"optimizer.name: 'sgd' is not one of adamw, lion"),
        (_base(schedule={"name": "step"}), r"schedule.name: 'step' is not one of linear, cosine, constant"),
        (_base(batch_size=0), r"batch_size: expected an integer >= 1"),
        (_base(early_stopping={"patience": 2}), r"early_stopping needs a dev"),
        (_base(dev={"dataset": "trec-dl-2019", "metric": "ndcg@ten"}), r"dev.metric: unknown metric"),
        (
            _base(dev={"dataset": "trec-dl-2019", "depth": 10, "limit": 3}),
            r"dev: unknown key\(s\) \['limit'\]",
        ),
        (_base(dev={"dataset": "trec-dl-2019"}, eval_steps=30, save_steps=50), r"multiple of eval_steps"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(cfg, match, tmp_path):
    from unirank.train import train

    with pytest.raises(SpecError, match=match):
        train(cfg, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_a_teacher_loss_with_a_teacher_passes_validation():
    from unirank.train import load_config

    cfg = load_config(
        _base(
            loss={"name": "kl", "temperature": 2.0},
            data={"teacher": "bm25", "train": [{"triples": "t.jsonl"}]},
        )
    )
    assert cfg.loss_name == "kl"


def test_bad_optimizer_option_and_fp16_on_cpu_fail_before_the_model_loads(tmp_path):
    import json

    import torch

    from unirank.train import train

    with pytest.raises(SpecError, match=r"unknown option\(s\) \['momentum'\]"):
        train(_base(optimizer={"name": "adamw", "momentum": 0.9}), tmp_path / "a", show_progress=False)
    if torch.cuda.is_available():  # pragma: no cover - CPU CI
        pytest.skip("fp16 is allowed on CUDA")
    triples = tmp_path / "t.jsonl"
    triples.write_text(json.dumps({"query": "q", "positive": "p", "negative": "n"}) + "\n")
    cfg = _base(precision="fp16", data={"group_size": 2, "train": [{"triples": str(triples)}]})
    with pytest.raises(SpecError, match="fp16 needs a CUDA GPU"):
        train(cfg, tmp_path / "b", show_progress=False)


def test_dev_queries_shared_with_training_are_refused(tmp_path):
    """A dev query whose text (case and spacing aside) is a training query: the dev metric would measure
    memorisation."""
    import json

    from unirank.eval import load_dataset
    from unirank.train import train

    ds = load_dataset("trec-dl-2019")
    qid = sorted(ds.qrels)[0]
    triples = tmp_path / "t.jsonl"
    rows = [
        {"query": "an unrelated question", "positive": "p", "negative": "n"},
        {"query": "  " + ds.queries[qid].upper() + " ", "positive": "p", "negative": "n"},
    ]
    triples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _base(
        data={"group_size": 2, "train": [{"triples": str(triples)}]},
        dev={"dataset": "trec-dl-2019", "depth": 10},
    )
    with pytest.raises(SpecError, match=r"1 of the 43 dev queries are also training queries"):
        train(cfg, tmp_path / "out", show_progress=False)


def test_yaml_file_and_cli_errors(tmp_path, capsys):
    from unirank.cli import main

    config = tmp_path / "train.yaml"
    config.write_text("model: ./nowhere\ndata:\n  train:\n    - triples: t.jsonl\nloss: kl\n")
    assert main(["train", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "loss 'kl' distils from a teacher" in capsys.readouterr().err
    assert (
        main(["train", str(config), "--out", str(tmp_path / "o"), "--set", "loss=bce", "--set", "nope=1"])
        == 2
    )
    assert "unknown config key(s) ['nope']" in capsys.readouterr().err
    config.write_text("model: ./nowhere\ndata: {train: [{triples: t.jsonl}]}\noptimizer: {lr: 1e-4}\n")
    from unirank.train import load_config

    assert load_config(config).optimizer["lr"] == 1e-4  # YAML 1.1 reads 1e-4 as a string
    config.write_text("model: [unclosed\n")
    assert main(["train", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_missing_extra_names_the_install(monkeypatch, tmp_path):
    from unirank.train import train

    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'unirank\[train\]'"):
        train(str(tmp_path / "train.yaml"), tmp_path / "out")


def test_docs_config_reference_covers_every_key_and_its_example_validates():
    """docs/training.md: the reference table names every top-level key with its default, and the example
    YAML passes validation."""
    import re
    from pathlib import Path

    import yaml

    from unirank.train import load_config
    from unirank.train.config import DEFAULTS, TOP_LEVEL_KEYS

    page = (Path(__file__).parent.parent / "docs" / "training.md").read_text(encoding="utf-8")
    reference = page.split("## Config reference")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", reference, flags=re.M))
    assert set(rows) == set(TOP_LEVEL_KEYS)
    for key, default in DEFAULTS.items():
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and key != "epochs":
            assert rows[key].strip() == f"`{default}`", key
    example = re.search(r"```yaml\n(.*?)```", reference, flags=re.S).group(1)
    cfg = load_config(yaml.safe_load(example))
    assert cfg.loss == {"name": "kl", "temperature": 1.0} and cfg.dev["queries"] == {
        "limit": 20,
        "exclude": [],
    }


@pytest.mark.parametrize("name", ["train_cross_encoder.yaml", "train_cross_encoder_gpu.yaml"])
def test_shipped_example_configs_validate(name):
    """The example configs in ``examples/`` load and validate (every key known, the loss's needs met by a
    teacher), and never train on the DL 2019 evaluation set."""
    from unirank.train.config import load_config

    path = Path(__file__).resolve().parents[1] / "examples" / name
    cfg = load_config(path)
    assert cfg.data["exclude_queries_of"] == ["trec-dl-2019"]
    assert cfg.dev is not None
