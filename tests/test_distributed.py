"""Scale-out on torch.distributed, on the CPU with gloo: `torchrun --nproc-per-node 2`
embed equals the single-process store, survives a killed rank, and the sharded
neighbour search (and SEAL under torchrun) equals the single-process result."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from seal_fast import FeatureStore
from seal_fast.distributed import _merge, shard
from seal_fast.embed import PARTIAL

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def digits200(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    path = tmp_path_factory.mktemp("d") / "digits200.npz"
    np.savez(path, images=np.round(d.images[:200] * 255 / 16).astype(np.uint8), labels=d.target[:200])
    return path


def _embed_cmd(source, out, *launcher):
    return [*launcher, "-m", "seal_fast", "embed", str(source), "--out", str(out), "--quiet", "--batch-size", "8",
            "--chunk-size", "16", "--patch-backbone", "none", "--device", "cpu"]  # gloo: one GPU cannot serve 2 ranks


@pytest.fixture(scope="module")
def single_store(digits200, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "f"
    subprocess.run(_embed_cmd(digits200, out, sys.executable), check=True, env=ENV, timeout=600)
    return FeatureStore(out)


def _same_store(a: FeatureStore, b: FeatureStore):
    assert a.n == b.n and a.spaces == b.spaces
    np.testing.assert_array_equal(a.labels(), b.labels())
    np.testing.assert_allclose(a.space("efficientnet-lite0"), b.space("efficientnet-lite0"), rtol=1e-4, atol=1e-4)


def test_torchrun_embed_equals_single_process(digits200, single_store, tmp_path):
    proc = subprocess.run(_embed_cmd(digits200, tmp_path / "f", *TORCHRUN), capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = FeatureStore(tmp_path / "f")
    _same_store(store, single_store)
    ranks = store.manifest["distributed"]["ranks"]
    assert store.manifest["distributed"]["world_size"] == 2 and [r["rows"] for r in ranks] == [[0, 100], [100, 200]]
    assert not (tmp_path / "f" / PARTIAL).exists()


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (torchrun's workers), from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)


def test_killed_rank_resumes(digits200, single_store, tmp_path):
    out = tmp_path / "f"
    run = subprocess.Popen(_embed_cmd(digits200, out, *TORCHRUN), env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    partial = out / PARTIAL
    deadline = time.time() + 300
    while time.time() < deadline and len(list(partial.glob("chunk_*.npz"))) < 3:
        time.sleep(0.05)
    workers = _children(run.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)  # one rank dies mid-run; torchrun stops the other and fails
    assert run.wait(timeout=120) != 0
    chunks = sorted(partial.glob("chunk_*.npz"))
    assert 3 <= len(chunks) and not (out / "manifest.json").exists()
    # mark a finished chunk: if the rerun reuses it (rather than embedding again), the mark shows up
    marked = chunks[0]
    with np.load(marked) as z:
        arrays = dict(z)
    arrays["space_efficientnet-lite0"] = arrays["space_efficientnet-lite0"] + 1000.0
    np.savez(marked, **arrays)
    start, end = (int(x) for x in marked.stem.split("_")[1:])
    proc = subprocess.run(_embed_cmd(digits200, out, *TORCHRUN), capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = FeatureStore(out)
    Z, ref = np.asarray(store.space("efficientnet-lite0")), np.asarray(single_store.space("efficientnet-lite0"))
    np.testing.assert_allclose(Z[start:end] - 1000.0, ref[start:end], rtol=1e-4, atol=1e-3)  # reused
    np.testing.assert_allclose(np.delete(Z, np.s_[start:end], 0), np.delete(ref, np.s_[start:end], 0),
                               rtol=1e-4, atol=1e-4)


SHARDED = r"""
import json, sys, numpy as np, torch
from seal_fast import distributed, SEAL
from seal_fast.ops import cosine_topk
rank, world, _ = distributed.init("cpu")
g = torch.Generator().manual_seed(0)
base = torch.randn(150, 6, generator=g)
X = torch.cat([base, base[:60], base[:40] * 2.0])  # exact ties, across both shards
out = {}
for exclude in (True, False):
    v, i = distributed.sharded_cosine_topk(X, 12, exclude_self=exclude)
    rv, ri = cosine_topk(X, X, 12, exclude_self=exclude)
    out[str(exclude)] = [bool(torch.equal(i, ri)), float((v - rv).abs().max())]
Z = torch.cat([torch.randn(40, 8, generator=g) + 4 * c for c in torch.eye(8)[:3]]).numpy()
P = np.repeat(Z[:, None, :6], 9, axis=1) + torch.randn(120, 9, 6, generator=g).numpy()
labels = SEAL(3, iterations=30, epochs=1, restarts=2, patch_neighbors=4, n_neighbors=20, device="cpu",
              seed=5).fit([Z], patches=P).labels_
if rank == 0:
    json.dump({"topk": out, "labels": labels.tolist(), "world": world}, open(sys.argv[1], "w"))
"""


def test_sharded_topk_and_seal_equal_single_process(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    proc = subprocess.run([*TORCHRUN, str(script), str(tmp_path / "two.json")], capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "one.json")], capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = json.loads((tmp_path / "two.json").read_text()), json.loads((tmp_path / "one.json").read_text())
    assert two["world"] == 2 and one["world"] == 1
    for exclude, (same, err) in two["topk"].items():
        assert same and err < 1e-6, exclude
    assert two["labels"] == one["labels"]


def test_merge_keeps_the_lower_index_among_ties():
    values = torch.tensor([[0.5, 0.75, 0.5, 0.75, float("-inf")]])
    indices = torch.tensor([[7, 3, 2, 1, 99]])
    v, i = _merge(values, indices, 3)
    assert i.tolist() == [[1, 3, 2]] and v.tolist() == [[0.75, 0.75, 0.5]]


def test_shards_tile_the_rows():
    for n, w in ((200, 2), (7, 3), (5, 8)):
        bounds = [shard(n, r, w) for r in range(w)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_init_refuses_more_ranks_than_gpus(monkeypatch):
    """torchrun with 2 ranks on a 1-GPU machine: every rank refuses with one line (rank 1
    used to die in set_device while rank 0 waited 30 minutes for it)."""
    from seal_fast import distributed
    from seal_fast.errors import SealFastError

    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SealFastError, match="started 2 ranks on this machine but it has 1 CUDA device"):
        distributed.init("auto")
