"""One-line user errors at every entry point: the shared handler, then `python -m ulvideo.evaluate.fvd`
and `python -m ulvideo eval k600` as subprocesses (the `ulvideo` CLI: test_sample_cli.py; the
recipes: test_recipes.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ulvideo.errors import run_main

ROOT = Path(__file__).resolve().parents[1]


def test_run_main_one_line_exit_2_and_debug(capsys):
    def fail(argv):
        assert "--debug" not in argv
        raise FileNotFoundError(f"{argv[0]} not found:\n  give an existing file")

    assert run_main("prog", fail, ["x.bin"]) == 2
    assert capsys.readouterr().err == (
        "prog: error: x.bin not found: give an existing file (--debug shows the traceback)\n"
    )
    with pytest.raises(FileNotFoundError):
        run_main("prog", fail, ["x.bin", "--debug"])
    assert run_main("prog", lambda argv: None, ["--debug"]) == 0
    with pytest.raises(TypeError):  # a bug, not a user error: the traceback
        run_main("prog", lambda argv: None + 1, [])


def run(*args, debug=False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *args, *(["--debug"] if debug else [])]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_entry_points_report_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        ("-m", "ulvideo.evaluate.fvd", "--real", str(empty), "--fake", str(empty)): (
            f"python -m ulvideo.evaluate.fvd: error: no videos at {empty}: expected .mp4"
        ),
        (
            "-m",
            "ulvideo",
            "eval",
            "k600",
            "--checkpoint",
            str(tmp_path),
            "--data_root",
            str(empty),
        ): (f"ulvideo: error: no test videos found under {empty}. Expected"),
    }
    for args, start in cases.items():
        proc = run(*args)
        assert proc.returncode == 2 and proc.stderr.startswith(start), proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = run(*args, debug=True)  # the recipe again, with the traceback
    assert (
        proc.returncode == 1 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr
    )
    assert not (tmp_path / "run").exists()  # nothing written before the data was found
