"""The distilled few-step decoder: progressive distillation (ulvideo.train.distill), its export
beside the teacher and the choice of decoder (ulvideo.student)."""

import copy
import json
import shutil

import pytest
import torch
from test_networks import randomise

from ulvideo.cli import main
from ulvideo.diffusion import StackedRandomGenerator, ddim_step, logsnr_grid, to_data
from ulvideo.integrity import CorruptFileError
from ulvideo.models import autoencoder_preset, base_preset, build_base
from ulvideo.pipeline import Pipeline, autoencoder_fingerprint
from ulvideo.sample import SamplingConfig
from ulvideo.student import TEACHER_STEPS, Student, StudentConfig, choose_decoder, decoder_steps
from ulvideo.train.distill import DistillConfig, ddim_target, distill_loss
from ulvideo.ul import UnifiedLatents


def student_of(ul: UnifiedLatents, steps: int, fingerprint: str = "", seed: int = 1) -> Student:
    """A student of `steps` steps on the decoder's grid: the teacher with other random weights."""
    grid = to_data(logsnr_grid(ul.pixel_schedule, steps))[:-1].tolist()
    config = StudentConfig(steps, grid, 8 * steps, fingerprint)
    return Student(randomise(copy.deepcopy(ul.decoder), seed), config)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """An export (tiny, 16 px, with a base model) holding a 4-step student."""
    torch.manual_seed(0)
    ul = randomise(UnifiedLatents(autoencoder_preset("tiny", resolution=16)))
    base_cfg = base_preset("tiny", num_classes=10)
    path = tmp_path_factory.mktemp("export")
    Pipeline(ul, randomise(build_base(base_cfg)), base_cfg).save_pretrained(path)
    student = student_of(ul, 4, autoencoder_fingerprint(path))
    Pipeline(ul, student=student).save_pretrained(path)  # adds autoencoder/student/
    return path


def clips(n: int = 2, frames: int = 5, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, frames, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1


# ---------------------------------------------------------------- the distillation target


def test_ddim_target_is_the_prediction_whose_ddim_step_lands_on_the_teachers_state():
    g = torch.Generator().manual_seed(0)
    z_t, z_end = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    for l_from, l_to in ((-3.0, 1.5), (-13.0, -4.0), (2.0, float("inf"))):
        l_from, l_to = torch.tensor(l_from), torch.tensor(l_to)
        target = ddim_target(z_t, z_end, l_from, l_to)
        torch.testing.assert_close(ddim_step(z_t, target, l_from, l_to), z_end)
    # at the data (l_to = inf) the target is the teacher's final state itself
    assert torch.equal(
        ddim_target(z_t, z_end, torch.tensor(0.0), torch.tensor(float("inf"))), z_end
    )


def test_distill_loss_composes_the_teachers_steps_and_weights_by_truncated_snr():
    # A teacher predicting a constant c: DDIM steps with a fixed x_hat compose exactly (eps_hat
    # is kept), so K teacher steps equal one and the target is c whatever K. A student predicting
    # c + d then has loss d^2 max(SNR, 1) at the student step drawn, averaged over the batch.
    ul = UnifiedLatents(autoencoder_preset("tiny", resolution=16))
    c, d, batch = 0.3, 0.05, 32

    def constant(value):
        return lambda x_t, z0, logsnr: torch.full_like(x_t, value)

    grid = to_data(logsnr_grid(ul.pixel_schedule, 8))
    for per_step in (1, 2, 8):
        g = torch.Generator().manual_seed(per_step)
        loss = distill_loss(ul, constant(c), constant(c + d), clips(batch), grid, per_step, g)
        # the student steps drawn: the loss's first draw from the generator
        i = torch.randint(
            8 // per_step, (batch,), generator=torch.Generator().manual_seed(per_step)
        )
        weight = torch.exp(grid[i * per_step]).clamp(min=1)
        expected = float(weight.mean()) * d**2
        assert abs(float(loss) - expected) < 1e-5 * expected, (per_step, float(loss), expected)
        assert (per_step == 8) == (expected == pytest.approx(d**2))  # 1 step: SNR < 1 only


def test_rounds_halve_the_steps_and_settings_are_checked_first():
    assert DistillConfig("x", steps=1, start_steps=4, teacher_steps=32).rounds() == [
        (4, 8),
        (2, 2),
        (1, 2),
    ]
    assert DistillConfig("x", steps=2, start_steps=2, teacher_steps=16).rounds() == [(2, 8)]
    for bad, match in (
        (dict(steps=1, start_steps=3), "power of two"),
        (dict(steps=2, start_steps=1), "steps <= start_steps"),
        (dict(steps=1, start_steps=4, teacher_steps=6), "multiple of start_steps"),
        (dict(steps=1, start_steps=4, teacher_steps=4), "at least twice"),
    ):
        with pytest.raises(ValueError, match=match):
            DistillConfig("x", **bad).validate()


# ---------------------------------------------------------------- export and loading


def test_student_round_trip_with_checksums(export, tmp_path):
    pipeline = Pipeline.from_pretrained(export)
    student = pipeline.student
    assert student is not None and student.steps == 4 and len(student.config.grid) == 4
    ul = pipeline.autoencoder
    assert student.config.grid == to_data(logsnr_grid(ul.pixel_schedule, 4))[:-1].tolist()
    again = student_of(ul, 4, student.config.teacher_fingerprint)
    for k, v in again.network.state_dict().items():
        assert torch.equal(v, student.network.state_dict()[k]), k
    meta = json.loads((export / "autoencoder" / "student" / "config.json").read_text())
    assert meta["kind"] == "decoder_student" and meta["config"]["steps"] == 4
    assert set(meta["files"]) == {"model.safetensors"}
    # a corrupted student file is refused, naming the file
    bad = shutil.copytree(export, tmp_path / "flipped")
    weights = bad / "autoencoder" / "student" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="student/model.safetensors is corrupt"):
        Pipeline.from_pretrained(bad)
    # a student distilled from other weights is refused
    other = shutil.copytree(export, tmp_path / "other")
    Pipeline(ul, student=student_of(ul, 4, "0" * 64)).save_pretrained(other)
    with pytest.raises(ValueError, match="distilled from other autoencoder weights"):
        Pipeline.from_pretrained(other)


def test_choose_decoder_rules(export):
    student = Pipeline.from_pretrained(export).student
    assert choose_decoder(student, 64) is None  # more steps than distilled: the teacher
    assert all(choose_decoder(student, n) is student for n in (1, 2, 4))
    assert choose_decoder(student, 2, "teacher") is None
    assert choose_decoder(None, 2) is None
    with pytest.raises(ValueError, match=r"decodes in \[1, 2, 4\]; got --decoder_steps 3"):
        choose_decoder(student, 3)
    with pytest.raises(ValueError, match="trained for 4 steps"):
        choose_decoder(student, 8, "student")
    with pytest.raises(ValueError, match="no distilled decoder: run `ulvideo distill"):
        choose_decoder(None, 2, "student")
    with pytest.raises(ValueError, match="--decoder must be one of"):
        choose_decoder(student, 2, "fast")
    # no steps given: the student at its own 4 steps, else the teacher at TEACHER_STEPS
    assert choose_decoder(student, None) is student and decoder_steps(student, None) == 4
    assert choose_decoder(student, None, "teacher") is None
    assert decoder_steps(None, None) == TEACHER_STEPS == 64 and decoder_steps(student, 2) == 2
    # 2 steps run on every other point of the student's own grid, then the data
    grid = student.sampling_grid(2)
    assert grid[:-1].tolist() == student.config.grid[::2] and grid[-1] == float("inf")


@pytest.mark.slow
def test_few_steps_use_the_student_and_teacher_flag_the_teacher(export):
    pipeline = Pipeline.from_pretrained(export)
    ul, student, video = pipeline.autoencoder, pipeline.student, clips()

    def direct(steps, with_student):
        rng = StackedRandomGenerator("cpu", 0, range(len(video)))
        return ul.reconstruct(video, steps, "ddpm", rng, student=student if with_student else None)

    for steps in (1, 4):
        auto = pipeline.reconstruct(video, steps)
        assert torch.equal(auto, direct(steps, True)), steps
        assert not torch.allclose(auto, direct(steps, False), atol=1e-3), steps
        assert torch.equal(
            pipeline.reconstruct(video, steps, decoder="teacher"), direct(steps, False)
        )
    assert torch.equal(pipeline.reconstruct(video, 8), direct(8, False))  # beyond the student
    # generation: the same choice through SamplingConfig.decoder
    sampling = SamplingConfig(base_steps=2, decoder_steps=2, batch_size=2)
    labels = torch.tensor([1, 2])
    auto = pipeline.generate(2, 5, 16, sampling, labels=labels)
    teacher = pipeline.generate(2, 5, 16, SamplingConfig(**{**vars(sampling), "decoder": "teacher"}),
                                labels=labels)  # fmt: skip
    without = Pipeline(ul, pipeline.base, pipeline.base_config).generate(
        2, 5, 16, sampling, labels=labels
    )
    assert torch.equal(teacher, without) and not torch.allclose(auto, teacher, atol=1e-3)


def test_cli_decoder_flags_and_info(export, tmp_path, capsys):
    from ulvideo.media import write_mp4

    capsys.readouterr()
    assert main(["info", str(export), "--frames", "5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["decoder_student"]["steps"] == 4 and info["decoder_student"]["params"] > 0
    write_mp4(clips(1)[0], tmp_path / "in.mp4")
    reports = {}
    for decoder in ("student", "teacher"):
        assert main(["reconstruct", "--checkpoint", str(export), "--input", str(tmp_path / "in.mp4"),
                     "--frames", "5", "--steps", "2", "--decoder", decoder,
                     "--out", str(tmp_path / decoder)]) == 0  # fmt: skip
        reports[decoder] = json.loads(capsys.readouterr().out)["psnr"]
    assert reports["student"] != reports["teacher"]
    # no --steps: the student at its own 4 steps
    assert main(["reconstruct", "--checkpoint", str(export), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "5", "--out", str(tmp_path / "default")]) == 0  # fmt: skip
    default = json.loads(capsys.readouterr().out)["psnr"]
    assert main(["reconstruct", "--checkpoint", str(export), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "5", "--steps", "4", "--out", str(tmp_path / "four")]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["psnr"] == default
    assert main(["sample", "--checkpoint", str(export), "--decoder_steps", "8", "--decoder",
                 "student", "--out", str(tmp_path / "s")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "trained for 4 steps" in err and err.count("\n") == 1
    bare = tmp_path / "bare"
    ul = Pipeline.from_pretrained(export).autoencoder
    Pipeline(ul).save_pretrained(bare)
    assert main(["info", str(bare), "--frames", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["decoder_student"] is None
    assert main(["reconstruct", "--checkpoint", str(bare), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "5", "--steps", "2", "--decoder", "student"]) == 2  # fmt: skip
    assert "no distilled decoder" in capsys.readouterr().err


def test_eval_reconstruction_scores_the_decoder_it_is_told(export, capsys):
    from ulvideo.data import build_dataset
    from ulvideo.evaluate.reconstruction import reconstruction_metrics

    pipeline = Pipeline.from_pretrained(export)
    video = torch.stack([build_dataset("demo", None, "test", 5, 16)[i][0] for i in range(2)])
    flags = ["eval", "reconstruction", "--checkpoint", str(export), "--dataset", "demo",
             "--frames", "5", "--num-videos", "2", "--batch-size", "2", "--decode-steps", "2"]  # fmt: skip
    reports = {}
    for decoder in ("auto", "teacher"):
        capsys.readouterr()
        assert main([*flags, "--decoder", decoder]) == 0
        reports[decoder] = json.loads(capsys.readouterr().out)
    student = pipeline.choose_decoder(2)
    for decoder, expected in (("auto", student), ("teacher", None)):
        direct = reconstruction_metrics(pipeline.autoencoder, video, 2, student=expected)
        assert reports[decoder]["psnr"] == pytest.approx(float(direct["psnr"].mean()), abs=1e-5)
    assert reports["auto"]["decoder"] == "student (4 steps)"
    assert reports["teacher"]["decoder"] == "teacher"
    assert reports["auto"]["psnr"] != reports["teacher"]["psnr"]


# ---------------------------------------------------------------- learning


@pytest.mark.slow
def test_student_learns_the_teachers_many_step_decode_in_one_step(tmp_path):
    """A tiny stage 1, then one round 8 -> 1 (seeds fixed): the loss falls and the 1-step student
    decodes held-out clips much closer to the teacher's 8-step DDIM decode (its target) than the
    teacher does in one step. Measured (2 shared cores): loss 0.212 -> 0.137 (mean of the last
    10); PSNR to the 8-step decode 14.8 dB (student) against 13.3 dB (teacher, 1 step).

    Not asserted: a higher PSNR to the real clips than the teacher's 1-step decode, which the
    issue asks for. The teacher's 1-step decode is its prediction from pure noise, E[x | z0], the
    PSNR-optimal (and blurry) estimate; a student that matches the teacher's samples scores below
    it, as every sampler's samples do (benchmarks/results/distill_decoder_cpu.json)."""
    from test_train import tiny

    from ulvideo.data import build_dataset
    from ulvideo.evaluate.psnr_ssim import psnr
    from ulvideo.train import train
    from ulvideo.train.distill import distill

    steps = 150
    train(tiny(tmp_path, "s1", max_steps=steps, checkpoint_every=steps, lr_warmup_steps=5,
               log_every=25, latent_hold_steps=steps // 4, latent_ramp_steps=steps // 4,
               batch_size=8))  # fmt: skip
    export = tmp_path / "s1" / "final"
    result = distill(DistillConfig(str(export), steps=1, start_steps=1, teacher_steps=8,
                                   iterations=100, batch_size=8, lr=1e-3))  # fmt: skip
    losses = result["losses"][1]
    assert sum(losses[-10:]) / 10 < 0.75 * losses[0], (losses[0], losses[-10:])
    pipeline = Pipeline.from_pretrained(export)  # the student was written into the export
    ul, student = pipeline.autoencoder, pipeline.student
    assert student.steps == 1 and student.config.teacher_steps == 8
    assert student.config.grid == [float(to_data(logsnr_grid(ul.pixel_schedule, 1))[0])]
    held_out = build_dataset("demo", None, "test", frames=5, resolution=16)
    video = torch.stack([held_out[i][0] for i in range(16)])

    def decode(steps, method="ddim", decoder="teacher"):
        return pipeline.reconstruct(video, steps, method, seed=3, decoder=decoder)

    target = decode(8)
    student_1, teacher_1 = decode(1, decoder="auto"), decode(1)
    close_student = float(psnr(student_1, target).mean())
    close_teacher = float(psnr(teacher_1, target).mean())
    assert close_student > close_teacher + 1.0, (close_student, close_teacher)
