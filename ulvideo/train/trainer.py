"""The Accelerate training loop for both UL stages (k-diffusion / DiT style: one screen per step)."""

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..diffusion.noise import TrainingDraws
from ..errors import run_main
from ..nn import compile_blocks, enable_activation_checkpointing, set_attention_backend
from .checkpoint import prune_checkpoints, read_meta, resolve_resume, save_checkpoint
from .config import TrainConfig, parse_config
from .data import build_training_data, latent_tokens
from .distributed import enable_cpu_fsdp, full_tensor
from .ema import EMA
from .latents import latent_logsnr_shift
from .metrics import BucketMeans, MetricsLog, Throughput
from .stages import Stage1, Stage2, load_stage1, measure_latent_scale
from .trackers import PROJECT, tracker_config, trackers_for


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class TrainResult:
    step: int
    network: torch.nn.Module  # the trained (unwrapped) network
    ema: torch.nn.Module
    accelerator: Accelerator
    nonfinite_steps: int
    output_dir: Path


def lr_lambda(config: TrainConfig):
    # linear warm-up, then cosine decay to lr * min_lr_ratio at max_steps
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(
            1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        )
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return factor


def build_optimizer(parameters, config: TrainConfig):
    """The trainer's AdamW and its learning-rate schedule (lr_lambda), stepped once per step."""
    optimizer = torch.optim.AdamW(
        parameters,
        lr=config.lr,
        betas=tuple(config.betas),
        weight_decay=config.weight_decay,
        fused=True,  # one kernel for all tensors: 4x faster than the per-tensor loop on a CPU
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))


def latent_warmup(config: TrainConfig, step: int) -> float:
    """The stage-1 latent warm-up after `step` optimizer steps: 1 while holding, then a linear ramp
    down to 0 (plain UL)."""
    hold, ramp = config.latent_warmup_steps()
    if step < hold:
        return 1.0
    return max(0.0, 1.0 - (step - hold + 1) / max(1, ramp))


@dataclass
class DataPosition:
    """Where a run is in its data, counted in examples (all processes together), so that a run
    resumes at the same example on any number of processes: `epoch`, `epoch_examples` into it and
    `examples_seen` in all (which keys stage 2's per-example randomness)."""

    epoch: int = 0
    epoch_examples: int = 0
    examples_seen: int = 0
    epoch_batches: int = 0  # global batches into the epoch (a bucketed run's batches vary in size)

    def advance(self, examples: int) -> None:
        self.epoch_examples += examples
        self.examples_seen += examples
        self.epoch_batches += 1

    def next_epoch(self) -> None:
        self.epoch, self.epoch_examples, self.epoch_batches = self.epoch + 1, 0, 0

    def plan_steps_to_skip(self, steps_per_epoch: int) -> int:
        """A bucketed run's batches of the current epoch already seen (its BatchPlan's steps)."""
        if self.epoch_batches >= steps_per_epoch:
            self.next_epoch()
        return self.epoch_batches

    def batches_to_skip(self, global_batch: int, batches_per_epoch: int) -> int:
        """Per-process batches of the current epoch already seen; an epoch already seen whole
        (a run with fewer processes drops fewer examples at its end) moves on to the next."""
        if self.epoch_examples % global_batch:
            raise ValueError(
                f"the checkpoint is {self.epoch_examples} examples into epoch {self.epoch}, not a "
                f"whole number of global batches of {global_batch} (batch_size x processes): "
                "resume with a batch_size and process count whose product divides it, e.g. the "
                "global batch of the run that wrote it"
            )
        skip = self.epoch_examples // global_batch
        if skip >= batches_per_epoch:
            self.next_epoch()
            return 0
        return skip

    @classmethod
    def from_meta(cls, meta: dict, batches_per_epoch: int, grad_accum: int, global_batch: int):
        """The position a checkpoint recorded; for one written before positions were recorded,
        derived from its step (valid on the number of processes that wrote it)."""
        if "data" in meta:
            return cls(**meta["data"])
        # an epoch is ceil(batches / grad_accum) steps: accelerate steps on the last, partial group
        epoch, step_in_epoch = divmod(meta["step"], math.ceil(batches_per_epoch / grad_accum))
        seen = meta["step"] * grad_accum * global_batch
        return cls(epoch, step_in_epoch * grad_accum * global_batch, seen)


def stage1_model_config(config: TrainConfig):
    """The stage-1 AutoencoderConfig: the preset, at the run's resolution, with `config.model`
    overrides."""
    from ..models import autoencoder_preset

    return autoencoder_preset(config.preset, **{"resolution": config.resolution, **config.model})


def check_clip_shape(config: TrainConfig, stage1) -> None:
    """Frame count and size against the model, before any data or model is built."""
    from ..models import check_video_shape

    model_config = stage1_model_config(config) if config.stage == 1 else stage1.config
    for bucket in config.bucket_table():
        name = f"bucket {bucket.name}" if config.bucketed else "clip"
        check_video_shape((1, 3, *bucket.shape), model_config, name)


def effective_precision(config: TrainConfig, on_cpu: bool) -> str:
    """The run's mixed precision: bf16 falls back to fp32 on a CPU unless `cpu_bf16` forces it."""
    if on_cpu and config.mixed_precision == "bf16" and not config.cpu_bf16:
        print(
            "warning: --mixed_precision bf16 runs in fp32 on this CPU (bf16 autocast is ~28x slower "
            "here); pass --cpu_bf16 true to keep bf16"
        )
        return "no"
    return config.mixed_precision


def build_stage(config: TrainConfig, data, stage1, resume_from=None):
    if config.stage == 1:
        return Stage1(stage1_model_config(config))
    if data.from_latents:
        data.dataset.check_encoder(stage1)  # before the stage drops the encoder
    scale = None
    if stage1.config.regularizer == "kl" and "latent_scale" not in config.model:
        scale = stage2_latent_scale(data, stage1, resume_from)
    return Stage2(
        config, stage1, data.num_classes, keep_encoder=not data.from_latents, latent_scale=scale
    )


def stage2_latent_scale(data, stage1, resume_from) -> float:
    """LDM's scaling_factor for stage 2 on KL latents: the resumed checkpoint's, or measured on
    the training latents by the main process and sent to every rank."""
    if resume_from is not None:
        from ..models import BaseConfig
        from ..pipeline import BASE
        from ..serialization import read_config

        return read_config(Path(resume_from) / "export" / BASE, BASE, BaseConfig).latent_scale
    scale = measure_latent_scale(data, stage1) if PartialState().is_main_process else None
    return broadcast_object_list([scale])[0]


def train_main(cls: type[TrainConfig] = TrainConfig, argv: list[str] | None = None) -> int:
    """A recipe's command line: `cls` from the flags, then train; user errors are one line."""
    return run_main(Path(sys.argv[0]).name, lambda argv: train(parse_config(cls, argv)), argv)


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a training run described by `config`."""
    config.validate()
    stage1 = load_stage1(config.stage1_checkpoint) if config.stage == 2 else None  # read once
    check_clip_shape(config, stage1)
    out = Path(config.output_dir)
    # a second run in one process (the demo, tests) may change mixed precision: accelerate keeps
    # its settings in a singleton, so clear them (the distributed PartialState is kept)
    AcceleratorState._reset_state()
    on_cpu = config.cpu or not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=on_cpu,
        mixed_precision=effective_precision(config, on_cpu),
        gradient_accumulation_steps=config.grad_accum,
        log_with=trackers_for(config.report_to) or None,
        project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    enable_cpu_fsdp(accelerator)
    # before anything is built, the main process verifies the checkpoint to resume from (moving
    # aside any newer one that fails); every rank loads the one it chose
    resume_from = None
    if accelerator.is_main_process:
        resume_from = resolve_resume(out, config.resume, warn=accelerator.print)
    resume_from = broadcast_object_list([resume_from])[0]
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16":
        # oneDNN's bf16 Conv3d gives wrong weight gradients on 2-frame inputs (torch 2.13, CPU)
        torch.backends.mkldnn.enabled = False
    set_seed(config.seed)  # identical initialisation on every rank
    with accelerator.main_process_first():  # rank 0 builds and caches the dataset index first
        data = build_training_data(config)
    stage = build_stage(config, data, stage1, resume_from)
    del stage1  # stage 2 keeps the encoder at most
    # shards have no evaluation split: the main process checks their scale here, once
    if config.stage == 2 and data.from_latents and accelerator.is_main_process:
        shift = latent_logsnr_shift(config.latents_dir, max_shards=1)
        warning = stage.scale_warning(shift - 2 * math.log(stage.base_config.latent_scale))
        if warning:
            print(warning)
    set_attention_backend(stage.network, config.attention_backend)
    enable_activation_checkpointing(stage.network, config.activation_checkpointing)
    if config.compile:
        compile_blocks(stage.network)
    if config.stage == 2:
        stage.move_encoder(accelerator.device)
    eval_batches = data.eval_batches(stage, accelerator, size=min(8, config.batch_size))
    # the EMA copies the full network before FSDP (in prepare) shards it
    ema = EMA(stage.network.to(accelerator.device), config.ema_decay)
    optimizer, scheduler = build_optimizer(stage.network.parameters(), config)
    bucketed = data.weights is not None  # a mixture, or latent shards per bucket
    if bucketed:  # every process's batch of a step is the same bucket: not sharded
        loader = data.bucket_loader(accelerator, config.num_workers)
        stage, optimizer = accelerator.prepare(stage, optimizer)
        batches_per_epoch = loader.plan.steps_per_epoch
    else:
        loader = DataLoader(
            data.dataset,
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(config.seed),
        )
        stage, optimizer, loader = accelerator.prepare(stage, optimizer, loader)
        batches_per_epoch = len(loader)
    unwrapped = accelerator.unwrap_model(stage)
    accelerator.register_for_checkpointing(scheduler, ema)

    if batches_per_epoch == 0:
        raise ValueError(
            f"the dataset has fewer examples than batch_size x processes ({config.batch_size})"
        )
    global_batch = config.batch_size * accelerator.num_processes
    step, position = 0, DataPosition()
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        meta = read_meta(resume_from)
        step = meta["step"]
        position = DataPosition.from_meta(meta, batches_per_epoch, config.grad_accum, global_batch)
        accelerator.print(
            f"resumed from {resume_from} at step {step}, {position.examples_seen} examples seen"
        )
    else:
        set_seed(config.seed, device_specific=True)  # per-rank noise (stage 1) from here on
    log = MetricsLog(accelerator, out, resume_step=step)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers(
            PROJECT,
            config=tracker_config(config.to_dict()),
            init_kwargs={"wandb": {"name": out.name, "dir": str(out)}},
        )

    nonfinite_total = nonfinite_run = 0
    clip_shape = (config.frames, config.resolution, config.resolution)
    shapes = [b.shape for b in data.dataset.buckets] if bucketed else [clip_shape]
    flops = {shape: unwrapped.training_flops(*shape) for shape in shapes}  # counted once: slow
    throughput = Throughput(
        accelerator,
        {shape: latent_tokens(unwrapped, *shape) for shape in shapes}.__getitem__,
        flops.__getitem__,
        config.peak_tflops,
        per_bucket=bucketed,
    )
    bucket_means = BucketMeans(accelerator) if bucketed else None
    bar = tqdm(
        total=config.max_steps, initial=step, disable=not accelerator.is_main_process, desc="train"
    )
    throughput.start(step)
    while step < config.max_steps:
        if bucketed:
            epoch_loader = loader.epoch(
                position.epoch, position.plan_steps_to_skip(batches_per_epoch)
            )
        else:
            skip = position.batches_to_skip(global_batch, batches_per_epoch)
            loader.set_epoch(position.epoch)
            data.set_epoch(position.epoch)
            epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in throughput.batches(epoch_loader):
            if config.stage == 1:
                unwrapped.warmup = latent_warmup(config, step)
            rows = len(batch[1])  # a bucket's batch size, else batch_size
            shape = loader.shape if bucketed else clip_shape
            draws = TrainingDraws(
                config.seed,
                position.examples_seen,
                rows * accelerator.num_processes,
                accelerator.process_index * rows,
                rows,
            )
            position.advance(rows * accelerator.num_processes)
            with accelerator.accumulate(stage):
                inputs, labels = data.prepare_batch(batch, unwrapped, accelerator)
                loss, logs = stage(inputs, labels, *((draws,) if config.stage == 2 else ()))
                accelerator.backward(loss)
                if bucket_means is not None:
                    bucket_means.add(shape, {"loss": loss, **logs})
                if not accelerator.sync_gradients:
                    throughput.step_done(shape, rows * accelerator.num_processes)
                    continue
                grad_norm = accelerator.clip_grad_norm_(stage.parameters(), config.clip_grad)
                # one decision on every rank: the loss summed over ranks, and the global grad norm
                total_loss = accelerator.reduce(loss.detach().float(), reduction="sum")
                finite = bool(torch.isfinite(total_loss) and torch.isfinite(grad_norm))
                if finite or accelerator.scaler is not None:
                    optimizer.step()  # fp16: the GradScaler skips inf gradients and lowers its scale
                if finite:
                    nonfinite_run = 0
                else:
                    nonfinite_total, nonfinite_run = nonfinite_total + 1, nonfinite_run + 1
                    accelerator.print(f"step {step}: non-finite loss or gradient, step skipped")
                optimizer.zero_grad(set_to_none=True)
            if nonfinite_run > config.max_nonfinite:
                raise NonFiniteLossError(
                    f"{nonfinite_run} consecutive steps had a non-finite loss or gradient (limit "
                    f"max_nonfinite={config.max_nonfinite}); lower the learning rate or check the data. "
                    f"The last good checkpoint in {out} is kept."
                )
            if finite:
                scheduler.step()
                ema.update(unwrapped.network)
            step += 1
            bar.update(1)
            throughput.step_done(shape, rows * accelerator.num_processes)

            if step % config.log_every == 0 or step == config.max_steps:
                record = {
                    "loss": _mean_across(accelerator, loss),
                    **{k: _mean_across(accelerator, v) for k, v in logs.items()},
                    "grad_norm": float(full_tensor(grad_norm)),
                    "lr": scheduler.get_last_lr()[0],
                    **throughput.record(step),
                    "examples_seen": position.examples_seen,
                    "nonfinite_skipped": nonfinite_total,
                    "world_size": accelerator.num_processes,
                    **(bucket_means.record() if bucket_means is not None else {}),
                }
                log.log(step, record)
                bar.set_postfix(loss=f"{record['loss']:.4g}")
            if step % config.eval_every == 0 or step == config.max_steps:
                evaluations = {}
                for bucket, eval_batch in (
                    eval_batches.items() if accelerator.is_main_process else ()
                ):
                    with torch.random.fork_rng(devices=_cuda_devices(accelerator)):  # keep RNG
                        evaluation = unwrapped.evaluate(
                            ema.model, *eval_batch, config.eval_decode_steps
                        )
                    log.log_clips(step, evaluation.pop("videos", {}))
                    prefix = f"bucket/{bucket}/" if bucket else ""
                    evaluations.update({prefix + k: v for k, v in evaluation.items()})
                    warm = max(config.warmup_steps, sum(config.latent_warmup_steps()))
                    warning = (
                        unwrapped.evaluation_warning(evaluation, step) if step > warm else None
                    )
                    if warning:
                        accelerator.print(f"[bucket {bucket}] {warning}" if bucket else warning)
                if evaluations:
                    log.log(step, evaluations)
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                meta = {
                    "config": config.to_dict(),
                    "stage": config.stage,
                    "world_size": accelerator.num_processes,
                    "data": dataclasses.asdict(position),
                }
                save_checkpoint(
                    accelerator,
                    out,
                    step,
                    meta,
                    lambda tmp: unwrapped.export(ema.model, tmp / "export", final=False),
                )
                if accelerator.is_main_process:
                    prune_checkpoints(out, config.keep_last)
            if step >= config.max_steps:
                break
        else:
            position.next_epoch()
    bar.close()
    if accelerator.is_main_process:
        unwrapped.export(ema.model, out / "final", final=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(step, unwrapped.network, ema.model, accelerator, nonfinite_total, out)


def _mean_across(accelerator, value) -> float:
    value = torch.as_tensor(value, dtype=torch.float32, device=accelerator.device).detach()
    return float(accelerator.reduce(value, reduction="mean"))


def _cuda_devices(accelerator) -> list:
    return [accelerator.device] if accelerator.device.type == "cuda" else []
