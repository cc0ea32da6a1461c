"""Multi-process tests' helper: run a script on 2 CPU processes with `accelerate launch` (gloo).

`accelerate launch --cpu` starts a single process, so a recipe config with `use_cpu: true` and a
multi-process distributed type is launched (recipes/configs/cpu_2proc.yaml: DDP, fsdp_cpu.yaml:
FSDP). `train_script` writes a script that runs `ulvideo.train.train` on a list of configs, one
after another, optionally killed right after its first checkpoint (as test_train's exact-resume
test does in one process).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script, *args, config: str = "cpu_2proc.yaml", timeout: int = 600):
    """Run `script` with `args` on the processes of `recipes/configs/<config>`; assert it exits 0."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / config),
    ]
    cmd += ["--main_process_port", str(free_port()), str(script), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


TRAIN_SCRIPT = """
import dataclasses, hashlib, json, sys
from torch.utils.data import Dataset
from ulvideo.train import TrainConfig, train
from ulvideo.train import checkpoint, data, trainer

class EpochRecorder(Dataset):  # the first `size` examples, each read under the epoch it records
    def __init__(self, dataset, size):
        self.dataset, self.size, self.epoch, self.read = dataset, size, None, []
        self.num_classes = getattr(dataset, "num_classes", 0)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        self.read.append(self.epoch)
        return self.dataset[index]

recorders = []

def recorded_data(config, size):
    training = data.build_training_data(config)
    recorders.append(EpochRecorder(training.dataset, size))
    return dataclasses.replace(training, dataset=recorders[-1])

def sha256(tensors):
    return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in tensors)).hexdigest()

def save_then_die(*args, **kwargs):  # the run is killed right after its first checkpoint
    checkpoint.save_checkpoint(*args, **kwargs)
    raise KeyboardInterrupt("killed")

for run in json.loads(open(sys.argv[1]).read()):
    config = TrainConfig(**run["config"])
    trainer.save_checkpoint = save_then_die if run.get("die_after_checkpoint") else checkpoint.save_checkpoint
    size = run.get("epoch_size")  # that many examples, recording the epoch each is read under
    trainer.build_training_data = (lambda c: recorded_data(c, size)) if size else data.build_training_data
    recorders.clear()
    try:
        result = train(config)
    except KeyboardInterrupt:
        continue
    acc = result.accelerator
    info = {
        "world": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "ema_sha256": sha256(result.ema.state_dict().values()),  # the full EMA copy of each process
        # this process's weights (its shards under FSDP: train() has ended the process group)
        "network_sha256": sha256(p.to_local() if hasattr(p, "to_local") else p
                                 for p in result.network.parameters()),
        "epochs_read": recorders[0].read if recorders else None,
    }
    with open(f"{config.output_dir}/rank{acc.process_index}.json", "w") as f:
        json.dump(info, f)
"""


def launch_training(tmp_path: Path, runs: list[dict], config: str = "cpu_2proc.yaml"):
    """Train each of `runs` ({"config": TrainConfig, "die_after_checkpoint": bool}) in order on the
    processes of `config`."""
    script, spec = tmp_path / "train_runs.py", tmp_path / "runs.json"
    script.write_text(TRAIN_SCRIPT)
    payload = [{**run, "config": run["config"].to_dict()} for run in runs]
    spec.write_text(json.dumps(payload))
    return launch(script, spec, config=config)


def rank_info(run_dir: Path, world: int = 2) -> list[dict]:
    """What each process of a launched run recorded (train_script)."""
    return [json.loads((Path(run_dir) / f"rank{r}.json").read_text()) for r in range(world)]
