"""The one attention function every network calls: xformers on CUDA when installed, else SDPA."""

import importlib.util
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "sdpa", "xformers", "naive")
ENV_VAR = "ULVIDEO_ATTENTION"


# Looked up once at import, without importing xformers (it stays optional and lazily imported)
_XFORMERS_FOUND = importlib.util.find_spec("xformers") is not None


def xformers_available() -> bool:
    """True if the optional xformers package is installed."""
    return _XFORMERS_FOUND


def check_backend(backend: str | None, source: str = "") -> None:
    """The one check of a backend name (None is auto): a known name, and xformers installed when
    named. `source` says where an unknown name came from, for the message."""
    if backend not in (None, *BACKENDS):
        raise ValueError(
            f"unknown attention backend {backend!r}{source}; valid: None, {', '.join(BACKENDS)}"
        )
    if backend == "xformers" and not xformers_available():
        raise RuntimeError(
            "attention backend 'xformers' requested but xformers is not installed; "
            "`pip install ulvideo[xformers]` on a CUDA machine, or use backend='sdpa'"
        )


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The concrete backend for `backend` on `device`: the env var ULVIDEO_ATTENTION overrides auto."""
    choice = backend or "auto"
    if choice == "auto":
        choice = os.environ.get(ENV_VAR, "auto") or "auto"
    check_backend(choice, f" (from the argument or ${ENV_VAR})")
    if choice == "auto":
        return "xformers" if device.type == "cuda" and xformers_available() else "sdpa"
    if choice == "xformers":
        if device.type != "cuda":
            raise ValueError(
                f"attention backend 'xformers' needs CUDA tensors, got device {device}; "
                "use backend='sdpa' on CPU"
            )
    return choice


def naive_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    # Reference: softmax(q k^T / sqrt(D)) v, on (B, L, H, D)
    scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhlm,bmhd->blhd", scores.softmax(dim=-1), v)


def attention(q: Tensor, k: Tensor, v: Tensor, backend: str | None = None) -> Tensor:
    """Multi-head softmax attention on (B, L, H, D) tensors (xformers layout), scale 1/sqrt(D).

    backend: None/"auto" (xformers on CUDA if installed, else SDPA; $ULVIDEO_ATTENTION overrides),
    "sdpa", "xformers" or "naive" (explicit softmax, the reference).
    """
    batch_heads_dim = (q.shape[0], q.shape[2], q.shape[3]) if q.ndim == 4 else None
    if k.shape != v.shape or k.ndim != 4 or batch_heads_dim != (k.shape[0], k.shape[2], k.shape[3]):
        raise ValueError(
            "attention expects q (B, L, H, D) and k, v (B, M, H, D) with matching B, H, D; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    chosen = resolve_backend(backend, q.device)
    if chosen == "xformers":
        import xformers.ops

        return xformers.ops.memory_efficient_attention(q, k, v)
    if chosen == "naive":
        return naive_attention(q, k, v)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
