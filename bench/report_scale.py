"""How big and how slow is the report page at large K and N?

    python bench/report_scale.py --n 1280000 --k 1000                    # arrays (no images), ImageNet-sized
    python bench/report_scale.py --store FEATDIR --k 1000                # a real store: K-Means K, thumbnails

Writes the page, then opens it in headless Chromium (`--dump-dom`, which returns once the
page has loaded) and times that against a blank page. One JSON row per run is appended to
--results.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from seal_fast import pipeline
from seal_fast.store import write_store


def synthetic_store(folder: Path, n: int, k: int, d: int, seed: int = 0):
    """n rows of k Gaussian clusters in d dimensions, with their classes (written in blocks)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 3
    y = rng.integers(0, k, n)
    Z = np.lib.format.open_memmap(folder / "z.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 262144):
        Z[s:s + 262144] = centres[y[s:s + 262144]] + rng.normal(size=(min(262144, n - s), d)).astype(np.float32)
    Z.flush()
    store = write_store(folder / "feats", spaces={"synthetic": np.load(folder / "z.npy", mmap_mode="r")}, labels=y)
    # a clustering that is right on 90% of the rows
    labels = np.where(rng.random(n) < 0.9, y, rng.integers(0, k, n))
    return store, labels


def browser_seconds(page: Path) -> float | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        t = time.perf_counter()
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--dump-dom", page.as_uri()], capture_output=True, timeout=600, check=True)
        return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_280_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--store", default=None, help="a real feature store: K-Means with --k on it instead")
    ap.add_argument("--work", default=None, help="folder for the arrays and the page (default: a temporary one)")
    ap.add_argument("--results", default=None, help="append the JSON row to this .jsonl")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="report-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.store:
        # one short K-Means: the page's size and speed depend on K and the images, not on the fit's quality
        run = pipeline.cluster(args.store, "kmeans", args.k, seed=0, n_init=1, max_iter=30)
        pipeline.save_run(run, work / "labels.npy")
        features, what = args.store, f"K-Means (1 init, 30 iterations) K={args.k} on {Path(args.store).name}"
    else:
        store, labels = synthetic_store(work, args.n, args.k, args.d)
        np.save(work / "labels.npy", labels)
        features, what = store.path, f"synthetic arrays N={args.n} d={args.d}, K={args.k}"
    t = time.perf_counter()
    summary = pipeline.report(work / "labels.npy", features, work / "report.html")
    make_s = time.perf_counter() - t
    blank = work / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body>blank</body></html>")
    load, base = browser_seconds(work / "report.html"), browser_seconds(blank)
    row = {"what": what, "n": summary["n"], "k": summary["k"], "bytes": summary["bytes"],
           "make_s": round(make_s, 1), "browser_load_s": round(load, 2) if load else None,
           "browser_blank_s": round(base, 2) if base else None,
           "thumbnails": (work / "report.html").read_text().count("data:image/"),
           "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU",
           "date": dt.date.today().isoformat()}
    print(json.dumps(row))
    if args.results:
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
