"""unirank.train.losses: each loss against a hand computation (plain ``math``), masking, gradients, ``needs``,
and sentence-transformers' cross-encoder losses as the oracle on a tiny CrossEncoder's logits."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from unirank.errors import SpecError  # noqa: E402
from unirank.train.losses import LOSS_NAMES, get_loss  # noqa: E402

S = [[1.5, -0.3, 0.8], [0.2, 1.1, -0.7]]  # student logits
Y = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # graded labels (0..2)
T = [[3.0, 0.5, 1.0], [-1.0, 2.0, 0.4]]  # teacher scores
T_TIE = [[3.0, 0.5, 0.5], [-1.0, 2.0, 2.0]]  # teacher with ties (rank_distill: tied docs form no pair)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _call(spec, scores=S, labels=Y, teacher=T, mask=None):
    s = torch.tensor(scores, requires_grad=True)
    m = torch.ones(s.shape, dtype=torch.bool) if mask is None else mask
    lab = None if labels is None else torch.tensor(labels)
    tea = None if teacher is None else torch.tensor(teacher)
    return get_loss(spec)(s, labels=lab, teacher=tea, mask=m), s


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _log_softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    lse = top + math.log(sum(math.exp(x - top) for x in xs))
    return [x - lse for x in xs]


# ---- hand computations -------------------------------------------------------------------------------


def hand_bce(label_max=2.0):
    terms = []
    for srow, yrow in zip(S, Y):
        for s, y in zip(srow, yrow):
            y = y / label_max
            terms.append(-(y * _logsig(s) + (1 - y) * _logsig(-s)))
    return sum(terms) / len(terms)


def hand_ranknet(better=Y, sigma=1.0, weighting="none", k=None):
    num = den = 0.0
    for srow, brow in zip(S, better):
        n = len(srow)
        rank = [1 + sum(brow[j] > brow[i] for j in range(n)) for i in range(n)]
        for i in range(n):
            for j in range(n):
                if brow[i] > brow[j] and (k is None or rank[i] <= k):
                    w = 1.0 if weighting == "none" else 1.0 / (rank[i] + rank[j])
                    num += w * -_logsig(sigma * (srow[i] - srow[j]))
                    den += w
    return num / den


def hand_margin_mse():
    terms = [((s[0] - s[j]) - (t[0] - t[j])) ** 2 for s, t in zip(S, T) for j in (1, 2)]
    return sum(terms) / len(terms)


def hand_softmax_ce(labels=Y, target="sum"):
    losses = []
    for srow, yrow in zip(S, labels):
        if target == "sum":
            if sum(yrow) == 0:
                continue
            p = [y / sum(yrow) for y in yrow]
        else:
            p = [math.exp(v) for v in _log_softmax(yrow)]
        losses.append(-sum(pi * lq for pi, lq in zip(p, _log_softmax(srow))))
    return sum(losses) / len(losses)


def hand_kl(temp=2.0):
    losses = []
    for srow, trow in zip(S, T):
        lp = _log_softmax([t / temp for t in trow])
        lq = _log_softmax([s / temp for s in srow])
        losses.append(sum(math.exp(a) * (a - b) for a, b in zip(lp, lq)))
    return temp * temp * sum(losses) / len(losses)


def hand_lambdaloss(weighting="ndcg_loss2pp", mu=10.0, k=None):
    def d(r):
        return math.log2(1 + r)

    total, pairs = 0.0, 0
    for srow, yrow in zip(S, Y):
        n = len(srow)
        kk = k or n
        order = sorted(range(n), key=lambda i: -srow[i])
        rank = {doc: pos + 1 for pos, doc in enumerate(order)}
        ideal = sorted(yrow, reverse=True)
        max_dcg = sum((2 ** ideal[r] - 1) / d(r + 1) for r in range(kk))
        g = [(2**y - 1) / max_dcg for y in yrow]
        for i in range(n):
            for j in range(n):
                if yrow[i] <= yrow[j] or (rank[i] > kk and rank[j] > kk):
                    continue
                gap = abs(rank[i] - rank[j])
                w2 = abs(g[i] - g[j]) * abs(1 / d(gap) - 1 / d(gap + 1))
                wl = abs(g[i] - g[j]) * abs(1 / d(rank[i]) - 1 / d(rank[j]))
                w = {"ndcg_loss2": w2, "lambdarank": wl, "ndcg_loss2pp": mu * w2 + wl}[weighting]
                total += -w * _logsig(srow[i] - srow[j])
                pairs += 1
    return total / pairs


HAND = [
    ({"name": "bce", "label_max": 2}, hand_bce, {}),
    ("ranknet", hand_ranknet, {}),
    ({"name": "ranknet", "sigma": 2.0}, lambda: hand_ranknet(sigma=2.0), {}),
    ("margin_mse", hand_margin_mse, {}),
    ("softmax_ce", hand_softmax_ce, {}),
    ({"name": "softmax_ce", "target": "softmax"}, lambda: hand_softmax_ce(target="softmax"), {}),
    (
        {"name": "softmax_ce"},
        lambda: hand_softmax_ce(labels=[[0, 0, 0], [0, 1, 2]]),
        {"labels": [[0, 0, 0], [0, 1, 2]]},
    ),
    ({"name": "kl", "temperature": 2.0}, hand_kl, {}),
    ({"name": "kl"}, lambda: hand_kl(1.0), {}),
    ("lambdaloss", hand_lambdaloss, {}),
    ({"name": "lambdaloss", "weighting": "ndcg_loss2"}, lambda: hand_lambdaloss("ndcg_loss2"), {}),
    ({"name": "lambdaloss", "weighting": "lambdarank"}, lambda: hand_lambdaloss("lambdarank"), {}),
    ({"name": "lambdaloss", "k": 1, "mu": 5.0}, lambda: hand_lambdaloss(mu=5.0, k=1), {}),
    ("rank_distill", lambda: hand_ranknet(better=T_TIE), {"teacher": T_TIE}),
    (
        {"name": "rank_distill", "weighting": "inverse_rank_sum"},
        lambda: hand_ranknet(better=T_TIE, weighting="inverse_rank_sum"),
        {"teacher": T_TIE},
    ),
    ({"name": "rank_distill", "k": 1}, lambda: hand_ranknet(better=T, k=1), {}),
]


@pytest.mark.parametrize(("spec", "hand", "inputs"), HAND, ids=[str(h[0]) for h in HAND])
def test_matches_hand_computation(spec, hand, inputs):
    value, _ = _call(spec, **inputs)
    assert value.dim() == 0
    assert float(value) == pytest.approx(hand(), abs=1e-6, rel=1e-6)


def test_every_name_is_covered_by_a_hand_computation():
    covered = {(h[0] if isinstance(h[0], str) else h[0]["name"]) for h in HAND}
    assert covered == set(LOSS_NAMES)


def test_rank_distill_ties_form_no_pair():
    # only the tie differs: a student that swaps the tied docs pays nothing more
    a, _ = _call("rank_distill", scores=[[1.0, 0.0, 5.0], [0.0, 1.0, 9.0]], teacher=T_TIE)
    b, _ = _call("rank_distill", scores=[[1.0, 5.0, 0.0], [0.0, 9.0, 1.0]], teacher=T_TIE)
    assert float(a) == pytest.approx(float(b), abs=1e-6)


# ---- masking, gradients, needs --------------------------------------------------------------------------

SPECS = [h[0] for h in HAND]


@pytest.mark.parametrize("spec", SPECS, ids=[str(s) for s in SPECS])
def test_padding_slots_never_change_the_value_or_get_gradient(spec):
    ref, s_ref = _call(spec)
    ref.backward()
    junk_s = [[50.0, -80.0], [float("nan"), 3.0]]
    junk_y = [[7.0, float("nan")], [-3.0, 2.0]]
    junk_t = [[float("inf"), 9.0], [float("nan"), -9.0]]
    mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    padded, s_pad = _call(
        spec,
        scores=[r + j for r, j in zip(S, junk_s)],
        labels=[r + j for r, j in zip(Y, junk_y)],
        teacher=[r + j for r, j in zip(T, junk_t)],
        mask=mask,
    )
    padded.backward()
    assert float(padded) == pytest.approx(float(ref), abs=1e-6)
    assert torch.allclose(s_pad.grad[:, :3], s_ref.grad, atol=1e-7)
    assert bool((s_pad.grad[:, 3:] == 0).all())


@pytest.mark.parametrize("spec", SPECS, ids=[str(s) for s in SPECS])
def test_padded_slot_of_a_shorter_group_is_ignored(spec):
    """Group 1 has 2 real docs of 3: what its third slot holds changes nothing."""
    mask = torch.tensor([[True, True, True], [True, True, False]])
    whole, _ = _call(spec, mask=mask)
    other, _ = _call(
        spec,
        scores=[S[0], [*S[1][:2], 99.0]],
        labels=[Y[0], [*Y[1][:2], 5.0]],
        teacher=[T[0], [*T[1][:2], -50.0]],
        mask=mask,
    )
    assert float(other) == pytest.approx(float(whole), abs=1e-6)
    full, _ = _call(spec)
    assert float(full) != pytest.approx(float(whole), abs=1e-6)  # the mask does drop a real slot


@pytest.mark.parametrize("spec", SPECS, ids=[str(s) for s in SPECS])
def test_gradient_finite_for_extreme_scores(spec):
    value, s = _call(spec, scores=[[-1e4, 1e4, -3e3], [1e4, -5e3, 0.0]])  # misordered: large gradients
    value.backward()
    assert math.isfinite(float(value))
    assert bool(torch.isfinite(s.grad).all())
    assert float(s.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_needs_are_declared_and_enforced(name):
    loss = get_loss(name)
    assert loss.name == name
    assert loss.needs <= {"labels", "teacher"} and loss.needs
    for need in loss.needs:
        kwargs = {"labels": Y, "teacher": T, need: None}
        with pytest.raises(SpecError, match=need):
            _call(name, **kwargs)


def test_needs_values():
    needs = {name: get_loss(name).needs for name in LOSS_NAMES}
    assert {n for n, v in needs.items() if v == {"teacher"}} == {"margin_mse", "kl", "rank_distill"}
    assert {n for n, v in needs.items() if v == {"labels"}} == {"bce", "ranknet", "softmax_ce", "lambdaloss"}


def test_softmax_ce_batch_without_positive_is_zero_with_grad():
    value, s = _call("softmax_ce", labels=[[0, 0, 0], [0, 0, 0]])
    value.backward()
    assert float(value) == 0.0
    assert bool((s.grad == 0).all())


def test_bce_rejects_labels_above_label_max():
    with pytest.raises(SpecError, match="label_max"):
        _call("bce")  # Y holds grade 2 > 1


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("listmle", "choose one of: bce"),
        ({"temperature": 2}, "needs a 'name'"),
        ({"name": "kl", "temp": 2.0}, "allowed: temperature"),
        ({"name": "margin_mse", "sigma": 2.0}, r"allowed: \(none\)"),
        ({"name": "kl", "temperature": 0}, "positive"),
        ({"name": "lambdaloss", "weighting": "ndcg"}, "ndcg_loss2pp"),
        ({"name": "lambdaloss", "k": 0}, "positive integer"),
        ({"name": "rank_distill", "k": True}, "positive integer"),
        ({"name": "softmax_ce", "target": "max"}, "sum, softmax"),
        (3, "name or a mapping"),
    ],
)
def test_bad_specs_raise_spec_error(spec, match):
    with pytest.raises(SpecError, match=match):
        get_loss(spec)


def test_nan_label_in_a_real_slot_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        _call("ranknet", labels=[[1.0, float("nan"), 0.0], Y[1]])


# ---- sentence-transformers oracle ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def st_model(make_tiny_bert):
    ce = pytest.importorskip("sentence_transformers.cross_encoder")
    path = make_tiny_bert(initializer_range=0.6)  # a wide init so the logits differ by whole units
    model = ce.CrossEncoder(str(path), device="cpu")
    model.eval()
    return model


QUERIES = ["what is a panda", "capital of france"]
DOCS = [["pandas are bears", "pandas are fish", "a zoo animal"], ["paris is the capital", "berlin"]]
LABELS = [[2.0, 0.0, 1.0], [1.0, 0.0]]


def _padded_logits(model, docs):
    pairs = [(q, d) for q, ds in zip(QUERIES, docs) for d in ds]
    with torch.no_grad():
        flat = model(model.preprocess(pairs))["scores"].view(-1).float()
    size = max(len(ds) for ds in docs)
    scores, mask = torch.zeros(len(docs), size), torch.zeros(len(docs), size, dtype=torch.bool)
    i = 0
    for b, ds in enumerate(docs):
        scores[b, : len(ds)] = flat[i : i + len(ds)]
        mask[b, : len(ds)] = True
        i += len(ds)
    assert float(flat.max() - flat.min()) > 1.0  # a real spread, not near-ties
    return scores, mask


def _padded(rows, size):
    return torch.tensor([[*r, *[0.0] * (size - len(r))] for r in rows])


@pytest.mark.parametrize(
    ("ours", "theirs", "st_labels"),
    [
        ("ranknet", lambda L, m: L.RankNetLoss(m, reduction_log="natural"), "labels"),
        ("lambdaloss", lambda L, m: L.LambdaLoss(m, reduction_log="natural"), "labels"),
        (
            {"name": "lambdaloss", "k": 1},
            lambda L, m: L.LambdaLoss(m, k=1, reduction_log="natural"),
            "labels",
        ),
        (
            {"name": "lambdaloss", "weighting": "ndcg_loss2", "k": 2},
            lambda L, m: L.LambdaLoss(m, weighting_scheme=L.NDCGLoss2Scheme(), k=2, reduction_log="natural"),
            "labels",
        ),
        (
            {"name": "lambdaloss", "weighting": "lambdarank"},
            lambda L, m: L.LambdaLoss(m, weighting_scheme=L.LambdaRankScheme(), reduction_log="natural"),
            "labels",
        ),
        # ST's ListNet target is softmax(labels): our target "softmax" directly, and our default "sum"
        # (labels / sum) equals ST fed log(labels) (log 0 = -inf gets probability 0)
        ({"name": "softmax_ce", "target": "softmax"}, lambda L, m: L.ListNetLoss(m), "labels"),
        ("softmax_ce", lambda L, m: L.ListNetLoss(m), "log_labels"),
    ],
    ids=[
        "ranknet",
        "lambdaloss",
        "lambdaloss-k1",
        "ndcg_loss2-k2",
        "lambdarank",
        "listnet",
        "softmax_ce-sum",
    ],
)
def test_listwise_losses_match_sentence_transformers(st_model, ours, theirs, st_labels):
    from sentence_transformers.cross_encoder import losses as L

    rows = (
        LABELS
        if st_labels == "labels"
        else [[math.log(y) if y > 0 else -math.inf for y in r] for r in LABELS]
    )
    with torch.no_grad():
        expected = float(theirs(L, st_model)([QUERIES, DOCS], [torch.tensor(r) for r in rows]))
    scores, mask = _padded_logits(st_model, DOCS)
    got = get_loss(ours)(scores, labels=_padded(LABELS, 3), teacher=None, mask=mask)
    assert float(got) == pytest.approx(expected, rel=2e-5)


def test_ranknet_is_st_default_log2_over_ln2(st_model):
    from sentence_transformers.cross_encoder import losses as L

    with torch.no_grad():
        expected = float(L.RankNetLoss(st_model)([QUERIES, DOCS], [torch.tensor(r) for r in LABELS]))
    scores, mask = _padded_logits(st_model, DOCS)
    got = get_loss("ranknet")(scores, labels=_padded(LABELS, 3), teacher=None, mask=mask)
    assert float(got) / math.log(2) == pytest.approx(expected, rel=2e-5)


def test_bce_matches_sentence_transformers(st_model):
    from sentence_transformers.cross_encoder import losses as L

    flat = [0.5, 0.0, 1.0, 1.0, 0.0]
    with torch.no_grad():
        expected = float(
            L.BinaryCrossEntropyLoss(st_model)(
                [[q for q, ds in zip(QUERIES, DOCS) for _ in ds], [d for ds in DOCS for d in ds]],
                torch.tensor(flat),
            )
        )
    scores, mask = _padded_logits(st_model, DOCS)
    got = get_loss("bce")(scores, labels=_padded([flat[:3], flat[3:]], 3), teacher=None, mask=mask)
    assert float(got) == pytest.approx(expected, rel=2e-5)


def test_margin_mse_matches_sentence_transformers(st_model):
    from sentence_transformers.cross_encoder import losses as L

    docs = [DOCS[0], [*DOCS[1], "london is large"]]
    with torch.no_grad():
        expected = float(
            L.MarginMSELoss(st_model)([QUERIES, *[[d[j] for d in docs] for j in range(3)]], torch.tensor(T))
        )
    scores, mask = _padded_logits(st_model, docs)
    got = get_loss("margin_mse")(scores, labels=None, teacher=torch.tensor(T), mask=mask)
    assert float(got) == pytest.approx(expected, rel=2e-5)
