"""Training steps on CUDA under bf16 autocast (the GPU path): finite, and close to float32.

Each test computes the loss and gradients twice with the same weights, timesteps and noise, in
float32 and under bf16 autocast, then takes an AdamW step. On CPU autocast (torch 2.13) the same
cases give relative loss differences of 1.6e-5 (stage 1), 2.9e-5 and 6.5e-4 (stage 2, factorised
and full attention) and gradient cosines of 0.99982, 0.99997 and 0.99998; the tolerances below are
about 5x those gaps, room for different kernels (cuDNN convolutions, flash attention) but not for a
loss or gradient that bf16 gets wrong. `benchmarks/gpu_check.sh` runs these tests on a GPU.
"""

import pytest
import torch

from ulvideo.diffusion import LinearLogSNR, base_loss
from ulvideo.models import autoencoder_preset, base_preset, build_base
from ulvideo.ul import UnifiedLatents

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

LOSS_RTOL = 3e-3  # |loss_bf16 - loss_fp32| / |loss_fp32|
GRAD_COSINE = 0.999  # cosine similarity of all gradients, bf16 against fp32


def loss_and_gradient(network, loss_fn, bf16: bool):
    """Loss and the flattened gradient (float64), with the same random draws for both precisions."""
    network.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same timesteps and noise in both runs
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn()
    loss.backward()
    missing = [n for n, p in network.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    grad = torch.cat([p.grad.double().flatten() for p in network.parameters()])
    return loss.detach().double(), grad


def check_bf16_training_step(network, loss_fn):
    ref_loss, ref_grad = loss_and_gradient(network, loss_fn, bf16=False)
    loss, grad = loss_and_gradient(network, loss_fn, bf16=True)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert abs(loss - ref_loss) / abs(ref_loss) < LOSS_RTOL, (float(loss), float(ref_loss))
    cosine = grad @ ref_grad / (grad.norm() * ref_grad.norm())
    assert cosine > GRAD_COSINE, float(cosine)

    before = [p.detach().clone() for p in network.parameters()]
    torch.optim.AdamW(network.parameters(), lr=1e-3).step()  # on the bf16 gradients
    after = list(network.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    moved = sum(not torch.equal(a, b) for a, b in zip(after, before))
    assert moved == len(before), f"only {moved} of {len(before)} parameters changed"


def test_stage1_training_step_under_bf16_autocast():
    # encoder + prior + decoder on 9 x 32 x 32 clips (latents 8 x 3 x 4 x 4)
    torch.manual_seed(1)
    ul = UnifiedLatents(autoencoder_preset("tiny", resolution=32)).cuda()
    video = torch.rand(2, 3, 9, 32, 32, device="cuda") * 2 - 1
    check_bf16_training_step(ul, lambda: ul.stage1_loss(video)["loss"])


@pytest.mark.parametrize("mode", ["factorised", "full"])
def test_stage2_training_step_under_bf16_autocast(mode):
    # the two-level base model on latents of 3 frames, the first given as context
    torch.manual_seed(2)
    config = base_preset("tiny", attention=mode)
    base = build_base(config).cuda()
    z_clean = torch.randn(4, config.latent_channels, 3, 4, 4, device="cuda")
    schedule = LinearLogSNR()

    def denoiser(z_t, logsnr):
        return base(z_t, logsnr, context_frames=1)

    def loss_fn():
        return base_loss(denoiser, z_clean, schedule, context_frames=1).mean()

    check_bf16_training_step(base, loss_fn)
