"""The distilled few-step decoder (a "student") saved beside the stage-1 decoder (the teacher).

An export's `autoencoder/student/` is a saved part of kind "decoder_student": a Decoder of the
autoencoder's architecture and a `StudentConfig` holding what its weights were trained for, the
step count and the log-SNR grid it was distilled on, and the fingerprint (sha256) of the
teacher's weights. Loading refuses a student whose teacher is not the export's autoencoder.

Which decoder a decode uses (`choose_decoder`):

- `--decoder teacher`: the stage-1 decoder with the chosen sampler, always.
- `--decoder student`: the student, or a clear error when the export holds none or it cannot
  take `--decoder_steps` N.
- `--decoder auto` (default): the student when N is at most its trained step count, else the
  teacher. More steps than the student was distilled for ask for the teacher's quality. The
  student decodes N steps on every (S / N)-th point of its own S-step grid, so N must divide S;
  another N is an error that names the valid ones.
- No N given (`--decoder_steps` unset, SamplingConfig.decoder_steps None): the student at its own
  S steps when the export has one (auto, student), else the teacher at TEACHER_STEPS.

Students are deterministic DDIM samplers (progressive distillation trains them for DDIM steps,
ulvideo.train.distill): `method` does not apply to them.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .models import AutoencoderConfig, Decoder
from .models.presets import JSONConfig
from .serialization import CONFIG_NAME, WEIGHTS_NAME, load_module, save_module

STUDENT, STUDENT_KIND = "student", "decoder_student"
TEACHER_STEPS = 64  # the stage-1 decoder's steps when none are given and no student decodes
DECODER_CHOICES = ("auto", "student", "teacher")


@dataclass
class StudentConfig(JSONConfig):
    """What a student's weights were trained for: `steps` DDIM steps from the log-SNRs `grid`
    (steps values, noisiest first; the last step ends at the data), distilled from the decoder
    whose weights have sha256 `teacher_fingerprint`, by rounds starting from `teacher_steps`
    DDIM steps of it."""

    steps: int
    grid: list[float] = field(default_factory=list)
    teacher_steps: int = 0
    teacher_fingerprint: str = ""

    def validate(self) -> None:
        if self.steps < 1 or len(self.grid) != self.steps:
            raise ValueError(
                f"a student of {self.steps} steps needs {self.steps} grid log-SNRs, got {self.grid}"
            )
        if any(b <= a for a, b in zip(self.grid, self.grid[1:])):
            raise ValueError(f"a student's grid must rise (noisiest first), got {self.grid}")


class Student(nn.Module):
    """A distilled decoder (`network`, a Decoder) and the grid it was trained on."""

    def __init__(self, network: nn.Module, config: StudentConfig):
        super().__init__()
        self.network, self.config = network, config

    @property
    def steps(self) -> int:
        return self.config.steps

    def check_steps(self, steps: int) -> None:
        """Raise unless the student can decode in `steps` steps (a divisor of its own)."""
        valid = [n for n in range(1, self.steps + 1) if self.steps % n == 0]
        if steps not in valid:
            raise ValueError(
                f"the distilled decoder was trained for {self.steps} steps and decodes in "
                f"{valid}; got --decoder_steps {steps} (use --decoder teacher for any count)"
            )

    def sampling_grid(self, steps: int) -> Tensor:
        """steps + 1 log-SNRs ending at +inf (the data): every (S / steps)-th of its own grid."""
        self.check_steps(steps)
        grid = torch.tensor(self.config.grid, dtype=torch.float64)[:: self.steps // steps]
        return torch.cat([grid, grid.new_tensor([float("inf")])])


def check_decoder_choice(decoder: str) -> None:
    if decoder not in DECODER_CHOICES:
        raise ValueError(f"--decoder must be one of {DECODER_CHOICES}, got {decoder!r}")


def choose_decoder(
    student: Student | None, steps: int | None, decoder: str = "auto"
) -> Student | None:
    """The student that decodes `steps` steps (None: its own) under `decoder` (auto | student |
    teacher), or None for the teacher (see the module docstring for the rule)."""
    check_decoder_choice(decoder)
    if decoder == "teacher":
        return None
    if student is None:
        if decoder == "student":
            raise ValueError(
                "this export holds no distilled decoder: run `ulvideo distill --checkpoint "
                "EXPORT --steps N` first, or use --decoder teacher"
            )
        return None
    if steps is None:
        return student
    if decoder == "auto" and steps > student.steps:
        return None  # more steps than distilled: the teacher's quality is asked for
    student.check_steps(steps)
    return student


def decoder_steps(student: Student | None, steps: int | None) -> int:
    """The steps a decode takes: `steps`, or when None the chosen student's own, else the
    teacher's TEACHER_STEPS."""
    if steps is not None:
        return steps
    return student.steps if student is not None else TEACHER_STEPS


def save_student(student: Student, autoencoder_dir: str | os.PathLike) -> Path:
    """Write `autoencoder_dir/student/` (weights and config, checksummed, each file atomically)."""
    return save_module(
        student.network, student.config, Path(autoencoder_dir) / STUDENT, STUDENT_KIND
    )


def load_student(
    autoencoder_dir: str | os.PathLike, autoencoder_config: AutoencoderConfig, map_location="cpu"
) -> Student | None:
    """The student saved in `autoencoder_dir` (None if there is none), verified against its
    checksums and against the teacher it was distilled from."""
    autoencoder_dir = Path(autoencoder_dir)
    if not (autoencoder_dir / STUDENT).is_dir():
        return None
    network, config = load_module(
        autoencoder_dir / STUDENT,
        lambda _: Decoder(autoencoder_config),
        STUDENT_KIND,
        StudentConfig,
        map_location,
    )
    teacher = json.loads((autoencoder_dir / CONFIG_NAME).read_text())["files"][WEIGHTS_NAME]
    if config.teacher_fingerprint != teacher["sha256"]:
        raise ValueError(
            f"{autoencoder_dir / STUDENT} was distilled from other autoencoder weights (sha256 "
            f"{config.teacher_fingerprint[:12]}, these are {teacher['sha256'][:12]}); distill "
            "again from this export (ulvideo distill) or remove the student folder"
        )
    return Student(network, config).eval()
