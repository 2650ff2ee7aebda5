"""unirank.train.optim: Lion against a hand-written loop of the published update and against lion-pytorch;
build_optimizer / param_groups (no weight decay on biases and LayerNorm weights) and their errors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from unirank.errors import SpecError  # noqa: E402
from unirank.train.optim import Lion, build_optimizer, param_groups  # noqa: E402

P0 = [0.5, -1.25, 2.0, 0.0, -0.3, 1.7]
C = [1.0, 1.0, -2.0, 0.4, -0.3, 0.9]  # targets of the quadratic
W = [1.0, 0.5, 2.0, 3.0, 1.0, 0.25]  # its weights: loss = sum w (p - c)^2, grad = 2 w (p - c)


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


def hand_lion(steps: int, lr: float, betas: tuple[float, float], wd: float) -> list[float]:
    """Chen et al. 2023, Program 1, in plain Python floats."""
    b1, b2 = betas
    p, m = list(P0), [0.0] * len(P0)
    for _ in range(steps):
        g = [2 * w * (pi - c) for pi, c, w in zip(p, C, W)]
        p = [pi * (1 - lr * wd) for pi in p]  # decoupled weight decay
        p = [pi - lr * _sign(b1 * mi + (1 - b1) * gi) for pi, mi, gi in zip(p, m, g)]
        m = [b2 * mi + (1 - b2) * gi for mi, gi in zip(m, g)]
    return p


def run_torch(opt_cls, steps: int, **kwargs) -> list[float]:
    p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float64))
    opt = opt_cls([p], **kwargs)
    c, w = torch.tensor(C, dtype=torch.float64), torch.tensor(W, dtype=torch.float64)
    for _ in range(steps):
        opt.zero_grad()
        (w * (p - c) ** 2).sum().backward()
        opt.step()
    return p.detach().tolist()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.0},
        {"lr": 0.05, "betas": (0.95, 0.98), "weight_decay": 0.5},
    ],
)
def test_lion_matches_the_published_update(kwargs):
    got = run_torch(Lion, 5, **kwargs)
    want = hand_lion(5, kwargs["lr"], kwargs["betas"], kwargs["weight_decay"])
    assert got == pytest.approx(want, abs=1e-9)
    assert got != pytest.approx(P0, abs=1e-3)  # it did move


def test_lion_matches_lion_pytorch():
    lion_pytorch = pytest.importorskip(
        "lion_pytorch", reason="lion-pytorch is not installed (dev-only oracle)"
    )
    kwargs = {"lr": 0.03, "betas": (0.9, 0.99), "weight_decay": 0.2}
    assert run_torch(Lion, 5, **kwargs) == pytest.approx(run_torch(lion_pytorch.Lion, 5, **kwargs), abs=1e-12)


def test_lion_defaults_and_closure():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = Lion([p])
    assert opt.defaults == {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0}

    def closure():
        opt.zero_grad()
        loss = ((p - torch.tensor([1.0, -1.0, 0.0])) ** 2).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure).detach()) == pytest.approx(2.0)
    assert p.detach().tolist() == pytest.approx([1e-4, -1e-4, 0.0])  # sign(0) = 0: no move


def test_lion_state_dict_resumes_identically():
    def fresh():
        p = torch.nn.Parameter(torch.tensor(P0))
        return p, Lion([p], lr=0.01, weight_decay=0.1)

    def step(p, opt):
        opt.zero_grad()
        (torch.tensor(W) * (p - torch.tensor(C)) ** 2).sum().backward()
        opt.step()

    p, opt = fresh()
    for _ in range(3):
        step(p, opt)
    q, opt2 = fresh()
    with torch.no_grad():
        q.copy_(p)
    opt2.load_state_dict(opt.state_dict())
    step(p, opt)
    step(q, opt2)
    assert torch.equal(p, q)


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=1,
    )
    return transformers.BertForSequenceClassification(cfg)


def test_param_groups_exclude_biases_and_layernorm():
    model = _tiny_bert()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # frozen: left out
    decay, plain = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert plain_names == {n for n, _ in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n}
    assert "bert.embeddings.word_embeddings.weight" not in decay_names | plain_names
    assert "classifier.weight" in decay_names and "bert.embeddings.position_embeddings.weight" in decay_names
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in decay_names)
    assert len(decay_names) + len(plain_names) == sum(1 for p in model.parameters() if p.requires_grad)


def test_build_optimizer_adamw_and_lion():
    model = _tiny_bert()
    adamw = build_optimizer(model, {"name": "adamw", "lr": 3e-5, "weight_decay": 0.05, "betas": [0.9, 0.98]})
    assert type(adamw) is torch.optim.AdamW
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    assert adamw.param_groups[0]["lr"] == 3e-5 and adamw.param_groups[0]["betas"] == (0.9, 0.98)
    assert adamw.param_groups[0]["eps"] == 1e-8
    lion = build_optimizer(model.parameters(), {"name": "lion"})
    assert isinstance(lion, Lion) and len(lion.param_groups) == 1
    assert lion.defaults == {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0}
    groups = param_groups(model, 0.3)
    lion = build_optimizer(groups, {"name": "lion", "lr": 1e-5, "weight_decay": 0.3})
    assert [g["weight_decay"] for g in lion.param_groups] == [0.3, 0.0]
    # one step moves every trainable parameter that has a gradient by exactly lr per coordinate (wd aside)
    x = torch.randint(0, 50, (2, 5))
    model(input_ids=x).logits.sum().backward()
    before = model.classifier.bias.detach().clone()
    lion.step()
    assert float((model.classifier.bias - before).detach().abs().max()) == pytest.approx(1e-5, rel=1e-3)
    assert math.isfinite(float(model.classifier.weight.detach().sum()))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "sgd"}, "choose one of: adamw, lion"),
        ({"lr": 1e-5}, "unknown optimizer None"),
        ({"name": "lion", "eps": 1e-8}, "allowed: lr, weight_decay, betas"),
        ({"name": "adamw", "lr": 0}, "lr must be a positive"),
        ({"name": "adamw", "lr": "3e-5"}, "lr must be a positive"),
        ({"name": "lion", "weight_decay": -0.1}, "weight_decay"),
        ({"name": "lion", "betas": [0.9]}, "betas"),
        ({"name": "adamw", "betas": [0.9, 1.0]}, "betas"),
        ({"name": "adamw", "eps": 0}, "eps"),
        ("adamw", "mapping"),
    ],
)
def test_build_optimizer_bad_specs(spec, match):
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(SpecError, match=match):
        build_optimizer([p], spec)


def test_lion_rejects_bad_hyperparameters():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(SpecError, match="betas"):
        Lion([p], betas=(0.9, 1.5))
