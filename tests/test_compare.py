"""`ulvideo compare-latents`: the rate-knob search, the defaults, and the run end to end."""

import json
import math

import pytest

from ulvideo.compare import bracket, main, plot_title, stage1_defaults


def power_law(scale: float, power: float):
    """bits/pixel = scale * knob^power: the rate against c_lf (power > 0) or beta (< 0)."""
    calls = []

    def measure(knob):
        calls.append(knob)
        return scale * knob**power, {"knob": knob}

    return measure, calls


@pytest.mark.parametrize("power,rises", [(0.7, True), (-0.5, False)])
def test_bracket_steps_to_the_target_then_interpolates(power, rises):
    measure, calls = power_law(0.05, power)
    target = 0.05 * 20.0**power  # the knob that hits it: 20
    probes, chosen, within = bracket(measure, 1.0, target, 0.1, 6, 4.0, rises, log=lambda s: None)
    # 1 -> 4 -> 16 (still short) -> 64 (past it) -> the log-log interpolation lands on 20
    assert calls[:4] == [1.0, 4.0, 16.0, 64.0] and len(calls) == 5
    assert calls[4] == pytest.approx(20.0) and within
    assert chosen["knob"] == pytest.approx(20.0) and chosen["result"] == {"knob": calls[4]}
    assert [p["knob"] for p in probes] == calls


def test_bracket_stops_at_a_probe_within_tolerance_and_reports_a_miss():
    measure, calls = power_law(0.1, 1.0)
    _, chosen, within = bracket(measure, 1.05, 0.1, 0.1, 5, 4.0, True, log=lambda s: None)
    assert calls == [1.05] and within and chosen["bits_per_pixel"] == pytest.approx(0.105)
    # a rate that does not move with the knob cannot be bracketed: the closest probe, flagged
    lines = []
    flat = lambda knob: (0.5, {})  # noqa: E731
    probes, chosen, within = bracket(flat, 1.0, 0.1, 0.1, 3, 2.0, True, log=lines.append)
    assert not within and len(probes) == 3 and [p["knob"] for p in probes] == [1.0, 0.5, 0.25]
    assert lines[0] == "probe 1: knob 1 -> 0.5 bits/pixel (+400.0% of target)"


def test_the_plot_says_equal_rate_only_when_every_arm_landed_within_tolerance():
    report = {"target_bpp": 0.157, "arms": {"ul": {"within_tolerance": True},
                                            "kl": {"within_tolerance": True}}}  # fmt: skip
    assert plot_title(report) == "latents at equal rate (0.157 bits/pixel)"
    report["arms"]["kl"]["within_tolerance"] = False
    assert plot_title(report) == "latents at UNEQUAL rates (target 0.157 bits/pixel not bracketed)"


def test_demo_defaults_are_the_demos_stage1_and_flags_override_single_fields():
    config = stage1_defaults(
        None, ["--data", "demo", "--max_steps", "40", "--model", '{"decoder_bias": 1}']
    )
    assert config.max_steps == 40 and config.latent_hold_steps == 10  # the demo's 1/4 hold
    assert config.model == {"loss_factor": 6.0, "decoder_bias": 1, "spatial_downsample": 4}
    assert config.frames == 5 and config.resolution == 32 and config.batch_size == 16


def test_bad_flags_fail_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        main(["--data", "demo", "--arms", "ul,vq", "--output_dir", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="eval_points 5 needs 1 to --stage2_steps"):
        main(["--data", "demo", "--stage2_steps", "4", "--eval_points", "5",
              "--output_dir", str(tmp_path / "b")])  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


TINY_RUN = ["--data", "demo", "--max_steps", "6", "--batch_size", "4", "--stage2_steps", "4",
            "--stage2_batch_size", "8", "--stage2_clips", "64", "--eval_points", "2",
            "--fvd", "false", "--num_samples", "4", "--eval_videos", "4", "--eval_batch_size", "2",
            "--base_steps", "2", "--decoder_steps", "2", "--log_every", "1"]  # fmt: skip


@pytest.mark.slow  # ~2 min on 2 cores
def test_compare_latents_end_to_end_at_a_tiny_budget(tmp_path):
    out = tmp_path / "cmp"
    report = main([*TINY_RUN, "--max_probes", "2", "--output_dir", str(out)])
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(report))
    assert (out / "compare.png").stat().st_size > 1000
    ul, kl = report["arms"]["ul"], report["arms"]["kl"]
    # UL at its default c_lf sets the target; KL is searched to it, or says it could not
    target = report["target_bpp"]
    assert ul["value"] == 6.0 and ul["stage1"]["bits_per_pixel"] == target
    for arm in (ul, kl):
        off = abs(arm["stage1"]["bits_per_pixel"] / target - 1)
        assert (off <= 0.1) == arm["within_tolerance"]
        assert arm["within_tolerance"] or "could not bracket" in arm["note"]
    assert len(kl["probes"]) in (1, 2) and kl["knob"] == "kl_weight"
    # the arms differ only in the regulariser: the same data, seed and budgets in both stages
    without = lambda c: {k: v for k, v in c.items() if k != "model"}  # noqa: E731
    assert without(ul["stage1_config"]) == without(kl["stage1_config"])
    assert ul["stage1_config"]["model"]["regularizer"] == "ul"
    assert kl["stage1_config"]["model"]["regularizer"] == "kl"
    assert without(ul["stage2_config"]) == without(kl["stage2_config"])
    assert ul["training_data"] == kl["training_data"] and ul["training_data"]["count"] == 64
    # each arm's stage 2 takes the latent scale its stage-1 export measured (ulvideo.latent_scale)
    from ulvideo.pipeline import Pipeline

    for name, arm in (("ul", ul), ("kl", kl)):
        stage1 = Pipeline.from_pretrained(arm["stage1"]["export"]).autoencoder.config
        stage2 = Pipeline.from_pretrained(out / name / "stage2" / "final").base_config
        assert stage1.latent_scale > 0 and stage2.latent_scale == stage1.latent_scale
    for name in ("ul", "kl"):
        rows = [r for r in report["rows"] if r["arm"] == name]
        assert [r["stage2_step"] for r in rows] == [2, 4]
        assert rows[1]["stage2_flops"] == 2 * rows[0]["stage2_flops"] > 0
        assert all(0 <= r["class_accuracy"] <= 1 and math.isfinite(r["psnr"]) for r in rows)
