"""The attention backends against an independent numpy softmax-attention reference."""

import numpy as np
import pytest
import torch

from ulvideo.nn import attention, naive_attention, resolve_backend, xformers_available


def numpy_attention(q, k, v):
    # Independent reference in float64: per batch and head, softmax(q k^T / sqrt(D)) v
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    out = np.empty_like(q)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            s = q[b, :, h] @ k[b, :, h].T / np.sqrt(q.shape[-1])
            p = np.exp(s - s.max(axis=1, keepdims=True))
            out[b, :, h] = (p / p.sum(axis=1, keepdims=True)) @ v[b, :, h]
    return out


def qkv(dtype, device="cpu", lq=37, lk=29, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape_q, shape_k = (2, lq, 3, 16), (2, lk, 3, 16)
    q = torch.randn(shape_q, generator=g, dtype=torch.float64) * 2
    k, v = (torch.randn(shape_k, generator=g, dtype=torch.float64) * 2 for _ in range(2))
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_cpu_backends_match_reference_float64(backend):
    q, k, v = qkv(torch.float64)
    out = attention(q, k, v, backend=backend)
    assert out.shape == q.shape
    # float64 all the way: only rounding differences, tolerance 1e-12
    np.testing.assert_allclose(out.numpy(), numpy_attention(q, k, v), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["naive", "sdpa", None])
def test_cpu_backends_match_reference_float32(backend):
    q, k, v = qkv(torch.float32)
    out = attention(q, k, v, backend=backend)
    # float32 inputs with |scores| up to ~30: tolerance 2e-5 absolute
    np.testing.assert_allclose(out.numpy(), numpy_attention(q, k, v), rtol=0, atol=2e-5)


def test_auto_is_sdpa_on_cpu_and_env_var_overrides_auto(monkeypatch):
    monkeypatch.delenv("ULVIDEO_ATTENTION", raising=False)
    assert resolve_backend(None, torch.device("cpu")) == "sdpa"
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    monkeypatch.setenv("ULVIDEO_ATTENTION", "naive")
    assert resolve_backend(None, torch.device("cpu")) == "naive"
    assert resolve_backend("sdpa", torch.device("cpu")) == "sdpa"  # explicit choice wins
    monkeypatch.setenv("ULVIDEO_ATTENTION", "flash")
    with pytest.raises(ValueError, match="unknown attention backend 'flash'.*ULVIDEO_ATTENTION"):
        attention(*qkv(torch.float32))


def test_bad_backend_and_shapes_raise_clear_errors():
    q, k, v = qkv(torch.float32)
    with pytest.raises(ValueError, match="valid: None, auto, sdpa, xformers, naive"):
        attention(q, k, v, backend="cudnn")
    with pytest.raises(ValueError, match=r"q \(B, L, H, D\)"):
        attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="matching B, H, D"):
        attention(q, k[:, :, :2], v[:, :, :2])


def test_xformers_on_cpu_raises_clear_error():
    q, k, v = qkv(torch.float32)
    expected = "needs CUDA tensors" if xformers_available() else "xformers is not installed"
    with pytest.raises((RuntimeError, ValueError), match=expected):
        attention(q, k, v, backend="xformers")


def test_naive_is_softmax_of_scaled_scores():
    # Closed form: with identical keys the weights are uniform, so the output is the mean of v
    q, _, v = qkv(torch.float64)
    k = torch.ones_like(v)
    out = naive_attention(q, k, v)
    torch.testing.assert_close(out, v.mean(dim=1, keepdim=True).expand_as(q), rtol=0, atol=1e-12)


CUDA_SKIP = "needs a CUDA device" if not torch.cuda.is_available() else None
XFORMERS_SKIP = CUDA_SKIP or (None if xformers_available() else "xformers is not installed")


def numpy_reference(q, k, v):
    return numpy_attention(*(t.float().cpu() for t in (q, k, v)))


# Tolerances (absolute; outputs reach 7.7): fp16 5e-3 and bf16 4e-2 (output rounding), fp32 1e-3
# (allows TF32 inside the kernels). CPU SDPA measures 2.1e-3 (fp16), 1.5e-2 (bf16: half a bf16 ulp
# at 4-8) and 2.4e-6 (fp32): the 16-bit ones are 1-3 output ulps, no looser than rounding allows.
CUDA_CASES = [(torch.float16, 5e-3), (torch.bfloat16, 4e-2), (torch.float32, 1e-3)]


@pytest.mark.cuda
@pytest.mark.skipif(XFORMERS_SKIP is not None, reason=str(XFORMERS_SKIP))
@pytest.mark.parametrize("dtype,atol", CUDA_CASES)
def test_xformers_matches_reference_on_cuda(dtype, atol):
    q, k, v = qkv(dtype, device="cuda")
    assert resolve_backend(None, q.device) == "xformers"
    out = attention(q, k, v, backend="xformers").float().cpu()
    np.testing.assert_allclose(out.numpy(), numpy_reference(q, k, v), atol=atol, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(CUDA_SKIP is not None, reason=str(CUDA_SKIP))
@pytest.mark.parametrize("dtype,atol", CUDA_CASES)
def test_sdpa_matches_reference_on_cuda(dtype, atol):
    q, k, v = qkv(dtype, device="cuda")
    out = attention(q, k, v, backend="sdpa").float().cpu()
    np.testing.assert_allclose(out.numpy(), numpy_reference(q, k, v), atol=atol, rtol=0)


def test_one_backend_check_for_the_runtime_switch_and_the_call():
    from ulvideo.nn import SelfAttention, set_attention_backend

    layer = SelfAttention(16, 2)
    errors = []
    for call in (lambda: set_attention_backend(layer, "cudnn"),
                 lambda: attention(*qkv(torch.float32), backend="cudnn")):  # fmt: skip
        with pytest.raises(ValueError) as info:
            call()
        errors.append(str(info.value))
    assert (
        errors[0] == "unknown attention backend 'cudnn'; valid: None, auto, sdpa, xformers, naive"
    )
    # the call names where the name came from, in the same message
    assert errors[1] == errors[0].replace(";", " (from the argument or $ULVIDEO_ATTENTION);")
    assert layer.backend is None  # refused before any layer was switched
