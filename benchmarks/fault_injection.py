"""Fault injection: training is SIGKILLed at random points and its checkpoints are damaged; every
resumed run must finish with the weights of the uninterrupted run, bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py --faults 20 \
        --out benchmarks/results/cpu_fault_injection.json

A reference run (tiny preset, demo data, no mixed precision, a checkpoint every step) counts how
often each point is reached. Each trial then starts a fresh run that kills itself (SIGKILL) on the
n-th (random) pass through one point, or trains part way and has a file of its newest checkpoint
truncated or a byte flipped; then the same command is re-run with `--resume auto`. The points:

- `forward`: entering the stage's forward pass
- `optimizer`: entering AdamW's step
- `checkpoint`: a file of a checkpoint (model, optimizer, scheduler, EMA, meta.json) half written
- `export`: a file of an export (in a checkpoint or `final/`) half written, before its rename

A trial passes when the faulty run died of the fault, the resumed run exits 0, and both the final
export (EMA) and the newest checkpoint's network weights equal the reference run's tensor for
tensor. Each run is a subprocess (`--child`), so a kill loses exactly what a real one would.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(
    stage=1,
    preset="tiny",
    data="demo",
    frames=5,
    resolution=16,
    batch_size=2,
    num_workers=0,
    lr=2e-3,
    lr_warmup_steps=2,
    max_steps=6,  # the sweep's; a child may be given fewer (the test suite's case)
    log_every=1,
    eval_every=1000,
    checkpoint_every=1,
    keep_last=2,
    mixed_precision="no",
    cpu=True,
)
KILL_POINTS = ("forward", "optimizer", "checkpoint", "export")
CORRUPTIONS = ("truncate", "flip")


# ---------------------------------------------------------------- the child: one training run


def install_hooks(kill_point: str | None, kill_at: int, counts: Counter) -> None:
    """Count each pass through a kill point; SIGKILL this process on pass `kill_at` of `kill_point`
    (the file points first leave the file half written, as a kill mid-write would)."""
    import accelerate.checkpointing
    import torch

    from ulvideo import serialization
    from ulvideo.train import checkpoint, stages

    def reached(point: str, path=None) -> None:
        counts[point] += 1
        if point == kill_point and counts[point] == kill_at:
            if path is not None:
                os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    def hook(owner, name, point, written=None):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if written is None:
                reached(point)
                return original(*args, **kwargs)
            out = original(*args, **kwargs)
            reached(point, written(*args))
            return out

        setattr(owner, name, wrapper)

    hook(stages.Stage1, "forward", "forward")
    hook(torch.optim.AdamW, "step", "optimizer")
    hook(accelerate.checkpointing, "save", "checkpoint", written=lambda obj, f, *a: f)
    hook(checkpoint, "_write_json_durable", "checkpoint", written=lambda path, obj: path)
    atomic_write = (
        serialization.atomic_write
    )  # export files: written to a temporary name, then renamed

    def export_write(path, write):
        atomic_write(path, lambda tmp: (write(tmp), reached("export", tmp)))

    serialization.atomic_write = export_write


def child(run_dir: str, kill: str | None, counts_path: str | None, max_steps: int) -> None:
    from ulvideo.train import TrainConfig, train

    counts = Counter()
    point, _, n = (kill or "none:0").partition(":")
    install_hooks(point if kill else None, int(n), counts)
    train(TrainConfig(**{**CONFIG, "max_steps": max_steps}, output_dir=run_dir))
    if counts_path:
        Path(counts_path).write_text(json.dumps(counts))


# ---------------------------------------------------------------- the parent: the sweep


def run_child(
    run_dir: Path, kill: str | None = None, counts: Path | None = None, max_steps: int = 6
) -> subprocess.CompletedProcess:
    """One training run of CONFIG as a subprocess, killed at `kill` ("point:n") if given."""
    cmd = [sys.executable, __file__, "--child", str(run_dir), "--max_steps", str(max_steps)]
    cmd += ["--kill", kill] if kill else []
    cmd += ["--counts", str(counts)] if counts else []
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]  # this checkout's ulvideo
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def corrupt_newest(run_dir: Path, how: str, rng: random.Random) -> str:
    """Truncate, or flip one byte of, a random file of the newest complete checkpoint."""
    from ulvideo.train.checkpoint import complete_checkpoints

    newest = complete_checkpoints(run_dir)[-1]
    path = rng.choice(sorted(p for p in newest.rglob("*") if p.is_file()))
    size = path.stat().st_size
    if how == "truncate":
        os.truncate(path, rng.randrange(size))
    else:
        with open(path, "r+b") as f:
            offset = rng.randrange(size)
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    return str(path.relative_to(run_dir))


def final_weights(run_dir: Path) -> dict:
    """The final export's (EMA) weights and the newest checkpoint's network weights."""
    from safetensors.torch import load_file

    from ulvideo.train.checkpoint import complete_checkpoints

    return {
        "ema": load_file(run_dir / "final" / "autoencoder" / "model.safetensors"),
        "network": load_file(complete_checkpoints(run_dir)[-1] / "model.safetensors"),
    }


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return all(
        a[part].keys() == b[part].keys()
        and all(torch.equal(a[part][k], b[part][k]) for k in a[part])
        for part in a
    )


def trial(work: Path, fault: dict, reference: dict, rng: random.Random) -> dict:
    """One fault, then the resumed run; the fault dict gets the outcome."""
    run_dir = work / f"trial_{fault['index']:02d}"
    tic = time.perf_counter()
    died = run_child(run_dir, kill=f"{fault['point']}:{fault['at']}")
    fault["faulty_exit"] = died.returncode
    fault["killed"] = died.returncode == -signal.SIGKILL
    if fault["kind"] == "corrupt":
        fault["corrupted"] = corrupt_newest(run_dir, fault["how"], rng)
    resumed = run_child(run_dir)
    fault["resumed_exit"] = resumed.returncode
    fault["warnings"] = [line for line in resumed.stdout.splitlines() if line.startswith("warning")]
    fault["resumed_from"] = next(
        (line for line in resumed.stdout.splitlines() if line.startswith("resumed from")), None
    )
    fault["equal"] = resumed.returncode == 0 and same_weights(final_weights(run_dir), reference)
    fault["passed"] = fault["killed"] and fault["equal"]
    fault["seconds"] = round(time.perf_counter() - tic, 1)
    if resumed.returncode != 0:
        fault["stderr_tail"] = resumed.stderr[-2000:]
    return fault


def plan(counts: dict, faults: int, rng: random.Random) -> list[dict]:
    """`faults` trials: kills cycling over the points, every fifth a corruption after a kill."""
    out = []
    for i in range(faults):
        if i % 5 == 4:
            fault = {"kind": "corrupt", "how": CORRUPTIONS[(i // 5) % 2], "point": "forward"}
            # killed after at least one checkpoint, so there is a newest one to damage
            fault["at"] = rng.randint(2, counts["forward"])
        else:
            point = KILL_POINTS[(i - i // 5) % len(KILL_POINTS)]
            fault = {"kind": "kill", "point": point, "at": rng.randint(1, counts[point])}
        out.append({"index": i, **fault})
    return out


def sweep(work: Path, faults: int, seed: int) -> dict:
    tic = time.perf_counter()
    proc = run_child(work / "reference", counts=work / "counts.json")
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{proc.stderr[-3000:]}")
    counts = json.loads((work / "counts.json").read_text())
    reference = final_weights(work / "reference")
    reference_s = time.perf_counter() - tic
    rng = random.Random(seed)
    results = []
    for fault in plan(counts, faults, rng):
        results.append(trial(work, fault, reference, rng))
        print(json.dumps(results[-1]), file=sys.stderr)
    return {
        "config": CONFIG,
        "seed": seed,
        "passes_per_point": counts,
        "faults": len(results),
        "passed": sum(r["passed"] for r in results),
        "by_point": {
            f"{r_kind}:{point}": sum(
                1 for r in results if r["kind"] == r_kind and r["point"] == point
            )
            for r_kind, point in sorted({(r["kind"], r["point"]) for r in results})
        },
        "checkpoints_moved_aside": sum(len(r["warnings"]) for r in results),
        "reference_run_s": round(reference_s, 1),
        "total_s": round(time.perf_counter() - tic, 1),
        "trials": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kill", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--counts", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max_steps", type=int, default=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.kill, args.counts, args.max_steps)

    import tempfile

    from common import machine, write_json

    with tempfile.TemporaryDirectory() as tmp:
        result = sweep(Path(args.work_dir or tmp), args.faults, args.seed)
    result = {"machine": machine("cpu"), **result}
    print(json.dumps(result, indent=2))
    write_json(result, args.out)
    if result["passed"] != result["faults"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
