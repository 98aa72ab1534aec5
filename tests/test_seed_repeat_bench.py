"""bench/seed_repeat.py, behind the README's note on seeds: the same seed and thread
count repeat a SEAL fit bit for bit."""
import numpy as np
import torch
from conftest import blobs, load_bench

from seal_fast.store import write_store


def test_same_seed_same_threads_repeats_exactly(tmp_path, capsys):
    threads = torch.get_num_threads()
    Z, y = blobs(n=80, k=4, d=16)
    patches = np.random.default_rng(0).normal(size=(80, 16, 8)).astype(np.float32)
    write_store(tmp_path / "visual", spaces={"v": Z}, labels=y)
    write_store(tmp_path / "spatial", spaces={"v": Z}, patches=patches, labels=y)
    load_bench("seed_repeat").main(["--store", str(tmp_path / "visual"), "--patches", str(tmp_path / "spatial"),
                                    "--threads", "1", "--n-clusters", "4"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| (")]
    assert rows == ["| (1, 0) | (1, 1) | 0 | 100.0% |"]
    assert torch.get_num_threads() == threads  # the test session's thread count is left as it was
