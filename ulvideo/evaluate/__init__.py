"""Evaluation glue: what loads checkpoints and calls models, over the pure metrics of `evaluation/`.

`ulvideo eval TASK ...` runs one task's command line: `reconstruction` (stage-1 PSNR, SSIM,
swapped-latent PSNR, bits/pixel, rFVD), `k600` (frame prediction FVD) or `ucf101-real` (the real
clips of the UCF-101 FVD protocol).
"""

import importlib

TASKS = {"reconstruction": "reconstruction", "k600": "k600", "ucf101-real": "ucf101"}


def main(argv: list[str]) -> object:
    """`ulvideo eval TASK [flags]`."""
    if not argv or argv[0] not in TASKS:
        raise ValueError(
            f"ulvideo eval needs a task first: one of {', '.join(TASKS)} (then --help for its flags)"
        )
    module = importlib.import_module(f".{TASKS[argv[0]]}", __name__)
    return module.main(argv[1:])
