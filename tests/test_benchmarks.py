"""Smoke test of the benchmarks: the runner's --quick mode runs the CPU benchmarks at tiny sizes as
subprocesses; their JSON has the expected keys, finite positive numbers and consistent derived
figures (MFU, tokens/s, counted FLOPs). No timing is asserted."""

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ulvideo.models import autoencoder_preset, base_preset, training_flops_per_example

# every test here runs benchmark scripts as subprocesses: minutes in all on 2 cores
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = 0.5
QUICK = ["train_step", "attention_modes", "attention_backends", "sampling", "long_videos",
         "checksum"]  # fmt: skip


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def run_script(cmd: list[str], timeout: int, drop_env: tuple[str, ...] = ()):
    """Run a benchmark script from the repository root with this checkout first on PYTHONPATH,
    without the environment variables named in `drop_env`."""
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "benchmarks/run_all.py", "--quick", "--device", "cpu", "--threads", "1"]
    cmd += ["--only", *QUICK, "--peak_tflops", str(PEAK_TFLOPS), "--out_dir", str(out_dir)]
    proc = run_script(cmd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["failed"] == [] and list(report["benchmarks"]) == QUICK
    for name in QUICK:  # each benchmark's own file holds what the runner collected
        saved = json.loads((out_dir / f"cpu_{name}.json").read_text())
        assert saved == report["benchmarks"][name]["result"]
    return {name: entry["result"] for name, entry in report["benchmarks"].items()}


def test_machine_description(results):
    for result in results.values():
        m = result["machine"]
        assert m["cores"] >= 1 and m["torch"] == torch.__version__ and m["cpu"]
        assert m["torch_threads"] == 1  # --threads 1 reached the subprocess
        assert len(m["load_average_1_5_15min"]) == 3


def test_train_step_numbers_are_consistent(results):
    rows = results["train_step"]["results"]
    parts = [(r["stage"], r["part"]) for r in rows]
    assert parts == [(1, "all"), (1, "decoder"), (2, "all")]
    config = autoencoder_preset("tiny", resolution=32)
    for r in rows:
        assert r["frames"] == 17 and r["resolution"] == 32 and r["dtype"] == "fp32"
        # 17 x 32 x 32 pixels -> 1 + 16/4 latent frames of 32/8 x 32/8 tokens
        assert r["latent_tokens_per_example"] == 5 * 4 * 4
        part = f"stage{r['stage']}" if r["part"] == "all" else r["part"]
        flops = training_flops_per_example(
            config, part, 17, 32, 32, base_config=base_preset("tiny")
        )
        assert r["training_flops_per_example"] == flops
        for key in ("examples_per_s", "tokens_per_s", "achieved_tflops", "mfu", "params"):
            assert positive(r[key]), (key, r[key])
        assert positive(r["step_s"]["median_s"]) and len(r["step_s"]["times_s"]) == 2
        seconds = r["step_s"]["median_s"]  # rounded to microseconds in the JSON
        assert math.isclose(r["examples_per_s"], r["batch_size"] / seconds, rel_tol=1e-4)
        assert math.isclose(r["tokens_per_s"], r["examples_per_s"] * 80)
        assert math.isclose(r["mfu"], flops * r["examples_per_s"] / (PEAK_TFLOPS * 1e12))
        assert math.isfinite(r["last_loss"]) and math.isfinite(r["last_grad_norm"])
        assert positive(r["step_s"]["peak_memory_mb"])
    stage1, decoder, stage2 = rows
    assert stage1["params"] > stage2["params"]  # encoder + prior + decoder vs the tiny base
    assert stage1["params"] > decoder["params"]  # the decoder is one of the three networks
    assert stage1["training_flops_per_example"] > decoder["training_flops_per_example"]
    assert len(results["train_step"]["best"]) == 3


def test_peer_benchmark_without_latte_says_why_it_is_skipped():
    proc = run_script([sys.executable, "benchmarks/bench_peer_latte.py"], 120, ("LATTE_DIR",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [proc.stdout.strip()]
    assert proc.stdout.startswith("skipped: set LATTE_DIR")


def test_attention_modes_fit_exponents(results):
    modes = results["attention_modes"]["modes"]
    assert set(modes) == {"factorised", "full"}
    for rows in modes.values():
        assert [r["frames"] for r in rows["by_frames"]] == [1, 2, 4]
        assert [r["tokens"] for r in rows["by_frames"]] == [16, 32, 64]  # 4 x 4 per frame
        assert all(positive(r["step_s"]["median_s"]) for r in rows["by_frames"])
        assert all(math.isfinite(v) for v in rows["exponents"].values())
    # Counted training FLOPs are a + b T + c T^2 in the number of frames T. The T^2 term is the
    # two attention matmuls (QK^T, PV), 2 x 2 L^2 C each forward, x3 for training: for full
    # attention over L = T S tokens c = 12 S^2 C, for factorised attention's temporal part
    # (S sequences of T frames) c = 12 S C; S = 4 x 4 tokens per frame, C = 64, one block.
    s, c = 16, 64
    coefficient = {m: quadratic_coefficient(modes[m]["by_frames"]) for m in modes}
    assert coefficient == {"full": 12 * s**2 * c, "factorised": 12 * s * c}
    fact, full = (modes[m]["exponents"]["flops"] for m in ("factorised", "full"))
    assert fact < full


def quadratic_coefficient(rows) -> float:
    # c of the parabola a + b x + c x^2 through three points: the second divided difference
    (x1, y1), (x2, y2), (x3, y3) = ((r["frames"], r["training_flops"]) for r in rows)
    return ((y3 - y2) / (x3 - x2) - (y2 - y1) / (x2 - x1)) / (x3 - x1)


def test_attention_backends_agree_with_reference(results):
    result = results["attention_backends"]
    assert "xformers" in result["skipped_backends"]  # CUDA-only; reason recorded
    assert [r["length"] for r in result["by_length"]] == [5, 64]
    for row in result["by_length"]:
        assert row["batch"] == 128 // row["length"]
        for backend in ("sdpa", "naive"):
            case = row[backend]
            assert positive(case["forward_s"]) and positive(case["forward_backward_s"])
            assert case["max_abs_diff_from_naive"] < 1e-5  # fp32 against the fp32 reference
        assert positive(row["naive_over_sdpa_forward_backward"])


def test_sampling_seconds_per_video(results):
    rows = results["sampling"]["by_steps"]
    assert [(r["base_steps"], r["decoder_steps"]) for r in rows] == [(2, 2)]
    for r in rows:
        assert positive(r["base_s_per_video"]) and positive(r["decoder_s_per_video"])
        assert math.isclose(r["s_per_video"], r["base_s_per_video"] + r["decoder_s_per_video"])


NO_CUDA_ONLY = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal without CUDA"
)


@NO_CUDA_ONLY
def test_gpu_check_refuses_without_cuda(tmp_path):
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "no CUDA device" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


@NO_CUDA_ONLY
def test_benchmark_refuses_missing_cuda_before_work():
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_train_step.py", "--device", "cuda", "--presets", "tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "sees no CUDA device" in proc.stderr


def test_long_videos_benchmark_reports_whole_and_windowed(tmp_path):
    out = tmp_path / "long.json"
    cmd = [sys.executable, "benchmarks/bench_long_videos.py", "--device", "cpu", "--threads", "1",
           "--frames", "9", "33", "--resolution", "32", "--window", "5", "--sizes", "16", "32",
           "--tile", "16", "--tile_frames", "1", "--steps", "1", "--out", str(out)]  # fmt: skip
    proc = run_script(cmd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["frames"] for r in report["by_frames"]] == [9, 33]
    assert [(r["height"], r["tile"]) for r in report["by_size"]] == [(16, 16), (32, 16)]
    for row in report["by_frames"]:
        for key in ("encode_whole", "encode_windowed", "decode_whole", "decode_windowed"):
            assert positive(row[key]["s"]) and positive(row[key]["peak_memory_mb"])
            t, h, w = row["frames"], row["height"], row["width"]
            out = 3 * t * h * w if key[0] == "d" else 8 * (1 + (t - 1) // 4) * h // 8 * w // 8
            assert row[key]["output_mb"] == round(out * 4 / 2**20, 3)  # the video or latent
    # windows of 5 frames hold the working memory flat from 9 to 33 frames (the documented target
    # 1.3; measured 1.00-1.01), where the whole clip's grows with it (measured 1.6 decoding, 2.4
    # encoding): the measurement resolves the difference
    flat = report["flat_ratio"]
    assert flat["decode_windowed"] <= 1.3 and flat["encode_windowed"] <= 1.3, flat
    assert flat["decode_whole"] > 1.3 and flat["encode_whole"] > 1.3, flat


def test_real_footage_benchmark_trains_on_held_out_real_clips(tmp_path):
    """A smoke test of the record's script (2 steps learn nothing): the three real videos give 15
    held-out test clips, interleaved so that each swapped latent comes from another video."""
    out = tmp_path / "real.json"
    cmd = [sys.executable, "benchmarks/bench_real_footage.py", "--steps", "2", "--hold", "1",
           "--ramp", "1", "--decoder_steps", "2", "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = run_script(cmd, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["test_clips"] == 15 and report["settings"]["steps"] == 2
    assert positive(report["psnr_own_latent"]) and positive(report["psnr_swapped_latent"])
    assert positive(report["bits_per_pixel"])
    # the swapped latent (the batch rolled by one) is always another video's: 3 videos of
    # constant grey levels 0, 100, 200, cut into the benchmark's 15 test clips
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        bench = importlib.import_module("bench_real_footage")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    videos = [torch.full((40, 3, 40, 48), 100 * v, dtype=torch.uint8) for v in range(3)]
    clips = bench.test_clips(videos, 9, per_video=5)
    source = clips.mean(dim=(1, 2, 3, 4))
    assert len(set(source.tolist())) == 3 and (source != source.roll(1)).all(), source
    assert positive(report["one_step_psnr_own_latent"]) and positive(
        report["one_step_psnr_swapped_latent"]
    )  # the decoder's mean given z0 (one step from pure noise), own latent and another's


def test_memory_estimates_count_state_and_saved_activations(tmp_path):
    from ulvideo.models import build_base, params_per_part

    out = tmp_path / "memory.json"
    cmd = [sys.executable, "benchmarks/bench_memory.py", "--frames", "5", "--resolution", "16"]
    proc = run_script([*cmd, "--gpus", "2", "--out", str(out)], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {(r["stage"], r["preset"]): r for r in json.loads(out.read_text())["rows"]}
    config = autoencoder_preset("medium", resolution=16)
    params = params_per_part(config, base_preset("medium", latent_channels=8))["base"]
    medium = rows["stage2", "medium"]
    assert medium["params"] == params
    # fp32 weights, gradients, AdamW moments and EMA: 20 B per parameter; over 2 GPUs ZeRO-2
    # shards gradients and moments, FSDP also the weights; the EMA never
    expected = {"ddp_2": 20, "zero2_2": 4 + 12 / 2 + 4, "fsdp_2": 16 / 2 + 4}
    for engine, bytes_per_param in expected.items():
        assert medium["state_gib_per_gpu"][engine] == round(params * bytes_per_param / 2**30, 2)
    # the activations counted on fake tensors are what a real forward pass saves
    torch.manual_seed(0)
    base = build_base(base_preset("tiny", latent_channels=8))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        base(torch.randn(1, 8, 2, 2, 2), torch.zeros(1))
    assert rows["stage2", "tiny"]["activation_bytes_per_example_fp32"] == sum(saved) > 0


@pytest.mark.slow
def test_distill_decoder_benchmark_scores_students_against_the_reference(tmp_path):
    """A smoke test of the record's script on an untrained tiny export (2 iterations a round
    learn nothing): every decode is scored, and the derived figures follow from the raw ones."""
    from ulvideo.pipeline import Pipeline
    from ulvideo.ul import UnifiedLatents

    torch.manual_seed(0)
    Pipeline(UnifiedLatents(autoencoder_preset("tiny", resolution=16))).save_pretrained(
        tmp_path / "s1"
    )
    out = tmp_path / "distill.json"
    cmd = [sys.executable, "benchmarks/bench_distill_decoder.py", "--stage1", str(tmp_path / "s1"),
           "--work", str(tmp_path / "work"), "--videos", "3", "--iterations", "2",
           "--teacher_steps", "8", "--reference_steps", "4", "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = run_script(cmd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["steps"] for r in report["settings"]["rounds"]] == [4, 2, 1]
    results = report["results"]
    assert {"teacher_ddpm_4", "student4_4", "student2_2", "student1_1"} <= set(results)
    reference = results["teacher_ddpm_4"]
    for entry in results.values():
        assert positive(entry["s_per_video"]) and math.isfinite(entry["psnr"])
        assert entry["psnr_gap_db"] == pytest.approx(reference["psnr"] - entry["psnr"])
        assert entry["rfvd_ratio"] == pytest.approx(entry["rfvd"] / reference["rfvd"])
    assert results["student1_1"]["nfe"] == 1 and results["student1_1"]["method"] == "ddim"


@pytest.mark.slow
def test_sampler_nfe_end_to_end_rows_count_the_flops_of_each_generation(tmp_path):
    """A smoke test of the end-to-end section on a random tiny export with a 1-step student:
    each generation's FLOPs are its base passes (two under CFG) plus its decoder passes, the
    reductions are ratios to the first setting, and its second seed is recorded."""
    import copy

    from test_networks import randomise

    from ulvideo.diffusion import logsnr_grid, to_data
    from ulvideo.models import build_base, forward_flops
    from ulvideo.pipeline import Pipeline, autoencoder_fingerprint
    from ulvideo.student import Student, StudentConfig
    from ulvideo.ul import UnifiedLatents

    torch.manual_seed(0)
    ul = randomise(UnifiedLatents(autoencoder_preset("tiny", resolution=32)))
    base_cfg = base_preset("tiny", num_classes=10)
    path = tmp_path / "export"
    Pipeline(ul, randomise(build_base(base_cfg)), base_cfg).save_pretrained(path)
    grid = to_data(logsnr_grid(ul.pixel_schedule, 1))[:-1].tolist()
    student = Student(
        copy.deepcopy(ul.decoder), StudentConfig(1, grid, 8, autoencoder_fingerprint(path))
    )
    Pipeline(ul, student=student).save_pretrained(path)
    out = tmp_path / "nfe.json"
    cmd = [sys.executable, "benchmarks/bench_sampler_nfe.py", "--export", str(path),
           "--decoder_settings", "--base_settings", "--e2e_settings", "ddpm/t/3+teacher/3",
           "ddim/t/2+student/1", "--e2e_videos", "2", "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = run_script(cmd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["end_to_end"]
    assert [(r["setting"], r["seed"]) for r in rows] == [
        ("ddpm/t/3+teacher/3", 0), ("ddim/t/2+student/1", 0), ("ddpm/t/3+teacher/3", 1)
    ]  # fmt: skip
    base = forward_flops(ul.config, "base", 17, 32, 32, base_cfg)
    decoder = forward_flops(ul.config, "decoder", 17, 32, 32)
    # CFG 6: two base passes a step; ddpm to the data takes its 3 steps, the student 1
    assert rows[0]["flops_per_video"] == pytest.approx(3 * 2 * base + 3 * decoder)
    assert rows[1]["flops_per_video"] == pytest.approx(2 * 2 * base + 1 * decoder)
    for row in rows:
        assert row["flops_reduction"] == pytest.approx(
            rows[0]["flops_per_video"] / row["flops_per_video"]
        )
        assert row["wall_time_reduction"] == pytest.approx(
            rows[0]["s_per_video"] / row["s_per_video"]
        )
        assert positive(row["s_per_video"]) and 0 <= row["class_accuracy"] <= 1
    assert rows[2]["flops_per_video"] == rows[0]["flops_per_video"]


def test_run_all_runs_every_benchmark_or_says_why_not(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    run_all = importlib.import_module("run_all")
    scripts = {p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh")}
    scripts -= {"run_all.py", "common.py"}  # the runner and the helpers every script imports
    ran, skipped = set(run_all.SCRIPTS.values()), set(run_all.NOT_RUN)
    assert not ran & skipped and ran | skipped == scripts
    assert all(reason for reason in run_all.NOT_RUN.values())
