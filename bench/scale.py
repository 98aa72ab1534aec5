"""How every stage grows with N: the whole pipeline (store read, K-Means, TURTLE, and
SEAL's spatial features, neighbour search, distillation, labeling and prediction)
on synthetic data, with per-stage seconds, peak host memory and peak device memory.

    python bench/scale.py --n 10000 40000 160000 640000 --out bench/results/scale-cpu.jsonl
    python bench/scale.py --n 1281167 --dims 768 1536 --clusters 1000 --device cuda --out ...   # ImageNet size

    python bench/scale.py --summary bench/results/scale-cpu.jsonl   # the growth of every stage

Iteration counts are fixed and small (they are not what is measured: the cost of
one iteration at each N is), so a row's seconds are comparable across N. Peak
host memory is the largest resident set seen while the stage ran (sampled every
10 ms): `peak_rss_mb` as it is, `peak_host_mb` minus the resident set before the
stage (memory the allocator kept from an earlier stage or N shows in the first, not
the second, so the growth fit uses `peak_rss_mb`); the data itself lives in a memory-mapped
store on disk, as it would for a user.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from seal_fast import SEAL, TURTLE, FeatureStore, KMeans
from seal_fast.distillation import (DistillConfig, distill_with_restarts, neighbor_index, spatially_aware_embedding,
                                    visual_and_spatial)
from seal_fast.labeling import LabelingConfig, human_labeling
from seal_fast.store import write_store


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Stages:
    """Times stages and samples the resident set and the device's peak memory while each runs."""

    def __init__(self, device: torch.device, verbose: bool = True, emit=None):
        # emit(row) is called as each stage ends, so a run cut short keeps the stages it finished
        self.device, self.rows, self.verbose, self.emit = device, [], verbose, emit

    @contextmanager
    def stage(self, name: str, **extra):
        base, peak, stop = rss(), [rss()], threading.Event()

        def sample():
            while not stop.wait(0.01):
                peak[0] = max(peak[0], rss())
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        stop.set()
        watcher.join()
        peak[0] = max(peak[0], rss())
        row = {"stage": name, "seconds": round(seconds, 3), "peak_host_mb": round((peak[0] - base) / 2**20, 1),
               "peak_rss_mb": round(peak[0] / 2**20, 1), **extra}
        if self.device.type == "cuda":
            row["peak_device_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.rows.append(row)
        if self.emit is not None:
            self.emit(row)
        if self.verbose:
            print(json.dumps(row), flush=True)


def synthetic_store(path: Path, n: int, dims: list[int], k: int, patches: tuple[int, int], seed: int = 0):
    """A mixture of k Gaussian clusters seen through one random linear map per space,
    and patches whose mean carries the cluster, written block by block to disk."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    base_dim = 32
    means = rng.normal(size=(k, base_dim)).astype(np.float32) * 3
    maps = [rng.normal(size=(base_dim, d)).astype(np.float32) / np.sqrt(base_dim) for d in dims]
    m, c = patches
    patch_map = rng.normal(size=(base_dim, c)).astype(np.float32) / np.sqrt(base_dim)
    spaces = {f"s{i}": np.lib.format.open_memmap(path.parent / f"tmp_s{i}.npy", "w+", np.float32, (n, d))
              for i, d in enumerate(dims)}
    P = np.lib.format.open_memmap(path.parent / "tmp_p.npy", "w+", np.float16, (n, m, c))
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        base = means[y[s:e]] + rng.normal(size=(e - s, base_dim)).astype(np.float32)
        for (name, Z), A in zip(spaces.items(), maps):
            Z[s:e] = base @ A
        P[s:e] = (base @ patch_map)[:, None, :] + rng.normal(size=(e - s, m, c)).astype(np.float32)
    return write_store(path, spaces=spaces, patches=P, labels=y)


def run(n: int, dims: list[int], k: int, device: torch.device, work: Path, iterations: int, emit=None) -> list[dict]:
    store_path = work / f"store-{n}"
    stages = Stages(device, emit=emit)
    with stages.stage("write store (synthetic data)", n=n):
        synthetic_store(store_path, n, dims, k, (9, 16))
    with stages.stage("open store (memory maps)", n=n):
        store = FeatureStore(store_path)
        Zs = [store.space(name) for name in store.spaces]
        P = store.patches()
    with stages.stage("k-means (n_init=1, max_iter=20)", n=n):
        KMeans(k, n_init=1, max_iter=20, device=device).fit(Zs)
    with stages.stage(f"turtle ({iterations} iterations)", n=n):
        TURTLE(k, iterations=iterations, device=device).fit(Zs)
    # SEAL stage by stage, through the same functions SEAL.fit calls
    X = [torch.from_numpy(np.asarray(Z)).to(device) for Z in Zs]
    generator = torch.Generator().manual_seed(0)
    with stages.stage("seal: spatial features g(x) (frozen GAT)", n=n):
        first = visual_and_spatial(X[0], P, k, spatial_dim=0, patch_neighbors=8, backend="auto",
                                   generator=generator, device=device)
    with stages.stage("seal: top-50 neighbours, both modalities (N^2 d)", n=n):
        for m in first:
            m.neighbor_index = neighbor_index(m.features, 50)
    with stages.stage("seal: distillation (1 epoch)", n=n):
        runs = distill_with_restarts(first, [(0, 1, 1.0)], DistillConfig(epochs=1, min_steps_per_epoch=1),
                                     n_clusters=k, restarts=1, seed=0, device=device)
    with stages.stage(f"seal: labeling on phi + phi_hat ({iterations} iterations)", n=n):
        spaces = [X[0], spatially_aware_embedding(runs.modalities[0].head, X[0])]
        result = human_labeling(spaces, k, LabelingConfig(iterations=iterations, stop_tol=0.0))
    with stages.stage("seal: labels of all rows (blockwise)", n=n):
        result.encoder.predict(spaces)
    with stages.stage("seal: whole fit (1 restart, 1 epoch)", n=n):
        SEAL(k, iterations=iterations, epochs=1, min_steps_per_epoch=1, restarts=1, device=device).fit(
            Zs, patches=P)
    return stages.rows


def summary(path: str) -> str:
    """Per stage: how seconds grow (the exponent b of seconds ~ N^b, a log-log fit) and
    how peak host memory grows (a straight-line fit, MB per 100k rows, and its R^2)."""
    rows = [json.loads(line) for line in open(path)]
    stages: dict[str, list[dict]] = {}
    for r in rows:
        stages.setdefault(r["stage"], []).append(r)
    ns = sorted({r["n"] for r in rows})
    lines = ["| stage | " + " | ".join(f"N={n:,}: s, MB" for n in ns) + " | seconds ~ N^b | peak RSS: MB per 100k rows (R^2) |",
             "|---|" + "---|" * len(ns) + "---|---|"]
    for name, rs in stages.items():
        by_n = {r["n"]: r for r in rs}
        n = np.array(sorted(by_n), dtype=float)
        sec = np.array([by_n[int(k)]["seconds"] for k in n])
        mem = np.array([by_n[int(k)]["peak_rss_mb"] for k in n])
        b = np.polyfit(np.log(n), np.log(np.maximum(sec, 1e-3)), 1)[0] if len(n) > 1 else float("nan")
        slope, icept = np.polyfit(n, mem, 1) if len(n) > 1 else (float("nan"), 0.0)
        resid = mem - (slope * n + icept)
        r2 = 1 - resid.var() / mem.var() if len(n) > 1 and mem.var() > 0 else float("nan")
        cells = " | ".join(f"{by_n[k]['seconds']:.1f}, {by_n[k]['peak_rss_mb']:.0f}" if k in by_n else "-" for k in ns)
        lines.append(f"| {name} | {cells} | {b:.2f} | {1e5 * slope:.0f} ({r2:.3f}) |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--summary", default=None, help="a JSONL this script wrote: print the growth table")
    p.add_argument("--n", nargs="+", type=int, default=[10_000, 40_000, 160_000, 640_000])
    p.add_argument("--dims", nargs="+", type=int, default=[32, 64])
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default=None, help="folder for the synthetic stores (default: a temporary one)")
    p.add_argument("--out")
    args = p.parse_args()
    if args.summary:
        print(summary(args.summary))
        return
    if not args.out:
        p.error("--out is needed (or --summary)")
    device = torch.device(args.device)
    machine = (f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        run(2000, args.dims, args.clusters, device, Path(tmp), 2)  # warm-up: first calls load kernels and libraries
        def emit(row):
            row = {**row, "dims": args.dims, "clusters": args.clusters, "device": str(device), "machine": machine,
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")

        for n in args.n:
            run(n, args.dims, args.clusters, device, Path(tmp), args.iterations, emit=emit)


if __name__ == "__main__":
    main()
