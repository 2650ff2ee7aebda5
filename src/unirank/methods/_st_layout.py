"""The sentence-transformers folder layout (modules.json: Transformer -> Pooling -> [Dense] -> [Normalize]) as
:class:`unirank.methods.embedding.EmbeddingRanker` reads it, and its pooling / dense modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..backends import hf
from ..errors import SpecError

__all__ = ["POOLING_MODES", "read_st_layout"]

_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
POOLING_MODES = frozenset(_POOLING_KEYS.values())


def read_st_layout(path: Path) -> dict[str, Any]:
    """The parts of a sentence-transformers folder that decide the embedding (all optional)."""
    modules = hf.read_json(path / "modules.json").get("_") or []
    layout: dict[str, Any] = {
        "transformer": path,
        "pooling": "mean",
        "include_prompt": True,
        "dense": [],
        "normalize": False,
        "st": bool(modules),
    }
    for mod in modules:
        kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
        sub = path / mod.get("path", "")
        if kind == "Transformer":
            layout["transformer"] = sub
        elif kind == "Pooling":
            cfg = hf.read_json(sub / "config.json")
            modes = [v for k, v in _POOLING_KEYS.items() if cfg.get(k)] or [cfg.get("pooling_mode", "mean")]
            if len(modes) != 1:
                raise SpecError(f"{path}: concatenated pooling modes {modes} are not supported")
            mode = str(modes[0]).removeprefix("pooling_mode_").removesuffix("_tokens").replace("_token", "")
            mode = {"mean_sqrt_len": "mean_sqrt_len", "weighted_mean": "weightedmean"}.get(mode, mode)
            if mode not in POOLING_MODES:
                supported = sorted(POOLING_MODES)
                raise SpecError(f"{path}: pooling mode {modes[0]!r} is not supported ({supported})")
            layout["pooling"] = mode
            layout["include_prompt"] = bool(cfg.get("include_prompt", True))
        elif kind == "Dense":
            layout["dense"].append(sub)
        elif kind == "Normalize":
            layout["normalize"] = True
        else:
            raise SpecError(f"{path}: sentence-transformers module {mod.get('type')!r} is not supported")
    if not modules:
        layout["normalize"] = True
    st_cfg = hf.read_json(path / "config_sentence_transformers.json")
    layout["prompts"] = st_cfg.get("prompts") or {}
    layout["similarity"] = st_cfg.get("similarity_fn_name") or "cosine"
    bert_cfg = hf.read_json(layout["transformer"] / "sentence_bert_config.json")
    layout["max_seq_length"] = bert_cfg.get("max_seq_length")
    layout["do_lower_case"] = bool(bert_cfg.get("do_lower_case", False))
    return layout


def _pool(torch: Any, hidden: Any, mask: Any, mode: str, left_padded: bool) -> Any:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode in ("mean", "mean_sqrt_len"):
        total = (hidden * m).sum(1)
        count = m.sum(1).clamp(min=1e-9)
        return total / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":  # position-weighted mean (weights 1..L), as sentence-transformers computes it
        w = m * torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)[None, :, None]
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    if mode == "lasttoken":
        if left_padded:
            return hidden[:, -1]
        last = mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
    raise SpecError(f"pooling mode {mode!r} is not supported")


def _load_dense(path: Path, device: str) -> Any:
    torch, _ = hf.torch_modules()
    cfg = hf.read_json(path / "config.json")
    layer = torch.nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg.get("bias", True))
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise SpecError(f"{path}: Dense layer without model.safetensors weights is not supported")
    from safetensors.torch import load_file

    state = {k.removeprefix("linear."): v for k, v in load_file(str(weights)).items()}
    layer.load_state_dict(state)
    act_name = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity")).rsplit(".", 1)[-1]
    act = getattr(torch.nn, act_name, None)
    if act is None:
        raise SpecError(f"{path}: activation {act_name!r} is not supported")
    return torch.nn.Sequential(layer, act()).to(device).eval()
