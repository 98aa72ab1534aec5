"""bench/gpu_session.sh, checked where no GPU is: it must say what it skipped, keep
within its time budget, and never leave more files than a GPU lease returns (8)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_session.sh"
MAX_FILES_BACK = 8


def _run(tmp_path, part, **env):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    smi = fake_bin / "nvidia-smi"  # the GPU machine has one; here it answers without a GPU behind it
    smi.write_text("#!/bin/sh\necho 'Fake GPU, 0.0, 0 MiB'\n")
    smi.chmod(0o755)
    python_dir = str(Path(sys.executable).parent)  # the script's python3 must be this test's interpreter
    out = tmp_path / "out"
    full_env = {**os.environ, "OUT": str(out), "PATH": f"{fake_bin}:{python_dir}:{os.environ['PATH']}", **env}
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), part], capture_output=True, text=True, env=full_env, timeout=300)
    return proc, out, time.monotonic() - t0


@pytest.mark.parametrize("part", ["ops", "models"])
def test_without_a_gpu_every_stage_is_reported_skipped(tmp_path, part):
    proc, out, _ = _run(tmp_path, part)
    assert proc.returncode == 0, proc.stderr
    report = (out / f"gpu-{part}.md").read_text()
    assert "device: Fake GPU" in report and "CUDA device visible: False" in report
    stages = ("build", "op self-check", "CUDA op tests", "GPU benchmarks") if part == "ops" else \
        ("build", "estimators on CUDA", "scale run")
    for stage in stages:
        assert f"## {stage}: skipped, no CUDA device visible (0 s)" in report
    assert "Total" in report
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= MAX_FILES_BACK


def test_stages_stop_at_the_budget_and_the_report_keeps_what_finished(tmp_path):
    """Forced to run on the CPU with a 12 s budget: a stage is cut short or skipped,
    the script still ends near the budget, and its report names every stage's fate."""
    proc, out, seconds = _run(tmp_path, "ops", GPU_SESSION_FORCE="1", GPU_SESSION_BUILD="0",
                              GPU_SESSION_SECONDS="12")
    assert proc.returncode == 0, proc.stderr
    assert seconds < 12 + 30  # the budget, plus what runs outside stages (versions, build info)
    report = (out / "gpu-ops.md").read_text()
    assert "## build: skipped, GPU_SESSION_BUILD=0" in report
    assert "TIMED OUT after" in report or "budget is spent (0 s)" in report
    for stage in ("op self-check", "CUDA op tests", "GPU benchmarks"):
        assert f"## {stage}" in report
    assert "of a 12 s budget" in report
    log = (out / "gpu-ops.log").read_text()
    # a stage that started logs its output; on a loaded machine the versions alone can spend the budget
    started = "## op self-check: skipped" not in report
    assert ("===== op self-check" in log) == started
    assert len([p for p in out.rglob("*") if p.is_file()]) <= MAX_FILES_BACK


def test_unknown_part_is_refused(tmp_path):
    proc, _, _ = _run(tmp_path, "everything")
    assert proc.returncode == 2 and "usage" in proc.stderr
