"""Mutation check: break the code on purpose and confirm that the tests meant to catch it fail.

    python tests/mutation_check.py            # every breakage; exit 1 if one is not caught
    python tests/mutation_check.py ddim_noise # some of them, by name

Each breakage is a monkeypatch applied in a fresh subprocess (`--apply NAME`) before pytest imports
the tests, and in the Python processes those tests start (benchmark scripts, accelerate launches),
so the repository is never edited. The matching tests first run unbroken (they must
pass), then once per breakage (they must fail). CUDA breakages are reported as skipped on a
machine without a GPU. Not collected by pytest (the name does not start with `test_`).
"""

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def detach_decoder_latent():
    from ulvideo.ul import UnifiedLatents

    noisy = UnifiedLatents.noisy_latent
    UnifiedLatents.noisy_latent = lambda self, z, rng=None: noisy(self, z.detach(), rng)


def latent_zeroed():
    from ulvideo.ul import UnifiedLatents

    encode = UnifiedLatents.encode
    UnifiedLatents.encode = lambda self, video, window=None: 0 * encode(self, video, window)


def patch_guidance(**fixed):
    import ulvideo.sample as sample

    guided = sample.guided_denoiser

    def broken(base, labels, cfg_scale, context_frames):
        args = {"labels": labels, "cfg_scale": cfg_scale, "context_frames": context_frames}
        return guided(base, **{**args, **fixed})

    sample.guided_denoiser = broken


def context_not_pinned():
    import ulvideo.sample as sample

    sample.pin_context = lambda denoiser, clean, keep: denoiser


def cfg_ignored_by_sample_z0():
    import ulvideo.sample as sample

    sample_z0 = sample.sample_z0
    sample.sample_z0 = lambda ul, base, shape, sampling, **kw: sample_z0(
        ul, base, shape, dataclasses.replace(sampling, cfg_scale=1.0), **kw
    )


def eps_parameterisation():
    import ulvideo.models.transformer as transformer
    from ulvideo.diffusion.vp import alpha_sigma, expand_to

    def eps_to_x(z_t, eps, logsnr):  # x = (z_t - sigma * eps) / alpha: reads v as eps
        alpha, sigma = alpha_sigma(expand_to(logsnr, z_t))
        return (z_t - sigma * eps) / alpha

    transformer.v_to_x = eps_to_x


def ddim_adds_noise():
    import torch

    import ulvideo.diffusion.samplers as samplers

    def noisy_ddim(denoiser, z, grid, noise_sampler=torch.randn_like, progress=False):
        for l_from, l_to in zip(grid.to(z), grid[1:].to(z)):
            step = samplers.ddim_step(z, denoiser(z, l_from.expand(len(z))), l_from, l_to)
            z = step + 0.005 * torch.sigmoid(-l_to).sqrt() * noise_sampler(z)  # 0.5% of sigma_to
        return z

    samplers.SAMPLERS["ddim"] = noisy_ddim


def heun_without_correction():
    import ulvideo.diffusion.samplers as samplers

    def predictor_only(l_from, l_to, z, x_hat, state, noise_sampler):
        return z, None  # the Euler predictor is kept: the trapezoidal correction is dropped

    samplers._heun_correct = predictor_only


def dpmpp_without_history():
    import ulvideo.diffusion.samplers as samplers

    original = samplers._dpmpp_2m_update

    def first_order(l_prev, l_from, l_to, z, x_hat, x_prev, noise_sampler):
        return original(None, l_from, l_to, z, x_hat, None, noise_sampler)

    samplers._dpmpp_2m_update = first_order


def dpmpp_history_shared():
    import ulvideo.diffusion.samplers as samplers

    original, last = samplers.dpmpp_2m_step, {}

    def shared(z, x_hat, x_prev, l_prev, l_from, l_to):  # one history for every call
        if l_prev is None and "x" in last and last["x"].shape == x_hat.shape:
            x_prev, l_prev = last["x"], l_from - (l_to - l_from)
        last["x"] = x_hat
        return original(z, x_hat, x_prev, l_prev, l_from, l_to)

    samplers.dpmpp_2m_step = shared


def batch_seeded_noise():
    import torch

    import ulvideo.sample as sample

    class OneGenerator:  # one generator threaded through the batch, as before per-sample seeds
        def __init__(self, device, seed, indices):
            self.generator = torch.Generator(device).manual_seed(seed)

        def randn_like(self, x):
            return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    sample.StackedRandomGenerator = OneGenerator


def compile_blocks_noop():
    import ulvideo.nn

    ulvideo.nn.compile_blocks = lambda module, backend="inductor": module


def compiled_blocks_drift():
    # the compiled blocks compute in bf16, as a backend that loses precision would
    import torch

    import ulvideo.nn

    def low_precision(module, backend="inductor"):
        for block in module.modules():
            if isinstance(block, (ulvideo.nn.TransformerBlock, ulvideo.nn.ResBlock3d)):
                forward = block.forward

                def bf16(*args, _forward=forward):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return _forward(*args).float()

                block.forward = torch.compile(bf16, backend="aot_eager")
        return module

    ulvideo.nn.compile_blocks = low_precision


def host_sync_in_loss():
    import torch

    import ulvideo.diffusion.losses as losses

    check = losses.check_input

    def syncing(name, x, min_ndim=2):
        check(name, x, min_ndim)
        if not torch.isfinite(x).all():  # a host sync and a graph break
            raise ValueError(f"{name} is not finite")

    losses.check_input = syncing


def resume_restarts_epoch():
    # a resumed run starts its epoch over instead of skipping the examples already seen
    from ulvideo.train.trainer import DataPosition

    DataPosition.batches_to_skip = lambda self, global_batch, batches_per_epoch: 0


def data_wait_untimed():
    # the throughput accounting yields the batches without timing the wait for them
    from ulvideo.train.metrics import Throughput

    Throughput.batches = lambda self, loader: iter(loader)


def mix_weights_ignored():
    # every source of a --data_mix is drawn equally often
    from ulvideo.data.buckets import BatchPlan

    init = BatchPlan.__init__
    BatchPlan.__init__ = lambda self, groups, weights, *a, **k: init(
        self, groups, [1.0] * len(weights), *a, **k
    )


def bucket_batch_size_ignored():
    # every bucket takes the first bucket's batch size
    import dataclasses

    from ulvideo.data.buckets import BatchPlan

    init = BatchPlan.__init__

    def same_size(self, groups, weights, buckets, *a, **k):
        size = buckets[0].batch_size
        init(
            self,
            groups,
            weights,
            [dataclasses.replace(b, batch_size=size) for b in buckets],
            *a,
            **k,
        )

    BatchPlan.__init__ = same_size


def buckets_mixed_in_a_batch():
    # each batch's last row comes from the next step (often another bucket)
    from ulvideo.data.mixture import MixtureBatches

    iterate = MixtureBatches.__iter__

    def mixed(self):
        batches = list(iterate(self))
        for batch, following in zip(batches, batches[1:]):
            batch[-1] = following[-1]
        yield from batches

    MixtureBatches.__iter__ = mixed


def epoch_not_reaching_the_plan():
    # the bucketed loader reads epoch 0 whatever the trainer's epoch
    from ulvideo.train.data import BucketLoader

    epoch = BucketLoader.epoch
    BucketLoader.epoch = lambda self, number, start: epoch(self, 0, start)


def fvd_means_only():
    import ulvideo.evaluate.fvd as fvd
    from ulvideo.evaluate.frechet import as_float64

    def broken(real, fake, groups):  # the squared distance of the feature means, no covariances
        real, fake = as_float64(real), as_float64(fake)
        values = [
            float((r.mean(0) - f.mean(0)).square().sum())
            for r, f in zip(real.chunk(groups), fake.chunk(groups))
        ]
        mean = sum(values) / groups
        std = (sum((v - mean) ** 2 for v in values) / groups) ** 0.5
        return {"mean": mean, "std": std, "values": values}

    fvd.grouped_distance = broken


def reconstruction_noisy_latent(noisy_latent):
    """reconstruction_metrics sees its model with `noisy_latent(model, z, rng)` instead."""
    import ulvideo.evaluate.reconstruction as reconstruction

    metrics = reconstruction.reconstruction_metrics

    class Patched:
        def __init__(self, model):
            self.model = model

        def __getattr__(self, name):
            return getattr(self.model, name)

        def noisy_latent(self, z, rng=None):
            return noisy_latent(self.model, z, rng)

        def reconstruct_from(self, z, *args, **kwargs):  # the real one, over the patched latent
            from ulvideo.ul import UnifiedLatents

            return UnifiedLatents.reconstruct_from(self, z, *args, **kwargs)

    reconstruction.reconstruction_metrics = lambda model, *a, **kw: metrics(
        Patched(model), *a, **kw
    )


def reconstruction_skips_noise():
    reconstruction_noisy_latent(lambda model, z, rng: z)


def bf16_loss_off():
    import torch

    import ulvideo.diffusion as diffusion
    from ulvideo.ul import UnifiedLatents

    def off(loss):  # 0.5% too large under CUDA autocast: inside the old 1e-2 tolerance
        return loss * 1.005 if torch.is_autocast_enabled("cuda") else loss

    stage1 = UnifiedLatents.stage1_loss

    def stage1_off(self, video, warmup=0.0):
        out = stage1(self, video, warmup)
        return {**out, "loss": off(out["loss"])}

    UnifiedLatents.stage1_loss = stage1_off
    base_loss = diffusion.base_loss
    diffusion.base_loss = lambda *a, **kw: off(base_loss(*a, **kw))


def stream_cache_dropped():
    from ulvideo.nn import Conv3d

    forward = Conv3d.forward
    Conv3d.forward = lambda self, x, cache=None: forward(self, x, None if cache is None else {})


def windows_unweighted():
    import torch

    import ulvideo.diffusion as diffusion

    diffusion.ramp_weights = lambda size, *a, **kw: torch.ones(size, dtype=torch.float64)


def windowed_rate_first_chunk():
    from ulvideo.ul import UnifiedLatents

    rate = UnifiedLatents.rate

    def first_chunk(self, z, window=None, **draws):  # the latent frames after the first window
        if window is None:  # are not coded
            return rate(self, z, **draws)
        span = (window - 1) // self.config.temporal_downsample + 1
        eps = draws.pop("eps", None)
        eps = None if eps is None else eps[:, :, :span]
        return rate(self, z[:, :, :span], window, eps=eps, **draws)

    UnifiedLatents.rate = first_chunk


def windows_step_the_whole_clip():
    import torch

    import ulvideo.diffusion as diffusion
    import ulvideo.diffusion.windows as windows_module
    import ulvideo.ul as ul

    def whole(method, window_denoiser, windows, z, grid, noise_sampler=torch.randn_like, **kw):
        def denoiser(x, logsnr):  # the blend before streaming: sums of the clip's size
            total, weight = torch.zeros_like(x), x.new_zeros(x.shape[2:])
            for k, (region, axes) in enumerate(windows):
                w, index = windows_module._outer(axes, x), (slice(None), slice(None), *region)
                total[index] += w * window_denoiser(x[index], logsnr, k)
                weight[region] += w
            return total / weight

        return diffusion.SAMPLERS[method](denoiser, z, grid, noise_sampler, **kw)

    windows_module.sample_windows = diffusion.sample_windows = ul.sample_windows = whole


def window_latents_shifted():
    import ulvideo.ul as ul

    windows = ul.decode_windows

    def shifted(*a, **kw):  # each later window reads the latent frames one too early
        out = windows(*a, **kw)
        shift = lambda t: slice(max(0, t.start - 1), t.stop - (t.start > 0))  # noqa: E731
        return [((shift(t), h, w), pixel) for (t, h, w), pixel in out]

    ul.decode_windows = shifted


def long_generation_forgets():
    import ulvideo.sample as sample

    original = sample.sample_z0

    def forgetting(ul, base, shape, sampling, *, context_latents=None, **kw):
        if context_latents is not None and context_latents.shape[2] == shape[1] - 1:
            context_latents = None  # a later window starts afresh
        return original(ul, base, shape, sampling, context_latents=context_latents, **kw)

    sample.sample_z0 = forgetting


def decode_windows_flat():
    # the decoder's windows get flat blend weights (the seam test calls ramp_weights directly)
    import ulvideo.diffusion.windows as windows

    ramp_weights = windows.ramp_weights
    windows.ramp_weights = lambda size, ramp, left, right: ramp_weights(size, ramp, False, False)


def reconstruction_ids_from_zero():
    # every batch of evaluate_reconstruction draws the noise of sample ids 0..B-1
    import ulvideo.evaluate.reconstruction as reconstruction

    metrics = reconstruction.reconstruction_metrics
    reconstruction.reconstruction_metrics = lambda *a, first_index=0, **kw: metrics(*a, **kw)


def reconstruction_noise_restarts():
    # the decoder's noise restarts each video's generator: its first draws repeat the latent's
    def restarting(model, z, rng):
        states = [g.get_state() for g in rng.generators]
        out = model.noisy_latent(z, rng)
        for g, state in zip(rng.generators, states):
            g.set_state(state)
        return out

    reconstruction_noisy_latent(restarting)


def fvd_cache_key(max_videos=True, file_stats=True):
    import hashlib
    import json

    import ulvideo.evaluate.fvd as fvd

    def key(cache_dir, real, videos, protocol):
        files = [
            [str(f.resolve()), *([f.stat().st_size, f.stat().st_mtime_ns] if file_stats else [])]
            for f in fvd.video_files(real)
        ]
        key = {"files": files, "max_videos": videos if max_videos else None, "protocol": protocol}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return Path(cache_dir) / f"fvd_reference_{digest}.npz"

    fvd.reference_cache_path = key


def fvd_settings_unlisted():
    # only the sample count and groups are compared with the named protocol
    import ulvideo.evaluate.fvd as fvd

    deviations = fvd.deviations

    def counts_only(protocol, num_samples, groups):
        named = fvd.PROTOCOLS.get(protocol.get("name"))
        return deviations({**protocol, **named.settings()}, num_samples, groups)

    fvd.deviations = counts_only


def epoch_frozen():
    from ulvideo.train.data import TrainingData

    set_epoch = TrainingData.set_epoch
    TrainingData.set_epoch = lambda self, epoch: set_epoch(self, 0)


def draws_stream_dropped():
    # the per-example key without its stream: the batch's draws are its first example's
    import ulvideo.diffusion.noise as noise

    sample_seed = noise.sample_seed
    noise.sample_seed = lambda seed, index, stream=0: sample_seed(seed, index)


def generate_decodes_whole_clip():
    import sys

    from ulvideo.ul import UnifiedLatents

    decode = UnifiedLatents.decode

    def whole(self, *args, window=None, tile=None, **kw):
        if sys._getframe(1).f_code.co_name == "generate":  # generate's windows are dropped
            window = tile = None
        return decode(self, *args, window=window, tile=tile, **kw)

    UnifiedLatents.decode = whole


def compile_skips_resblocks():
    import ulvideo.nn

    def transformers_only(module, backend="inductor"):
        for block in module.modules():
            if isinstance(block, ulvideo.nn.TransformerBlock):
                block.compile(dynamic=False, backend=backend)
        return module

    ulvideo.nn.compile_blocks = transformers_only


def positions_transposed():
    # token (t, i, j) of a level gets the row sinusoid of j and the column sinusoid of i
    import ulvideo.models.transformer as transformer

    sincos_3d = transformer.sincos_3d

    def transposed(t, h, w, dim, device=None):
        pos = sincos_3d(t, w, h, dim, device=device).view(t, w, h, dim)
        return pos.transpose(1, 2).reshape(t * h * w, dim)

    transformer.sincos_3d = transposed


def stage2_bias_dropped():
    import ulvideo.train.stages as stages

    base_loss = stages.base_loss
    stages.base_loss = lambda *a, bias=0.0, **kw: base_loss(*a, **kw)


def latent_scale_measured_on_noise():
    # stage 1 records the scale of pure noise (std 1) instead of its latents'
    import ulvideo.train.stages as stages

    stages.measure_latent_scale = lambda network, videos: 1.0


def ul_latents_multiplied():
    # LatentScaling multiplies UL latents by the scale, as it does KL latents, and shifts nothing
    from ulvideo.latent_scale import LatentScaling

    LatentScaling.of = classmethod(lambda cls, scale, regularizer: cls(scale, 0.0))


def context_noised_at_5_5():
    # sampling noises the given context latents at log-SNR 5.5 instead of the encoder's 5
    import sys

    from ulvideo.diffusion import diffuse, randn_like
    from ulvideo.ul import UnifiedLatents

    noisy_latent = UnifiedLatents.noisy_latent

    def off(self, z, rng=None):
        if not sys._getframe(1).f_code.co_filename.endswith("sample.py"):
            return noisy_latent(self, z, rng)
        logsnr = z.new_full((z.shape[0],), self.config.logsnr_latent + 0.5)
        return diffuse(z, logsnr, randn_like(z, rng))

    UnifiedLatents.noisy_latent = off


def bits_count_channels():
    import ulvideo.evaluate.reconstruction as reconstruction

    bits = reconstruction.bits_per_pixel
    reconstruction.bits_per_pixel = lambda nats, frames, height, width: bits(
        nats, 3 * frames, height, width
    )


def demo_rfvd_of_samples():
    import ulvideo.demo as demo

    fvd = demo._fvd
    demo._fvd = lambda config, real, recon, samples: fvd(
        config, real, samples["unconditional"], samples
    )


def resume_forgets_ema():
    # the EMA is left out of the checkpoints: a resumed run restarts it from the trained weights
    from accelerate import Accelerator

    register = Accelerator.register_for_checkpointing
    Accelerator.register_for_checkpointing = lambda self, *objects: register(self, *objects[:-1])


def decode_ignores_windows():
    from ulvideo.ul import UnifiedLatents

    decode = UnifiedLatents.decode
    UnifiedLatents.decode = lambda self, z0, *args, window=None, tile=None, **kw: decode(
        self, z0, *args, **kw
    )


def real_footage_clips_by_video():
    # the test clips grouped by video: a swapped latent is mostly the same video's
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_real_footage

    sys.path.remove(str(ROOT / "benchmarks"))
    clips = bench_real_footage.test_clips
    bench_real_footage.test_clips = lambda videos, frames, per_video: clips(
        videos, frames, per_video
    )[[k * len(videos) + v for v in range(len(videos)) for k in range(per_video)]]


SAMPLING = "tests/test_sample_cli.py::"
SAMPLERS_TESTS = "tests/test_samplers.py::"
FRAME_PREDICTION = [
    SAMPLING + "test_frame_prediction_keeps_context_latents",
    SAMPLING + "test_frame_prediction_conditions_the_base_on_the_context",
]
RECONSTRUCTION_NOISE = (
    "tests/test_eval_reconstruction.py::"
    "test_reconstruction_is_the_models_own_and_keeps_each_videos_noise_across_batches"
)
FVD_CACHE = "tests/test_eval_fvd.py::test_cli_reference_cache_is_keyed_by_the_videos_it_holds"
CONDITIONING = [
    SAMPLING + "test_sampler_is_deterministic_under_a_seed",
    SAMPLING + "test_labels_and_cfg_scale_change_the_samples_under_one_seed",
    "tests/test_registry.py::test_custom_base_samples_with_guidance",
]


# name: (what is broken, the breakage, the tests that must catch it, needs CUDA)
def kl_term_dropped():
    # the KL arm trains its decoder alone: the rate term of stage1_loss is zero (kl_rate, the
    # measurement, is untouched)
    import sys

    import ulvideo.ul as ul

    gaussian_kl = ul.gaussian_kl

    def dropped(mean, logvar):
        kl = gaussian_kl(mean, logvar)
        return kl * 0 if sys._getframe(1).f_code.co_name == "stage1_loss" else kl

    ul.gaussian_kl = dropped


def latent_scale_ignored():
    # sample_z0 returns the base model's scaled latents without dividing by latent_scale
    import ulvideo.sample as sample

    sample_z0 = sample.sample_z0
    sample.sample_z0 = lambda *a, latent_multiplier=1.0, **kw: (
        sample_z0(*a, **kw) * latent_multiplier
    )


def compare_arms_reseeded():
    # compare-latents trains its second arm under another seed
    import dataclasses

    import ulvideo.compare as compare

    probe_config = compare._probe_config
    compare._probe_config = lambda config, arm, knob: probe_config(
        dataclasses.replace(config, seed=config.seed + (arm == "kl")), arm, knob
    )


MUTATIONS = {
    "latent_scale_measured_on_noise": (
        "stage 1's export records latent_scale 1 instead of 1 / the std of its latents",
        latent_scale_measured_on_noise,
        [
            "tests/test_kl.py::test_kl_stage1_and_stage2_export_load_sample_and_resume",
            "tests/test_train.py::test_stage1_learns_then_stage2_learns",
        ],
        False,
    ),
    "ul_latents_multiplied": (
        "UL latents are multiplied by the latent scale (LDM's rule) instead of shifting the draws",
        ul_latents_multiplied,
        [
            "tests/test_train.py::test_stage2_latent_scale_sets_the_multiplier_the_draws_and_the_loss_bias"
        ],
        False,
    ),
    "kl_term_dropped": (
        "the KL arm's loss omits its KL term (the decoder alone trains)",
        kl_term_dropped,
        [
            "tests/test_kl.py::test_kl_weight_scales_the_rate_term_and_zero_leaves_the_decoder_loss_alone",
            "tests/test_kl.py::test_a_larger_kl_weight_lowers_the_rate_after_the_same_training",
        ],
        False,
    ),
    "latent_scale_ignored": (
        "KL sampling forgets to unscale the base model's latents by latent_scale",
        latent_scale_ignored,
        ["tests/test_kl.py::test_kl_sampling_runs_to_the_clean_latent_and_unscales_it"],
        False,
    ),
    "compare_arms_reseeded": (
        "compare-latents trains the KL arm under another seed than the UL arm",
        compare_arms_reseeded,
        ["tests/test_compare.py::test_compare_latents_end_to_end_at_a_tiny_budget"],
        False,
    ),
    "decoder_loss_detached": (
        "noisy_latent on z_clean.detach(): the decoder loss never reaches the encoder",
        detach_decoder_latent,
        ["tests/test_ul.py::test_gradients_reach_every_parameter"],
        False,
    ),
    "context_frames_zero": (
        "the base model is called with context_frames=0",
        lambda: patch_guidance(context_frames=0),
        FRAME_PREDICTION,
        False,
    ),
    "context_not_pinned": (
        "the context latents are never put into the base model's input",
        context_not_pinned,
        FRAME_PREDICTION,
        False,
    ),
    "latent_zeroed": (
        "the encoder's output is multiplied by 0: a constant latent (the stage-1 collapse)",
        latent_zeroed,
        [
            "tests/test_ul.py::test_tiny_model_overfits_one_batch_and_keeps_its_latent_only_under"
            "_the_warm_up[1.0]",
            "tests/test_rd.py::test_the_rate_follows_both_knobs_and_the_latent_carries_the_clip",
        ],
        False,
    ),
    "labels_dropped": (
        "labels are dropped inside sampling",
        lambda: patch_guidance(labels=None),
        [*FRAME_PREDICTION, *CONDITIONING, SAMPLING + "test_demo_end_to_end_smoke"],
        False,
    ),
    "cfg_ignored_by_guidance": (
        "cfg_scale is ignored by the guided denoiser",
        lambda: patch_guidance(cfg_scale=1.0),
        CONDITIONING,
        False,
    ),
    "cfg_ignored_by_sample_z0": (
        "cfg_scale is ignored by sample_z0 / generate",
        cfg_ignored_by_sample_z0,
        CONDITIONING,
        False,
    ),
    "eps_parameterisation": (
        "the network output is read as eps, not v",
        eps_parameterisation,
        [
            "tests/test_networks.py::"
            "test_prior_outputs_x_prediction_consistent_with_v_parameterisation"
        ],
        False,
    ),
    "ddim_noise": (
        "DDIM adds a little noise (0.5% of sigma) from the generator at every step",
        ddim_adds_noise,
        ["tests/test_diffusion.py::test_sampler_recovers_gaussian_statistics"],
        False,
    ),
    "heun_no_correction": (
        "Heun keeps its Euler predictor: the second-order correction is dropped",
        heun_without_correction,
        [SAMPLERS_TESTS + "test_convergence_order[heun]"],
        False,
    ),
    "dpmpp_no_history": (
        "DPM-Solver++(2M) ignores its previous prediction: first order (DDIM)",
        dpmpp_without_history,
        [SAMPLERS_TESTS + "test_convergence_order[dpmpp-2m]"],
        False,
    ),
    "dpmpp_history_shared": (
        "DPM-Solver++(2M)'s history is module state, reused across calls and videos",
        dpmpp_history_shared,
        [SAMPLERS_TESTS + "test_the_multistep_history_belongs_to_one_call_and_one_video"],
        False,
    ),
    "batch_seeded_noise": (
        "one generator per batch, not per sample: samples depend on the batch size",
        batch_seeded_noise,
        [SAMPLING + "test_samples_do_not_depend_on_the_batch_size"],
        False,
    ),
    "host_sync_in_loss": (
        "the losses check their inputs for NaN with a host sync",
        host_sync_in_loss,
        ["tests/test_train.py::test_training_losses_have_no_host_syncs_or_graph_breaks"],
        False,
    ),
    "fvd_means_only": (
        "FVD is the squared distance of the feature means (no covariance term)",
        fvd_means_only,
        ["tests/test_eval_fvd.py::test_compute_fvd_is_the_frechet_distance_of_the_features"],
        False,
    ),
    "reconstruction_no_noise": (
        "reconstruction_metrics skips the log-SNR-5 noising of the latent",
        reconstruction_skips_noise,
        [
            "tests/test_eval_reconstruction.py::"
            "test_evaluate_reconstruction_reports_the_metrics_of_the_reconstructions"
        ],
        False,
    ),
    "stream_cache_dropped": (
        "a streamed encode zero-pads every chunk instead of carrying the causal convs' past",
        stream_cache_dropped,
        ["tests/test_long_videos.py::test_streamed_encode_equals_whole_clip"],
        False,
    ),
    "windows_unweighted": (
        "overlapping decode windows are averaged with equal weights, no ramps",
        windows_unweighted,
        ["tests/test_long_videos.py::test_multidiffusion_has_no_seams_on_a_gaussian_process"],
        False,
    ),
    "windowed_rate_first_chunk": (
        "the windowed bits/pixel codes only the first window's latent frames",
        windowed_rate_first_chunk,
        ["tests/test_long_videos.py::test_windowed_rate_is_the_whole_clips_for_a_local_prior"],
        False,
    ),
    "windows_step_the_whole_clip": (
        "windowed decode blends predictions into clip-sized sums and steps the whole clip",
        windows_step_the_whole_clip,
        ["tests/test_long_videos.py::test_windowed_sampling_holds_one_window_not_the_clip"],
        False,
    ),
    "window_latents_shifted": (
        "a decode window reads the latent frames one frame before its pixels",
        window_latents_shifted,
        ["tests/test_long_videos.py::test_windows_and_tiles_blend_back_to_the_whole_clip"],
        False,
    ),
    "long_generation_forgets": (
        "long generation samples each later window without the previous window's frames",
        long_generation_forgets,
        ["tests/test_long_videos.py::test_each_window_continues_the_last_latent_frames"],
        False,
    ),
    "bf16_loss_off": (
        "the loss under CUDA bf16 autocast is 0.5% off",
        bf16_loss_off,
        ["tests/test_cuda.py"],
        True,
    ),
    "compile_noop": (
        "--compile compiles nothing (the test would compare eager with eager)",
        compile_blocks_noop,
        ["tests/test_train.py::test_compiled_step_equals_eager_step"],
        False,
    ),
    "compiled_drift": (
        "the compiled blocks compute in bf16",
        compiled_blocks_drift,
        ["tests/test_train.py::test_compiled_step_equals_eager_step"],
        False,
    ),
    "resume_restarts_epoch": (
        "a resumed run starts its epoch over (its data position is lost)",
        resume_restarts_epoch,
        ["tests/test_distributed.py::test_resume_two_processes_then_one"],
        False,
    ),
    "data_wait_untimed": (
        "the time spent waiting for the data loader is not measured",
        data_wait_untimed,
        ["tests/test_distributed.py::test_throughput_accounting_is_logged_every_step"],
        False,
    ),
    "mix_weights_ignored": (
        "the --data_mix weights are ignored",
        mix_weights_ignored,
        ["tests/test_data_buckets.py::test_source_and_bucket_shares_match_their_weights"],
        False,
    ),
    "bucket_batch_size_ignored": (
        "a bucket's batch size is ignored",
        bucket_batch_size_ignored,
        [
            "tests/test_data_buckets.py::"
            "test_every_step_is_one_bucket_at_its_batch_size_and_covers_the_epoch"
        ],
        False,
    ),
    "buckets_mixed_in_a_batch": (
        "a batch mixes buckets",
        buckets_mixed_in_a_batch,
        [
            "tests/test_data_buckets.py::"
            "test_real_videos_of_two_aspect_ratios_land_in_their_own_buckets"
        ],
        False,
    ),
    "epoch_not_reaching_the_plan": (
        "the epoch does not reach the bucketed loader",
        epoch_not_reaching_the_plan,
        [
            "tests/test_train_buckets.py::"
            "test_demo_mixture_stage1_and_stage2_train_resume_exactly_and_export"
        ],
        False,
    ),
    "decode_windows_flat": (
        "the decoder's overlapping windows are blended with flat weights (visible seams)",
        decode_windows_flat,
        ["tests/test_long_videos.py::test_decode_windows_crossfade_without_seams"],
        False,
    ),
    "reconstruction_ids_from_zero": (
        "every batch of evaluate_reconstruction reuses the noise of sample ids 0..B-1",
        reconstruction_ids_from_zero,
        [RECONSTRUCTION_NOISE],
        False,
    ),
    "reconstruction_noise_restarts": (
        "reconstruction_metrics restarts each generator: the decoder's draws repeat the latent's",
        reconstruction_noise_restarts,
        [RECONSTRUCTION_NOISE],
        False,
    ),
    "fvd_cache_ignores_max_videos": (
        "the FVD reference cache is keyed without --max-videos",
        lambda: fvd_cache_key(max_videos=False),
        [FVD_CACHE],
        False,
    ),
    "fvd_cache_ignores_file_stats": (
        "the FVD reference cache is keyed by file names only (not their size and mtime)",
        lambda: fvd_cache_key(file_stats=False),
        [FVD_CACHE],
        False,
    ),
    "fvd_settings_unlisted": (
        "FVD reports list no protocol-setting deviation, only sample count and groups",
        fvd_settings_unlisted,
        ["tests/test_eval_fvd.py::test_reports_name_their_protocol_and_list_departures_from_it"],
        False,
    ),
    "epoch_frozen": (
        "the training data's set_epoch always gets epoch 0 (augmentation frozen)",
        epoch_frozen,
        ["tests/test_train.py::test_two_processes_gloo_identical_weights"],
        False,
    ),
    "draws_stream_dropped": (
        "the draws' stream left out of the example key: context coin = label-dropout draw",
        draws_stream_dropped,
        ["tests/test_train.py::test_stage2_context_coin_and_label_dropout_are_independent_draws"],
        False,
    ),
    "generate_decodes_whole_clip": (
        "windowed generate decodes the whole clip at once (window, tile dropped)",
        generate_decodes_whole_clip,
        ["tests/test_long_videos.py::test_generate_and_cli_sample_non_square"],
        False,
    ),
    "compile_skips_resblocks": (
        "--compile compiles the transformer blocks only, not the residual blocks",
        compile_skips_resblocks,
        ["tests/test_train.py::test_compiled_step_equals_eager_step"],
        False,
    ),
    "positions_transposed": (
        "the transformer's positions are transposed (rows read columns' sinusoids)",
        positions_transposed,
        ["tests/test_long_videos.py::test_the_base_models_tokens_carry_their_own_row_and_column"],
        False,
    ),
    "stage2_bias_dropped": (
        "Stage2's bias never reaches the base loss (weight sigmoid(-lambda))",
        stage2_bias_dropped,
        [
            "tests/test_train.py::test_stage2_latent_scale_sets_the_multiplier_the_draws_and_the_loss_bias"
        ],
        False,
    ),
    "context_noised_at_5_5": (
        "sampling noises the context latents at log-SNR 5.5, not 5",
        context_noised_at_5_5,
        [SAMPLING + "test_frame_prediction_keeps_context_latents"],
        False,
    ),
    "bits_count_channels": (
        "bits/pixel divides by the 3 colour channels too",
        bits_count_channels,
        [
            "tests/test_eval_reconstruction.py::"
            "test_bits_per_pixel_is_the_priors_nats_over_ln2_and_the_pixel_grid"
        ],
        False,
    ),
    "demo_rfvd_of_samples": (
        "the demo's rFVD scores unconditional samples, not the reconstructions",
        demo_rfvd_of_samples,
        [SAMPLING + "test_demo_end_to_end_smoke"],
        False,
    ),
    "resume_forgets_ema": (
        "the EMA is not checkpointed: a resumed FSDP run restarts it",
        resume_forgets_ema,
        ["tests/test_distributed.py::test_fsdp_stage1_trains_resumes_and_exports_full_weights"],
        False,
    ),
    "decode_ignores_windows": (
        "decode runs the whole clip whatever window / tile it is given",
        decode_ignores_windows,
        ["tests/test_benchmarks.py::test_long_videos_benchmark_reports_whole_and_windowed"],
        False,
    ),
    "real_footage_clips_by_video": (
        "the real-footage test clips are grouped by video, not interleaved",
        real_footage_clips_by_video,
        ["tests/test_benchmarks.py::test_real_footage_benchmark_trains_on_held_out_real_clips"],
        False,
    ),
}


def apply_and_test(name: str) -> int:
    """In the subprocess: apply the breakage (none for 'none'), then run its tests."""
    import pytest

    if name != "none":
        MUTATIONS[name][1]()
        # the Python processes a test starts get the breakage too: benchmark scripts (on
        # PYTHONPATH, by sitecustomize) and accelerate launches (which set their own PYTHONPATH)
        tests = str(ROOT / "tests")
        apply = (
            f"import sys\nsys.path.insert(0, {tests!r})\nimport mutation_check\n"
            f"sys.path.remove({tests!r})\nmutation_check.MUTATIONS[{name!r}][1]()\n"
        )
        hook = Path(tempfile.mkdtemp(prefix="mutation_"))
        (hook / "sitecustomize.py").write_text(apply)
        os.environ["PYTHONPATH"] += os.pathsep + str(hook)
        sys.path.insert(0, tests)
        import launch

        launch.TRAIN_SCRIPT = apply + launch.TRAIN_SCRIPT
    tests = sorted({t for n in NAMES for t in MUTATIONS[n][2]}) if name == "none" else None
    return pytest.main(["-q", "-x", "-p", "no:cacheprovider", *(tests or MUTATIONS[name][2])])


def run(name: str) -> tuple[int, float]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}  # this checkout's code, not an installed copy
    env.setdefault("OMP_NUM_THREADS", "1")
    began = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--apply", name, *NAMES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode not in (0, 1):
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    return proc.returncode, time.time() - began, failed


def main() -> int:
    import torch

    cuda = torch.cuda.is_available()
    baseline, seconds, _ = run("none")
    print(f"unbroken code: tests {'pass' if baseline == 0 else 'FAIL'} ({seconds:.0f} s)")
    if baseline != 0:
        print("the matching tests must pass on unbroken code first", file=sys.stderr)
        return 1
    rows, missed = [], []
    for name in NAMES:
        what, _, tests, needs_cuda = MUTATIONS[name]
        if needs_cuda and not cuda:
            rows.append((name, "skipped (no CUDA)", what))
            continue
        rc, seconds, failed = run(name)
        verdict = {0: "NOT CAUGHT", 1: "caught"}.get(rc, f"ERROR (pytest exit {rc})")
        if rc != 1:
            missed.append(name)
        by = f"; failed: {failed[0].split('::')[-1]}" if failed else ""
        rows.append((name, f"{verdict} ({seconds:.0f} s)", what + by))
    width = max(len(r[0]) for r in rows)
    print(f"{'breakage':<{width}}  {'result':<18}  what is broken")
    for name, verdict, what in rows:
        print(f"{name:<{width}}  {verdict:<18}  {what}")
    if missed:
        print(f"not caught: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    apply = args[:2] if args[:1] == ["--apply"] else None
    NAMES = (args[2:] if apply else args) or list(MUTATIONS)
    unknown = [n for n in NAMES if n not in MUTATIONS]
    if unknown:
        sys.exit(f"unknown breakage(s) {unknown}; known: {', '.join(MUTATIONS)}")
    sys.exit(apply_and_test(apply[1]) if apply else main())
