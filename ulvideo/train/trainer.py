"""The Accelerate training loop for both UL stages (k-diffusion / DiT style: one screen per step)."""

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
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
from .metrics import BucketMeans, MetricsLog, Throughput
from .stages import STAGES
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
        warmup = config.lr_warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, config.max_steps - warmup))
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


def effective_precision(config: TrainConfig, on_cpu: bool) -> str:
    """The run's mixed precision: bf16 falls back to fp32 on a CPU unless `cpu_bf16` forces it."""
    if on_cpu and config.mixed_precision == "bf16" and not config.cpu_bf16:
        print(
            "warning: --mixed_precision bf16 runs in fp32 on this CPU (bf16 autocast is ~28x slower "
            "here); pass --cpu_bf16 true to keep bf16"
        )
        return "no"
    return config.mixed_precision


def build_accelerator(config: TrainConfig) -> Accelerator:
    # a second run in one process (the demo, tests) may change mixed precision: accelerate keeps
    # its settings in a singleton, so clear them (the distributed PartialState is kept)
    AcceleratorState._reset_state()
    on_cpu = config.cpu or not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=on_cpu,
        mixed_precision=effective_precision(config, on_cpu),
        gradient_accumulation_steps=config.grad_accum,
        log_with=trackers_for(config.report_to) or None,
        project_dir=config.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    enable_cpu_fsdp(accelerator)
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16":
        # oneDNN's bf16 Conv3d gives wrong weight gradients on 2-frame inputs (torch 2.13, CPU)
        torch.backends.mkldnn.enabled = False
    return accelerator


def checkpoint_to_resume(accelerator, config: TrainConfig):
    """The main process verifies the checkpoint to resume from (moving aside any newer one that
    fails); every rank gets the one it chose (or None)."""
    chosen = None
    if accelerator.is_main_process:
        chosen = resolve_resume(Path(config.output_dir), config.resume, warn=accelerator.print)
    return broadcast_object_list([chosen])[0]


class RunBatches:
    """A run's batches from a DataPosition on: one bucket per step on every process (a mixture or
    latent shards per bucket: not sharded), else a shuffled DataLoader sharded by accelerate."""

    def __init__(self, data, config: TrainConfig, accelerator, stage, optimizer):
        self.data, self.accelerator = data, accelerator
        self.bucketed = data.weights is not None
        self.clip_shape = (config.frames, config.resolution, config.resolution)
        if self.bucketed:
            self.loader = data.bucket_loader(accelerator, config.num_workers)
            self.prepared = accelerator.prepare(stage, optimizer)
            self.steps_per_epoch = self.loader.plan.steps_per_epoch
            self.shapes = [b.shape for b in data.dataset.buckets]
        else:
            loader = DataLoader(
                data.dataset,
                batch_size=config.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=config.num_workers,
                generator=torch.Generator().manual_seed(config.seed),
            )
            *self.prepared, self.loader = accelerator.prepare(stage, optimizer, loader)
            self.steps_per_epoch = len(self.loader)
            self.shapes = [self.clip_shape]
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the dataset has fewer examples than batch_size x processes ({config.batch_size})"
            )
        self.global_batch = config.batch_size * accelerator.num_processes

    def epoch(self, position: DataPosition):
        """(batch, its clip shape) of the position's epoch, from where it stands."""
        if self.bucketed:
            skip = position.plan_steps_to_skip(self.steps_per_epoch)
            for batch in self.loader.epoch(position.epoch, skip):
                yield batch, self.loader.shape
            return
        skip = position.batches_to_skip(self.global_batch, self.steps_per_epoch)
        self.loader.set_epoch(position.epoch)
        self.data.set_epoch(position.epoch)
        loader = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
        for batch in loader:
            yield batch, self.clip_shape


@dataclass
class Run:
    """What the phases of a training run share."""

    config: TrainConfig
    accelerator: Accelerator
    stage: torch.nn.Module  # unwrapped
    ema: EMA
    scheduler: torch.optim.lr_scheduler.LRScheduler
    log: MetricsLog
    throughput: Throughput
    bucket_means: BucketMeans | None
    eval_batches: dict
    position: DataPosition
    nonfinite_total: int = 0
    nonfinite_run: int = 0

    def due(self, step: int, every: int) -> bool:
        return step % every == 0 or step == self.config.max_steps


def train_main(cls: type[TrainConfig] = TrainConfig, argv: list[str] | None = None) -> int:
    """A recipe's command line: `cls` from the flags, then train; user errors are one line."""
    return run_main(Path(sys.argv[0]).name, lambda argv: train(parse_config(cls, argv)), argv)


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a training run described by `config`."""
    # checks, before anything is built
    config.validate()
    stage_type = STAGES[config.stage]
    stage_type.check(config, stage_type.autoencoder_config_of(config))
    # the stage and its data
    accelerator = build_accelerator(config)
    resume_from = checkpoint_to_resume(accelerator, config)
    set_seed(config.seed)  # identical initialisation on every rank
    with accelerator.main_process_first():  # rank 0 builds and caches the dataset index first
        data = build_training_data(config)
    stage = stage_type.for_run(config, data)
    set_attention_backend(stage.network, config.attention_backend)
    enable_activation_checkpointing(stage.network, config.activation_checkpointing)
    if config.compile:
        compile_blocks(stage.network)
    eval_batches = data.eval_batches(stage, accelerator, size=min(8, config.batch_size))
    # optimisation: the EMA copies the full network before FSDP (in prepare) shards it
    ema = EMA(stage.network.to(accelerator.device), config.ema_decay)
    optimizer, scheduler = build_optimizer(stage.network.parameters(), config)
    batches = RunBatches(data, config, accelerator, stage, optimizer)
    stage, optimizer = batches.prepared
    unwrapped = accelerator.unwrap_model(stage)
    accelerator.register_for_checkpointing(scheduler, ema)
    step, position = resume(accelerator, config, resume_from, batches, unwrapped)
    # bookkeeping
    run = Run(config, accelerator, unwrapped, ema, scheduler,
              MetricsLog(accelerator, Path(config.output_dir), resume_step=step),
              build_throughput(accelerator, config, unwrapped, batches),
              BucketMeans(accelerator) if batches.bucketed else None, eval_batches, position)  # fmt: skip
    start_trackers(accelerator, config)
    bar = tqdm(total=config.max_steps, initial=step, disable=not accelerator.is_main_process,
               desc="train")  # fmt: skip
    run.throughput.start(step)
    # the loop
    while step < config.max_steps:
        for batch, shape in run.throughput.batches(batches.epoch(position)):
            unwrapped.set_step(step)
            examples = len(batch[1]) * accelerator.num_processes
            draws = TrainingDraws(config.seed, position.examples_seen, examples,
                                  accelerator.process_index * len(batch[1]), len(batch[1]))  # fmt: skip
            position.advance(examples)
            with accelerator.accumulate(stage):
                loss, logs = stage(*data.prepare_batch(batch, unwrapped, accelerator), draws)
                accelerator.backward(loss)
                if run.bucket_means is not None:
                    run.bucket_means.add(shape, {"loss": loss, **logs})
                if not accelerator.sync_gradients:
                    run.throughput.step_done(shape, examples)
                    continue
                grad_norm = optimizer_step(run, stage, optimizer, loss, step)
            step += 1
            bar.update(1)
            run.throughput.step_done(shape, examples)
            if run.due(step, config.log_every):
                bar.set_postfix(loss=f"{log_step(run, step, loss, logs, grad_norm):.4g}")
            if run.due(step, config.eval_every):
                evaluate(run, step)
            if run.due(step, config.checkpoint_every):
                checkpoint(run, step)
            if step >= config.max_steps:
                break
        else:
            position.next_epoch()
    # the export
    bar.close()
    if accelerator.is_main_process:
        unwrapped.export(ema.model, Path(config.output_dir) / "final", final=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    out = Path(config.output_dir)
    return TrainResult(step, unwrapped.network, ema.model, accelerator, run.nonfinite_total, out)


def resume(accelerator, config: TrainConfig, resume_from, batches: RunBatches, stage):
    """(step, DataPosition) of the checkpoint resumed from (and the stage's run state), or of a
    fresh start."""
    if resume_from is None:
        set_seed(config.seed, device_specific=True)  # per-rank noise (stage 1) from here on
        return 0, DataPosition()
    accelerator.load_state(str(resume_from))
    meta = read_meta(resume_from)
    stage.load_run_state(meta.get("stage_state", {}))
    position = DataPosition.from_meta(
        meta, batches.steps_per_epoch, config.grad_accum, batches.global_batch
    )
    accelerator.print(
        f"resumed from {resume_from} at step {meta['step']}, {position.examples_seen} examples seen"
    )
    return meta["step"], position


def build_throughput(accelerator, config: TrainConfig, stage, batches: RunBatches) -> Throughput:
    """Examples, tokens and FLOPs per second (per bucket when bucketed); FLOPs counted once."""
    flops = {shape: stage.training_flops(*shape) for shape in batches.shapes}
    tokens = {shape: latent_tokens(stage, *shape) for shape in batches.shapes}
    return Throughput(accelerator, tokens.__getitem__, flops.__getitem__, config.peak_tflops,
                      per_bucket=batches.bucketed)  # fmt: skip


def start_trackers(accelerator, config: TrainConfig) -> None:
    if accelerator.is_main_process:
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers(
            PROJECT,
            config=tracker_config(config.to_dict()),
            init_kwargs={"wandb": {"name": out.name, "dir": str(out)}},
        )


def optimizer_step(run: Run, stage, optimizer, loss, step: int):
    """Clip, step (unless the loss or gradient is non-finite: then count it, and stop after too
    many in a row), then the schedule and the EMA; the global gradient norm."""
    accelerator, config = run.accelerator, run.config
    grad_norm = accelerator.clip_grad_norm_(stage.parameters(), config.clip_grad)
    # one decision on every rank: the loss summed over ranks, and the global grad norm
    total_loss = accelerator.reduce(loss.detach().float(), reduction="sum")
    finite = bool(torch.isfinite(total_loss) and torch.isfinite(grad_norm))
    if finite or accelerator.scaler is not None:
        optimizer.step()  # fp16: the GradScaler skips inf gradients and lowers its scale
    optimizer.zero_grad(set_to_none=True)
    if finite:
        run.nonfinite_run = 0
        run.scheduler.step()
        run.ema.update(run.stage.network)
        return grad_norm
    run.nonfinite_total, run.nonfinite_run = run.nonfinite_total + 1, run.nonfinite_run + 1
    accelerator.print(f"step {step}: non-finite loss or gradient, step skipped")
    if run.nonfinite_run > config.max_nonfinite:
        raise NonFiniteLossError(
            f"{run.nonfinite_run} consecutive steps had a non-finite loss or gradient (limit "
            f"max_nonfinite={config.max_nonfinite}); lower the learning rate or check the data. "
            f"The last good checkpoint in {config.output_dir} is kept."
        )
    return grad_norm


def log_step(run: Run, step: int, loss, logs: dict, grad_norm) -> float:
    """Log the step's means over processes, throughput and position; the mean loss."""
    accelerator = run.accelerator
    record = {
        "loss": _mean_across(accelerator, loss),
        **{k: _mean_across(accelerator, v) for k, v in logs.items()},
        "grad_norm": float(full_tensor(grad_norm)),
        "lr": run.scheduler.get_last_lr()[0],
        **run.throughput.record(step),
        "examples_seen": run.position.examples_seen,
        "nonfinite_skipped": run.nonfinite_total,
        "world_size": accelerator.num_processes,
        **(run.bucket_means.record() if run.bucket_means is not None else {}),
    }
    run.log.log(step, record)
    return record["loss"]


def evaluate(run: Run, step: int) -> None:
    """The stage's evaluation of the EMA network on each fixed batch (main process, RNG kept),
    observed by the stage on every process, then its warnings after the learning-rate warm-up."""
    accelerator, by_bucket, evaluations = run.accelerator, {}, {}
    for bucket, eval_batch in run.eval_batches.items() if accelerator.is_main_process else ():
        with torch.random.fork_rng(devices=_cuda_devices(accelerator)):
            by_bucket[bucket] = run.stage.evaluate(run.ema.model, *eval_batch)
        run.log.log_clips(step, by_bucket[bucket].pop("videos", {}))
        prefix = f"bucket/{bucket}/" if bucket else ""
        evaluations.update({prefix + k: v for k, v in by_bucket[bucket].items()})
    run.stage.observe(broadcast_object_list([evaluations])[0], step)
    for bucket, evaluation in by_bucket.items():
        warning = run.stage.evaluation_warning(evaluation, step)
        if warning and step > run.config.lr_warmup_steps:
            accelerator.print(f"[bucket {bucket}] {warning}" if bucket else warning)
    if evaluations:
        run.log.log(step, evaluations)


def checkpoint(run: Run, step: int) -> None:
    """A checkpoint with the stage's export of the EMA network; the oldest pruned."""
    config, accelerator = run.config, run.accelerator
    meta = {
        "config": config.to_dict(),
        "stage": config.stage,
        "world_size": accelerator.num_processes,
        "data": dataclasses.asdict(run.position),
        "stage_state": run.stage.run_state(),
    }
    out = Path(config.output_dir)
    save_checkpoint(accelerator, out, step, meta,
                    lambda tmp: run.stage.export(run.ema.model, tmp / "export", final=False))  # fmt: skip
    if accelerator.is_main_process:
        prune_checkpoints(out, config.keep_last)


def _mean_across(accelerator, value) -> float:
    value = torch.as_tensor(value, dtype=torch.float32, device=accelerator.device).detach()
    return float(accelerator.reduce(value, reduction="mean"))


def _cuda_devices(accelerator) -> list:
    return [accelerator.device] if accelerator.device.type == "cuda" else []
