"""`ulvideo distill`: a few-step student decoder distilled from the stage-1 decoder (the teacher).

Method: progressive distillation (PD; Salimans & Ho, "Progressive Distillation for Fast Sampling
of Diffusion Models", ICLR 2022), on the decoder's own log-SNR grid (uniform in t of its shifted
cosine), with x-prediction and the deterministic DDIM teacher:

- A round trains a student of S steps, initialised from its teacher, so that one DDIM step of the
  student from a grid point lands where K DDIM steps of the teacher land (PD Algorithm 2; PD uses
  K = 2). The first round's teacher is the stage-1 decoder run for `teacher_steps` = S * K steps;
  each later round halves S with the previous student as a 2-step teacher: 32 -> 4 -> 2 -> 1 by
  default. One round with a K-step target instead of log2(K) halving rounds is the cheaper path
  for small budgets (what fits a CPU); the later rounds are PD's.
- Inputs are forward-noised training clips at the student's grid points (never sampler states),
  so there is no exposure to compound: the student's error at one step is its regression error.
- The loss is PD's truncated-SNR weighting, max(SNR, 1) * ||x_hat - x_target||^2, in x-space.
- The student is conditioned on the noisy latent z0 (lambda = 5) of the frozen encoder, as the
  teacher; the encoder, prior and bitrate do not change. The target is a deterministic function
  of (x_t, z0), so the student learns the teacher's conditional probability-flow map.

Why not consistency distillation (CD; Song et al., ICML 2023)? CD also gives 1-step decoders
and one network for any step count, but it needs a slowly moving EMA target network, a
perceptual metric (LPIPS) for its best results, and far more iterations than a PD round; its
multi-step sampling re-injects noise. PD's rounds are plain regressions on the sampler and grid
the student runs with, converge in a few hundred steps on the demo, and UL's decoder is already
an x-predicting diffusion model on a log-SNR grid, PD's own setting (Salimans is a UL author).

Each round's student is saved (checksummed, atomically) to `<output_dir>/student-S/` as it ends;
a rerun loads the finished rounds of the same teacher, grid and step counts instead of training
them again (resume at round granularity; remove the folder to retrain with other settings). The
final student goes into the export: `autoencoder/student/`. One device (cuda when there is one),
fp32.
"""

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..diffusion import alpha_sigma, ddim_step, diffuse, expand_to, logsnr_grid, to_data
from ..integrity import CorruptFileError
from ..models import Decoder
from ..pipeline import AUTOENCODER, autoencoder_export, autoencoder_fingerprint, load_autoencoder
from ..serialization import load_module, save_module
from ..student import STUDENT_KIND, Student, StudentConfig, save_student
from ..ul import UnifiedLatents
from .checkpoint import complete_checkpoints, read_meta
from .trainer import build_optimizer


@dataclass
class DistillConfig:
    """`ulvideo distill` settings. Rounds: start_steps, start_steps / 2, ..., steps."""

    checkpoint: str = ""  # the stage-1 (or stage-2) export whose decoder is distilled
    steps: int = 1  # the student's step count: start_steps / 2^k
    start_steps: int = 4  # the first round's student
    teacher_steps: int = 32  # the first round's teacher: DDIM steps of the stage-1 decoder
    iterations: int = 300  # optimizer steps per round
    data: str | None = None  # default: the dataset recorded in the stage-1 run's checkpoints
    data_root: str | None = None
    frames: int | None = None  # default: stage 1's training frames
    resolution: int | None = None  # default: the model's
    batch_size: int = 8
    lr: float = 5e-4
    lr_warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    clip_grad: float = 1.0
    seed: int = 0
    output_dir: str | None = None  # the rounds' students; default: <export>/../distill
    device: str | None = None  # default: cuda when there is one, else cpu (fp32, one device)

    def validate(self) -> None:
        """A clear error for settings that cannot make a schedule of rounds."""
        if not self.checkpoint:
            raise ValueError("give --checkpoint: the stage-1 export whose decoder is distilled")
        if self.steps < 1 or self.start_steps < self.steps:
            raise ValueError(
                f"need 1 <= steps <= start_steps, got {self.steps}, {self.start_steps}"
            )
        ratio = self.start_steps // self.steps
        if self.start_steps % self.steps or ratio & (ratio - 1):
            raise ValueError(
                f"rounds halve the steps: start_steps={self.start_steps} must be steps={self.steps}"
                f" times a power of two (e.g. --start_steps {self.steps * 4})"
            )
        if self.teacher_steps % self.start_steps or self.teacher_steps < 2 * self.start_steps:
            raise ValueError(
                f"teacher_steps={self.teacher_steps} must be a multiple of start_steps="
                f"{self.start_steps}, at least twice it (e.g. --teacher_steps {8 * self.start_steps})"
            )
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("iterations and batch_size must be >= 1")

    def rounds(self) -> list[tuple[int, int]]:
        """(student steps S, teacher DDIM steps per student step K) of each round."""
        out, steps = [(self.start_steps, self.teacher_steps // self.start_steps)], self.start_steps
        while steps > self.steps:
            steps //= 2
            out.append((steps, 2))
        return out


def ddim_target(z_t: Tensor, z_end: Tensor, l_from: Tensor, l_to: Tensor) -> Tensor:
    # PD eq. (8): the x_hat whose one DDIM step from z_t (at l_from) lands on z_end (at l_to):
    # z_end = (a_to - r a_from) x + r z_t, r = s_to / s_from (r = 0 at the data, l_to = inf)
    a_from, s_from = alpha_sigma(l_from)
    a_to, s_to = alpha_sigma(l_to)
    r = s_to / s_from
    return (z_end - r * z_t) / (a_to - r * a_from)


def distill_loss(
    ul: UnifiedLatents,
    teacher: nn.Module,
    student: nn.Module,
    video: Tensor,
    grid: Tensor,
    per_step: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PD's loss on a batch of clips: a student step on `grid[::per_step]` against `per_step`
    DDIM steps of the teacher on `grid` (both ending at +inf, the data), mean over the batch."""
    batch = video.shape[0]
    with torch.no_grad():  # the frozen encoder's noisy latent, as in stage 1 (UL §2)
        z0 = ul.noisy_latent(ul.encode(video))
    grid = grid.to(video)
    steps = (len(grid) - 1) // per_step
    i = torch.randint(steps, (batch,), generator=generator).to(video.device)
    l_from, l_to = grid[i * per_step], grid[(i + 1) * per_step]
    eps = torch.randn(video.shape, generator=generator).to(video)
    x_t = diffuse(video, l_from, eps)
    with torch.no_grad():
        z = x_t
        for j in range(per_step):
            l_a, l_b = grid[i * per_step + j], grid[i * per_step + j + 1]
            x_hat = teacher(z, z0, l_a).clamp(-1, 1)  # the teacher as it samples (clipped)
            z = ddim_step(z, x_hat, expand_to(l_a, z), expand_to(l_b, z))
        target = ddim_target(x_t, z, expand_to(l_from, z), expand_to(l_to, z))
    x_hat = student(x_t, z0, l_from)
    weight = torch.exp(l_from).clamp(min=1.0)  # PD: truncated SNR weighting, max(SNR, 1)
    return (weight * (x_hat - target).square().flatten(1).mean(1)).mean()


def recorded_data(checkpoint: str | Path) -> dict:
    """data, data_root and frames of the run that trained `checkpoint` (an export or a
    checkpoint-N folder), from its newest checkpoint's meta.json; {} if none is found."""
    checkpoint = Path(checkpoint)
    for run in (checkpoint, checkpoint.parent):
        found = [run] if (run / "meta.json").is_file() else complete_checkpoints(run)
        if found:
            config = read_meta(found[-1]).get("config", {})
            return {k: config[k] for k in ("data", "data_root", "frames") if k in config}
    return {}


def _round_config(config: DistillConfig, steps: int, grid: Tensor, teacher: str) -> StudentConfig:
    return StudentConfig(
        steps=steps,
        grid=[float(v) for v in grid[:-1]],
        teacher_steps=config.teacher_steps,
        teacher_fingerprint=teacher,
    )


def _load_round(path: Path, ul: UnifiedLatents, expected: StudentConfig) -> Student | None:
    # a finished round with the same settings, or None (missing, corrupt or other settings)
    try:
        network, saved = load_module(
            path, lambda _: Decoder(ul.config), STUDENT_KIND, StudentConfig
        )
    except (FileNotFoundError, CorruptFileError, ValueError):
        return None
    return Student(network, saved) if saved == expected else None


def distill(config: DistillConfig, log=print) -> dict:
    """Run the rounds (module docstring) and save the final student into the export. Returns
    {"students": {S: Student}, "losses": {S: [loss per iteration]}, "seconds": {S: s}}."""
    config.validate()
    export = autoencoder_export(config.checkpoint)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ul = load_autoencoder(export, device).requires_grad_(False).eval()
    recorded = recorded_data(config.checkpoint)
    data = config.data or recorded.get("data")
    if data is None:
        raise ValueError(
            f"{config.checkpoint} records no training data (no checkpoint-N/meta.json beside it): "
            "give --data (and --data_root) as stage 1 was trained"
        )
    data_root = config.data_root or (
        recorded.get("data_root") if data == recorded.get("data") else None
    )
    frames = config.frames or recorded.get("frames") or 5
    resolution = config.resolution or ul.config.resolution
    from ..data import build_dataset

    clips = build_dataset(data, data_root, "train", frames=frames, resolution=resolution)
    if len(clips) < config.batch_size:
        raise ValueError(
            f"{data} holds {len(clips)} clips, fewer than batch_size {config.batch_size}"
        )
    out = Path(config.output_dir) if config.output_dir else export.parent / "distill"
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = autoencoder_fingerprint(export)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(clips, config.batch_size, shuffle=True, drop_last=True, generator=generator)
    teacher, result = ul.decoder, {"students": {}, "losses": {}, "seconds": {}}
    for steps, per_step in config.rounds():
        grid = to_data(logsnr_grid(ul.pixel_schedule, steps * per_step))
        expected = _round_config(config, steps, grid[::per_step], fingerprint)
        student = _load_round(out / f"student-{steps}", ul, expected)
        if student is not None:
            log(f"round {steps} steps: loaded from {out / f'student-{steps}'}")
        else:
            student, losses, seconds = _train_round(
                config, ul, teacher, loader, grid, per_step, generator
            )
            student = Student(student, expected)
            # config.json (with the checksums) is written last: a round cut short never loads
            save_module(student.network, expected, out / f"student-{steps}", STUDENT_KIND)
            result["losses"][steps], result["seconds"][steps] = losses, seconds
            record = dict(steps=steps, per_step=per_step, seconds=seconds, losses=losses)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log(
                f"round {steps} steps ({per_step} teacher steps each): loss {losses[0]:.4g} -> "
                f"{losses[-1]:.4g} in {seconds:.0f} s"
            )
        result["students"][steps] = student.eval()
        teacher = student.network
    save_student(student, export / AUTOENCODER)
    log(f"wrote the {config.steps}-step student to {export / AUTOENCODER / 'student'}")
    return result


def _train_round(config, ul, teacher, loader, grid, per_step, generator):
    # one PD round: the student starts from its teacher's weights
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    teacher.eval()
    optimizer, scheduler = build_optimizer(
        student.parameters(),
        SimpleNamespace(**dataclasses.asdict(config), max_steps=config.iterations),
    )
    losses, start, done = [], time.perf_counter(), 0
    bar = tqdm(
        total=config.iterations, desc=f"distill {(len(grid) - 1) // per_step} steps", leave=False
    )
    while done < config.iterations:
        for video, _ in loader:
            video = video.to(next(ul.parameters()).device)
            loss = distill_loss(ul, teacher, student, video, grid, per_step, generator)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(float(loss.detach()))
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            if done == config.iterations:
                break
    bar.close()
    return student.eval().requires_grad_(False), losses, time.perf_counter() - start
