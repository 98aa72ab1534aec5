"""Scale-out on one machine: embedding throughput and the top-k neighbour search with
1 process and with G processes under torchrun (gloo on CPU, NCCL on GPUs).

    python bench/distributed.py --ranks 1 2 --out bench/results/distributed-cpu.md

Each setting runs as its own command, timed from the outside (process start-up
and model loading included for embedding: what a user waits for), and inside for
the top-k search (the search alone, after a warm-up call). With G ranks on a
machine of C cores each rank gets C/G threads, so on a CPU the total compute is
the same and the ratio shows only the overhead or the gain of splitting.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

TOPK = r"""
import json, sys, time, torch
from seal_fast import distributed
rank, world, device = distributed.init()
torch.set_num_threads(max(1, int(sys.argv[3]) // world))
g = torch.Generator().manual_seed(0)
X = torch.randn(int(sys.argv[1]), int(sys.argv[2]), generator=g).to(device)
distributed.sharded_cosine_topk(X[:2000], 50)  # warm-up
times = []
for _ in range(3):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    distributed.sharded_cosine_topk(X, 50)
    if device.type == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
if rank == 0:
    print(json.dumps({"seconds": min(times)}))
"""


def launcher(ranks: int) -> list[str]:
    if ranks == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]


def bench_embed(ranks: int, source: Path, work: Path, threads: int) -> dict:
    out = work / f"embed-{ranks}"
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // ranks))}
    t = time.perf_counter()
    subprocess.run([*launcher(ranks), "-m", "seal_fast", "embed", str(source), "--out", str(out), "--quiet",
                    "--patch-backbone", "efficientnet-lite2"], check=True, env=env)
    seconds = time.perf_counter() - t
    n = json.loads((out / "manifest.json").read_text())["n"]
    return {"what": "embed", "ranks": ranks, "images": n, "seconds": round(seconds, 2),
            "images_per_s": round(n / seconds, 2)}


def bench_topk(ranks: int, n: int, d: int, work: Path, threads: int) -> dict:
    script = work / "topk.py"
    script.write_text(TOPK)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // ranks))}
    proc = subprocess.run([*launcher(ranks), str(script), str(n), str(d), str(threads)], check=True, env=env,
                          capture_output=True, text=True)
    seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    return {"what": f"top-50 cosine, N={n}, d={d}", "ranks": ranks, "seconds": round(seconds, 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    p.add_argument("--images", type=int, default=400, help="digits to embed")
    p.add_argument("--n", type=int, default=20000, help="rows of the top-k search")
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--out", required=True, help="Markdown file for the table (the JSON rows go beside it)")
    args = p.parse_args()
    threads = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from sklearn.datasets import load_digits

        d = load_digits()
        reps = -(-args.images // len(d.images))
        images = np.round(np.concatenate([d.images] * reps)[:args.images] * 255 / 16).astype(np.uint8)
        np.savez(work / "digits.npz", images=images, labels=np.concatenate([d.target] * reps)[:args.images])
        for ranks in args.ranks:
            rows.append(bench_embed(ranks, work / "digits.npz", work, threads))
            rows.append(bench_topk(ranks, args.n, args.d, work, threads))
            print(json.dumps(rows[-2]), json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only (gloo)"
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Distributed scale-out — {stamp[:10]}", "",
             f"machine: {platform.node()}, {threads} cores, {device}, torch {torch.__version__}", "",
             f"Made by `python bench/distributed.py {' '.join(sys.argv[1:])}`.", "",
             "| work | ranks | seconds | throughput | × vs 1 rank |", "|---|---|---|---|---|"]
    for r in rows:
        base = next(b for b in rows if b["what"] == r["what"] and b["ranks"] == min(args.ranks))
        lines.append(f"| {r['what']} ({r.get('images', '')} images) | {r['ranks']} | {r['seconds']} | "
                     f"{r.get('images_per_s', '')} | {base['seconds'] / r['seconds']:.2f} |"
                     if r["what"] == "embed" else
                     f"| {r['what']} | {r['ranks']} | {r['seconds']} | | {base['seconds'] / r['seconds']:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".jsonl").write_text("".join(json.dumps({**r, "date": stamp}) + "\n" for r in rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
