"""A fused ONNX graph for BERT encoders, written directly from the weights.

The graph that ``torch.onnx.export`` produces from transformers 5 does not match onnxruntime's attention
fusion patterns, so attention runs as a dozen small ops per layer. For plain BERT checkpoints (absolute
positions, post-LayerNorm, exact GELU: BERT, MiniLM, bge/e5/gte-style BERTs, ms-marco cross-encoders) this
module writes the fused graph itself with onnxruntime's contrib operators:

``EmbedLayerNormalization`` -> per layer ``Attention`` (packed QKV) -> ``MatMul`` + ``LayerNormalization``
-> ``MatMul`` + ``Gelu`` -> ``MatMul`` + ``LayerNormalization`` -> pooler / classifier (opset 20).

This is the graph onnxruntime's BERT optimiser aims for, so dynamic int8 quantisation turns ``Attention``
into ``QAttention`` and each weight ``MatMul`` into an int8 kernel. Two things go beyond it, both exact:

- a cross-encoder reads only the [CLS] state after the last layer, so that layer computes keys and values
  for every token but the query, attention (``MultiHeadAttention``), output projection and feed-forward for
  the [CLS] row alone (~1/7 fewer FLOPs for a 6-layer model);
- ``split_cls=True`` (used for int8) carries the [CLS] row as its own tensor through the attention-output
  and feed-forward matmuls (same weights, nodes named ``.../cls``), so that dynamic int8 gives it an
  activation scale of its own and its outlier values (largest in the feed-forward inputs) do not set the
  int8 grid of the other tokens there. The QKV projection (inside ``QAttention``) still quantises all rows
  together.

:func:`supports` says whether a model fits; anything else goes through the generic export in
:mod:`unirank.backends.onnx`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require

__all__ = ["build_bert_graph", "supports"]

_MS = "com.microsoft"


def supports(model: Any, kind: str = "encoder", input_names: list[str] | None = None) -> bool:
    """Whether ``model`` (a loaded transformers model) is a plain BERT this module can write as ``kind``
    (``"seqcls"`` needs a ``*ForSequenceClassification`` head) from the tokenizer's ``input_names``
    (``attention_mask`` is required)."""
    if input_names is not None and "attention_mask" not in input_names:
        return False
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "bert":
        return False
    if getattr(cfg, "hidden_act", None) != "gelu":
        return False
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return False
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    if not hasattr(base, "embeddings") or not hasattr(base, "encoder"):
        return False
    if kind == "seqcls" or type(model).__name__.endswith("ForSequenceClassification"):
        head = getattr(model, "classifier", None)
        return (
            type(model).__name__.endswith("ForSequenceClassification")
            and getattr(base, "pooler", None) is not None
            and type(head).__name__ == "Linear"
        )
    return True


def _np(t: Any) -> np.ndarray:
    return t.detach().to("cpu").float().numpy()


class _Graph:
    def __init__(self) -> None:
        self.onnx = require("onnx", "onnx")
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0
        self.names: set[str] = set()

    def weight(self, name: str, value: np.ndarray) -> str:
        """An fp32 initializer; a name given again refers to the first one (weights shared by the [CLS] and
        the other rows are stored once)."""
        if name not in self.names:
            self.names.add(name)
            array = np.ascontiguousarray(value, np.float32)
            self.inits.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.names.add(name)
        self.inits.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any) -> list[str]:
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        domain = _MS if op in {"EmbedLayerNormalization", "Attention", "MultiHeadAttention"} else ""
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def index(self, value: int) -> str:
        """A shared 1-element int64 constant (for Slice starts / ends / axes)."""
        name = f"i64_{value}"
        if name not in self.names:
            self.const(name, np.array([value], np.int64))
        return name

    def cls_row(self, x: str, name: str) -> str:
        """``x[:, :1]``: the [CLS] row of a ``(batch, sequence, hidden)`` tensor."""
        return self.node("Slice", [x, self.index(0), self.index(1), self.index(1)], f"{name}/slice/cls")[0]

    def split_cls(self, x: str, name: str) -> dict[str, str]:
        """``{"/cls": x[:, :1], "": x[:, 1:]}`` (rows of a ``(batch, sequence, hidden)`` tensor)."""
        cls = self.cls_row(x, name)
        end = self.index(int(np.iinfo(np.int64).max))
        rest = self.node("Slice", [x, self.index(1), end, self.index(1)], f"{name}/slice_rest")[0]
        return {"/cls": cls, "": rest}

    def join(self, parts: dict[str, str], name: str) -> str:
        """The whole ``(batch, sequence, hidden)`` tensor again from :meth:`split_cls` parts (or the one)."""
        if "/cls" not in parts:
            return parts[""]
        return self.node("Concat", [parts["/cls"], parts[""]], name, axis=1)[0]

    def token_block(self, layer: Any, ctx: str, residual: str, p: str, part: str, eps: float) -> str:
        """The per-token part of a BERT layer after attention: output projection + LayerNorm, then the
        feed-forward + LayerNorm (node names ``{p}/attn_out{part}``, ``{p}/ffn_in{part}``, ...)."""
        ao, inter, fo = layer.attention.output, layer.intermediate.dense, layer.output
        w = self.weight(f"{p}.attn_out.weight_t", _np(ao.dense.weight).T)
        h = self.node("MatMul", [ctx, w], f"{p}/attn_out{part}")[0]
        h = self.add_norm(h, ao.dense.bias, residual, ao.LayerNorm, f"{p}/attn{part}", eps, f"{p}/attn")
        res = h
        h = self.node(
            "MatMul", [h, self.weight(f"{p}.ffn_in.weight_t", _np(inter.weight).T)], f"{p}/ffn_in{part}"
        )[0]
        h = self.node("Add", [h, self.weight(f"{p}.ffn_in.bias", _np(inter.bias))], f"{p}/ffn_in_bias{part}")[
            0
        ]
        h = self.node("Gelu", [h], f"{p}/gelu{part}")[0]
        h = self.node(
            "MatMul",
            [h, self.weight(f"{p}.ffn_out.weight_t", _np(fo.dense.weight).T)],
            f"{p}/ffn_out{part}",
        )[0]
        return self.add_norm(h, fo.dense.bias, res, fo.LayerNorm, f"{p}/ffn{part}", eps, f"{p}/ffn")

    def add_norm(
        self, x: str, bias: Any, residual: str, norm: Any, name: str, eps: float, key: str | None = None
    ) -> str:
        """``LayerNorm(x + bias + residual)`` as Add, Add, LayerNormalization. (onnxruntime would fuse
        this into ``SkipLayerNormalization``, whose CPU kernel measured 3x slower: sessions disable that.)"""
        key = key or name  # initializer names (shared between row parts)
        h = self.node("Add", [x, self.weight(f"{key}.bias", _np(bias))], f"{name}/bias")[0]
        h = self.node("Add", [h, residual], f"{name}/residual")[0]
        gamma = self.weight(f"{key}.ln.weight", _np(norm.weight))
        beta = self.weight(f"{key}.ln.bias", _np(norm.bias))
        return self.node("LayerNormalization", [h, gamma, beta], f"{name}/ln", axis=-1, epsilon=eps)[0]

    def linear(self, x: str, lin: Any, name: str) -> str:
        """``x @ W^T + b`` as MatMul + Add (quantisable MatMul by a weight)."""
        w = self.weight(f"{name}.weight_t", _np(lin.weight).T)
        out = self.node("MatMul", [x, w], f"{name}/MatMul")[0]
        if lin.bias is not None:
            out = self.node("Add", [out, self.weight(f"{name}.bias", _np(lin.bias))], f"{name}/Add")[0]
        return out


def build_bert_graph(
    model: Any, kind: str, input_names: list[str], out: Path, opset: int = 20, split_cls: bool = False
) -> None:
    """Write the fused graph of ``model`` (``kind``: ``"seqcls"`` -> ``logits``; ``"encoder"`` ->
    ``last_hidden_state``) to ``out`` (``opset`` >= 20, for the ``Gelu`` operator). Inputs are int64
    ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (those in ``input_names``), right-padded,
    shape ``(batch, sequence)``. ``split_cls=True`` writes the per-token part of every layer twice, for the
    [CLS] row and for the other rows (nodes of the [CLS] copy are named ``.../cls``; weights are shared),
    which is what :func:`unirank.backends.onnx.onnx_model_file` does for int8."""
    if not supports(model, kind, input_names):
        raise ValueError("build_bert_graph needs a plain BERT model (see supports())")
    if opset < 20:
        raise ValueError(f"opset={opset}: the fused BERT graph needs opset >= 20 (Gelu)")
    onnx = require("onnx", "onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    cfg = model.config
    base = getattr(model, model.base_model_prefix, model)
    emb = base.embeddings
    eps = float(cfg.layer_norm_eps)
    heads = int(cfg.num_attention_heads)
    g = _Graph()

    ids32 = g.node("Cast", ["input_ids"], "cast_ids", to=tp.INT32)[0]
    if "token_type_ids" in input_names:
        seg32 = g.node("Cast", ["token_type_ids"], "cast_seg", to=tp.INT32)[0]
    else:  # no segment input: every token is segment 0
        seg32 = g.node("Mul", [ids32, g.const("zero_i32", np.array(0, np.int32))], "zero_seg")[0]
    mask32 = g.node("Cast", ["attention_mask"], "cast_mask", to=tp.INT32)[0]
    seg_table = _np(emb.token_type_embeddings.weight)
    x = g.node(
        "EmbedLayerNormalization",
        [
            ids32,
            seg32,
            g.weight("word_embeddings", _np(emb.word_embeddings.weight)),
            g.weight("position_embeddings", _np(emb.position_embeddings.weight)),
            g.weight("token_type_embeddings", seg_table),
            g.weight("embeddings.ln.weight", _np(emb.LayerNorm.weight)),
            g.weight("embeddings.ln.bias", _np(emb.LayerNorm.bias)),
        ],
        "embeddings",
        n_out=2,
        epsilon=eps,
    )[0]
    # With ``split_cls`` the [CLS] row of each hidden state is carried as its own tensor through the
    # per-token part of every layer (node names end in "/cls"; the weights are shared), and the two parts
    # are concatenated only where tokens meet, at attention. BERT's [CLS] state holds a few values ~3x
    # larger than any other token's; with them in the same tensor, dynamic int8 picks a per-tensor
    # activation scale ~3x coarser for every other token.
    # A cross-encoder reads only the [CLS] state of the last layer, so that layer computes keys and values
    # for every token but queries, attention output and feed-forward for the [CLS] row alone (exact).
    parts = g.split_cls(x, "embeddings") if split_cls else {"": x}
    layers = list(base.encoder.layer)
    for i, layer in enumerate(layers):
        p = f"layer.{i}"
        x_full = x if i == 0 else g.join(parts, f"{p}/concat")  # the first layer's input is whole already
        sa = layer.attention.self
        if kind == "seqcls" and i == len(layers) - 1:
            x_cls = parts["/cls"] if split_cls else g.cls_row(x_full, f"{p}/input")
            kv_w = np.concatenate([_np(sa.key.weight).T, _np(sa.value.weight).T], axis=1)
            kv_b = np.concatenate([_np(sa.key.bias), _np(sa.value.bias)])
            kv = g.node("MatMul", [x_full, g.weight(f"{p}.kv.weight_t", kv_w)], f"{p}/kv")[0]
            kv = g.node("Add", [kv, g.weight(f"{p}.kv.bias", kv_b)], f"{p}/kv_bias")[0]
            hidden = int(cfg.hidden_size)
            k, v = g.node(
                "Split",
                [kv, g.const("kv_split", np.array([hidden, hidden], np.int64))],
                f"{p}/kv_split",
                n_out=2,
                axis=2,
            )
            q = g.linear(x_cls, sa.query, f"{p}/query/cls")
            ctx = g.node("MultiHeadAttention", [q, k, v, "", mask32], f"{p}/attention/cls", num_heads=heads)[
                0
            ]
            parts = {"/cls": g.token_block(layer, ctx, x_cls, f"{p}", "/cls", eps)}
            break
        qkv_w = np.concatenate([_np(sa.query.weight).T, _np(sa.key.weight).T, _np(sa.value.weight).T], axis=1)
        qkv_b = np.concatenate([_np(sa.query.bias), _np(sa.key.bias), _np(sa.value.bias)])
        ctx = g.node(
            "Attention",
            [x_full, g.weight(f"{p}.qkv.weight", qkv_w), g.weight(f"{p}.qkv.bias", qkv_b), mask32],
            f"{p}/attention",
            num_heads=heads,
        )[0]
        ctx_parts = g.split_cls(ctx, f"{p}/ctx") if split_cls else {"": ctx}
        parts = {part: g.token_block(layer, h, parts[part], p, part, eps) for part, h in ctx_parts.items()}
    if kind == "encoder":
        x = g.join(parts, "final/concat")

    if kind == "seqcls":
        cls = g.node("Gather", [parts["/cls"], g.const("zero_i64", np.array(0, np.int64))], "cls", axis=1)[0]
        pooled = g.node("Tanh", [g.linear(cls, base.pooler.dense, "pooler")], "pooler/tanh")[0]
        result = g.linear(pooled, model.classifier, "classifier")
        output = helper.make_tensor_value_info(
            "logits", tp.FLOAT, ["batch", int(model.classifier.out_features)]
        )
    elif kind == "encoder":
        result = x
        output = helper.make_tensor_value_info(
            "last_hidden_state", tp.FLOAT, ["batch", "sequence", cfg.hidden_size]
        )
    else:
        raise ValueError(f"kind={kind!r}")
    g.nodes.append(helper.make_node("Identity", [result], [output.name], name="output"))
    inputs = [helper.make_tensor_value_info(n, tp.INT64, ["batch", "sequence"]) for n in input_names]
    graph = helper.make_graph(g.nodes, "unirank_bert", inputs, [output], initializer=g.inits)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(_MS, 1)],
        producer_name="unirank",
    )
    onnx.save(proto, str(out))
