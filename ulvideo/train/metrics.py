"""Run logging: a JSONL metrics file always, plus accelerate trackers (TensorBoard) when present."""

import json
import math
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per log step to `<run>/metrics.jsonl` (main process only)."""

    def __init__(self, accelerator, run_dir, resume_step: int = 0):
        self.accelerator = accelerator
        self.path = Path(run_dir) / "metrics.jsonl"
        if accelerator.is_main_process and self.path.exists():
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        # a resumed run rewrites the steps it repeats, so the log has each step once
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, values: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        # JSON has no NaN: a non-finite value is written as null
        clean = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in values.items()
        }
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        self.accelerator.log(
            {k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step
        )


def read_metrics(run_dir) -> list[dict]:
    """All records of `<run>/metrics.jsonl`, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
