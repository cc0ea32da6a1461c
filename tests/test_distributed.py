"""Past one process: FSDP trains both stages on 2 CPU processes and exports full weights,
stage 2 gives the 1-process loss curve at the same global batch, and a run resumes on another
number of processes at the same example with the same learning rate."""

import pytest
import torch
from launch import ROOT, launch_training, rank_info
from safetensors import safe_open
from test_train import kill_after_first_checkpoint, tiny

from ulvideo.pipeline import Pipeline
from ulvideo.sample import SamplingConfig
from ulvideo.train import train
from ulvideo.train.checkpoint import complete_checkpoints, read_meta
from ulvideo.train.metrics import read_metrics

GLOBAL_BATCH = 4
STEPS = 4


@pytest.fixture(scope="module")
def stage1_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage1")
    train(tiny(tmp, "s1", max_steps=1, checkpoint_every=1))
    return tmp / "s1" / "final"


def stage2(tmp_path, name, stage1_export, processes: int, **overrides):
    """The tiny stage-2 run of these tests, at a global batch of 4 on `processes` processes."""
    settings = dict(
        stage=2,
        stage1_checkpoint=str(stage1_export),
        batch_size=GLOBAL_BATCH // processes,
        max_steps=STEPS,
        checkpoint_every=2,
        class_conditional=True,
        context_frames=1,
        context_prob=0.5,
    )
    return tiny(tmp_path, name, **{**settings, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory, stage1_export):
    """One process, uninterrupted: the run the others must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    train(stage2(tmp, "one", stage1_export, processes=1))
    return tmp / "one"


def curve(run_dir) -> dict[int, tuple[float, float]]:
    return {r["step"]: (r["loss"], r["lr"]) for r in read_metrics(run_dir) if "loss" in r}


def assert_same_curve(run_dir, reference_dir):
    got, want = curve(run_dir), curve(reference_dir)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:
        # the learning rate is the schedule's at that step; the loss equal up to float rounding
        assert got[step][1] == pytest.approx(want[step][1], rel=1e-12), step
        assert got[step][0] == pytest.approx(want[step][0], rel=1e-5), (step, got, want)


def tensors(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def assert_close_weights(got: dict, want: dict, rel: float = 2e-3):
    """Equal up to float rounding, which Adam amplifies where a gradient is near 0: each tensor
    within `rel` of its norm (measured: at most 6e-4 after 4 steps; the 4 updates moved the
    weights by about 10%)."""
    for k in want:
        assert float((got[k] - want[k]).norm()) <= rel * float(want[k].norm()), k


@pytest.mark.slow
def test_fsdp_stage2_equals_one_process_resumes_and_exports_full_weights(
    tmp_path, stage1_export, reference
):
    config = stage2(tmp_path, "fsdp", stage1_export, processes=2)
    runs = [{"config": config, "die_after_checkpoint": True}, {"config": config}]
    launch_training(tmp_path, runs, config="fsdp_cpu.yaml")
    run = tmp_path / "fsdp"
    assert [r["distributed_type"] for r in rank_info(run)] == ["DistributedType.FSDP"] * 2
    # sharded checkpoints: one file per process for the model and the optimizer
    first = complete_checkpoints(run)[0]
    assert sorted(p.name for p in (first / "pytorch_model_fsdp_0").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert read_meta(first)["data"]["examples_seen"] == 2 * GLOBAL_BATCH
    assert_same_curve(run, reference)  # killed at step 2, resumed: still the 1-process curve
    # the final export: full, unsharded safetensors like the 1-process run's, with its EMA weights
    for part in ("autoencoder", "base"):
        got = tensors(run / "final" / part / "model.safetensors")
        want = tensors(reference / "final" / part / "model.safetensors")
        assert {k: (v.shape, v.dtype) for k, v in got.items()} == {
            k: (v.shape, v.dtype) for k, v in want.items()
        }
        assert_close_weights(got, want)
    pipeline = Pipeline.from_pretrained(run / "final")  # in this one process
    sampling = SamplingConfig(base_steps=2, decoder_steps=2)
    video = pipeline.generate(1, 5, 16, sampling, labels=torch.tensor([3]))
    assert video.shape == (1, 3, 5, 16, 16) and torch.isfinite(video).all()


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return tensors(run_dir / "final" / "base" / "model.safetensors")


@pytest.mark.slow
def test_resume_two_processes_then_one(tmp_path, stage1_export, reference):
    two = stage2(tmp_path, "run", stage1_export, processes=2)
    launch_training(tmp_path, [{"config": two, "die_after_checkpoint": True}])
    (checkpoint,) = complete_checkpoints(tmp_path / "run")
    meta = read_meta(checkpoint)
    assert meta["world_size"] == 2 and meta["step"] == 2
    assert meta["data"] == {"epoch": 0, "epoch_examples": 8, "examples_seen": 8, "epoch_batches": 2}
    result = train(stage2(tmp_path, "run", stage1_export, processes=1))  # batch 2 x 2 -> 4 x 1
    assert result.accelerator.num_processes == 1 and result.step == STEPS
    assert_same_curve(tmp_path / "run", reference)
    assert_close_weights(final_weights(tmp_path / "run"), final_weights(reference))


@pytest.mark.slow
def test_resume_one_process_then_two(tmp_path, stage1_export, reference, monkeypatch):
    kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(stage2(tmp_path, "run", stage1_export, processes=1))
    monkeypatch.undo()
    assert read_meta(complete_checkpoints(tmp_path / "run")[0])["world_size"] == 1
    launch_training(tmp_path, [{"config": stage2(tmp_path, "run", stage1_export, processes=2)}])
    assert [r["world"] for r in rank_info(tmp_path / "run")] == [2, 2]
    assert_same_curve(tmp_path / "run", reference)
    assert_close_weights(final_weights(tmp_path / "run"), final_weights(reference))
    assert {r["world_size"] for r in read_metrics(tmp_path / "run") if "loss" in r} == {1, 2}


@pytest.mark.slow
def test_resume_refuses_a_global_batch_that_splits_the_position(tmp_path, stage1_export):
    train(stage2(tmp_path, "run", stage1_export, processes=1, max_steps=1, checkpoint_every=1))
    with pytest.raises(ValueError, match="4 examples into epoch 0, not a whole number of global"):
        train(stage2(tmp_path, "run", stage1_export, processes=1, batch_size=3, max_steps=2))


@pytest.mark.slow
def test_fsdp_stage1_trains_resumes_and_exports_full_weights(tmp_path, stage1_export):
    config = tiny(tmp_path, "fsdp", max_steps=2, checkpoint_every=1, batch_size=2)
    whole = tiny(tmp_path, "whole", max_steps=2, checkpoint_every=1, batch_size=2)
    launch_training(
        tmp_path,
        [{"config": config, "die_after_checkpoint": True}, {"config": config}],
        config="fsdp_cpu.yaml",
    )
    launch_training(tmp_path, [{"config": whole}], config="fsdp_cpu.yaml")  # a run ends the group
    run = tmp_path / "fsdp"
    ranks = rank_info(run)
    assert [r["distributed_type"] for r in ranks] == ["DistributedType.FSDP"] * 2
    assert ranks[0]["ema_sha256"] == ranks[1]["ema_sha256"]  # one full EMA, not two shards
    assert [read_meta(c)["step"] for c in complete_checkpoints(run)] == [1, 2]
    # killed after step 1 and resumed, the run is the uninterrupted one: the same losses, each
    # process's shard of the weights and its full EMA bit for bit, and the same export
    assert curve(run) == curve(tmp_path / "whole") and sorted(curve(run)) == [1, 2]
    for resumed, uninterrupted in zip(ranks, rank_info(tmp_path / "whole"), strict=True):
        for key in ("network_sha256", "ema_sha256"):
            assert resumed[key] == uninterrupted[key], key
    got = tensors(run / "final" / "autoencoder" / "model.safetensors")
    again = tensors(tmp_path / "whole" / "final" / "autoencoder" / "model.safetensors")
    assert got.keys() == again.keys() and all(torch.equal(got[k], again[k]) for k in got)
    # full weights, not a process's shard: those of the 1-process run from the same
    # initialisation (stage1_export, 1 step) but for the 1 + 2 Adam steps between them, each
    # moving a weight by at most ~lr (exactly lr at the first step; the EMA averages them)
    want = tensors(stage1_export / "autoencoder" / "model.safetensors")
    assert {k: (v.shape, v.dtype) for k, v in got.items()} == {
        k: (v.shape, v.dtype) for k, v in want.items()
    }
    apart = max(float((got[k] - want[k]).abs().max()) for k in want)
    assert apart <= 3 * config.lr, apart
    ul = Pipeline.from_pretrained(run / "final").autoencoder  # in this one process
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        recon = ul.reconstruct(video, steps=2)
    assert recon.shape == video.shape and torch.isfinite(recon).all()


def plugin_env(config_file: str) -> tuple:
    """(launch arguments, environment) that `accelerate launch --config_file <config>` gives the
    processes it starts, built by accelerate's own launch code."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = ROOT / "recipes" / "configs" / config_file
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate's launch_command does before its DeepSpeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def test_deepspeed_config_builds_its_accelerate_plugin(monkeypatch):
    # DeepSpeed does not run through accelerate on CPU processes (docs/TRAINING.md, "From one GPU to
    # many nodes"): the shipped config is checked as far as accelerate's plugin
    from accelerate.utils import DeepSpeedPlugin

    args, env = plugin_env("deepspeed_zero2.yaml")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = DeepSpeedPlugin().deepspeed_config
    assert (args.num_processes, args.mixed_precision) == (8, "bf16")
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "none"
    assert config["gradient_clipping"] == 1.0 and config["gradient_accumulation_steps"] == 1


@pytest.mark.parametrize("config_file,processes", [("fsdp.yaml", 8), ("fsdp_cpu.yaml", 2)])
def test_fsdp_configs_shard_transformer_blocks(monkeypatch, config_file, processes):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    from ulvideo.models import base_preset, build_base
    from ulvideo.nn.transformer import TransformerBlock

    args, env = plugin_env(config_file)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert args.num_processes == processes and plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    with torch.device("meta"):
        model = build_base(base_preset("tiny", latent_channels=8))
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = [m for m in model.modules() if policy(m)]
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    assert wrapped == blocks and len(blocks) > 1  # each block its own shard unit


@pytest.mark.slow
def test_throughput_accounting_is_logged_every_step(tmp_path, monkeypatch):
    import time

    from accelerate import Accelerator

    from ulvideo.data.demo import MovingDigits
    from ulvideo.models import autoencoder_preset, training_flops_per_example

    item = MovingDigits.__getitem__
    monkeypatch.setattr(
        MovingDigits, "__getitem__", lambda self, i: time.sleep(0.02) or item(self, i)
    )
    tracked = []  # what the trackers (TensorBoard, when installed) receive
    log = Accelerator.log
    monkeypatch.setattr(
        Accelerator, "log", lambda self, v, step: tracked.append(v) or log(self, v, step)
    )
    train(tiny(tmp_path, max_steps=3, peak_tflops=0.5, checkpoint_every=100))
    records = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    cfg = autoencoder_preset("tiny", resolution=16)
    flops = training_flops_per_example(cfg, "stage1", 5, 16, 16)
    tokens = (1 + 4 // cfg.temporal_downsample) * (16 // cfg.spatial_downsample) ** 2  # per clip
    for r in records:
        assert r["tokens_per_s"] == pytest.approx(r["examples_per_s"] * tokens)
        assert r["model_tflops_per_s"] == pytest.approx(r["examples_per_s"] * flops / 1e12)
        assert r["mfu"] == pytest.approx(r["model_tflops_per_s"] / 0.5)  # 1 process of 0.5 TFLOP/s
        assert r["data_wait_s"] >= 4 * 0.02  # 4 clips of 20 ms per step
        assert 0 < r["data_wait_fraction"] <= 1
        assert r["peak_memory_gib/rank0"] > 0.05  # this process's peak resident set
        assert "peak_memory_gib/rank1" not in r
    assert all(
        {"mfu", "data_wait_s", "peak_memory_gib/rank0"} <= set(v) for v in tracked if "loss" in v
    )
    assert len([v for v in tracked if "loss" in v]) == 3
    with pytest.raises(ValueError, match="peak_tflops must be > 0"):
        train(tiny(tmp_path, "bad", peak_tflops=0.0))


@pytest.mark.slow
def test_fsdp_trains_the_kl_arm_and_exports_its_full_weights(tmp_path):
    """The KL arm under FSDP on 2 processes: one full EMA on both ranks, and an export whose KL
    encoder holds its full doubled head (mean and log-variance) and measures its rate."""
    model = {"regularizer": "kl", "kl_weight": 1.0}
    config = tiny(tmp_path, "kl", max_steps=2, checkpoint_every=2, batch_size=2, model=model)
    launch_training(tmp_path, [{"config": config}], config="fsdp_cpu.yaml")
    ranks = rank_info(tmp_path / "kl")
    assert [r["distributed_type"] for r in ranks] == ["DistributedType.FSDP"] * 2
    assert ranks[0]["ema_sha256"] == ranks[1]["ema_sha256"]
    ul = Pipeline.from_pretrained(tmp_path / "kl" / "final").autoencoder
    assert ul.config.regularizer == "kl" and ul.prior is None
    fresh = type(ul)(ul.config)  # the same architecture: every full shape, no shard
    got = tensors(tmp_path / "kl" / "final" / "autoencoder" / "model.safetensors")
    assert {k: v.shape for k, v in got.items()} == {
        k: v.shape for k, v in fresh.state_dict().items()
    }
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        mean, logvar = ul.posterior(video)
        assert mean.shape == logvar.shape and torch.isfinite(ul.kl_rate(video)).all()
        assert ul.reconstruct(video, steps=2).shape == video.shape
