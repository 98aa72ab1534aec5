"""Fashion-MNIST accuracy table: K-Means, TURTLE, SEAL and SATC on EfficientNet-Lite0 features.

Protocol of the papers: fit on the 60k train split, label the 10k test split
with the fitted model, report ACC / NMI / ARI (percent) on the test split,
mean ± std over seeds. Also reports the triplet accuracy (SEAL appendix D) of
phi and of SEAL's phi_hat on the test split.

    python bench/fashion_mnist.py --train feats/fmnist-train --test feats/fmnist-test \
        --seeds 0 1 2 --out bench/results/fashion-mnist-cpu.json

Missing feature stores are made first with `seal_fast.embed` (Debian's
dataset-fashion-mnist; about 35 min for 70k images on 2 CPU cores, seconds on a GPU).
Every finished run is appended to the JSON-lines file given by --out, so an
interrupted table can be resumed with --resume, and --table-only prints the
table of the runs recorded so far.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seal_fast.embed import embed
from seal_fast.metrics import evaluate, triplet_accuracy
from seal_fast.models.kmeans import KMeans
from seal_fast.models.satc import SATC
from seal_fast.models.seal import SEAL
from seal_fast.models.turtle import TURTLE
from seal_fast.store import FeatureStore

SPACE = "efficientnet-lite0"
METRICS = ("acc", "nmi", "ari")


def feature_store(path: Path, split: str) -> FeatureStore:
    if (path / "manifest.json").exists():
        return FeatureStore(path)
    return embed(f"fashion-mnist-{split}", path, compile=True)


def restarts(method: str, args) -> int:
    """--restarts, or the method's own default (SEAL 3, SATC 5)."""
    if args.restarts is not None:
        return args.restarts
    return {"seal": SEAL, "satc": SATC}[method].__init__.__kwdefaults__["restarts"]


def make_model(method: str, seed: int, args):
    if method == "kmeans":
        return KMeans(10, seed=seed)
    if method == "turtle":
        return TURTLE(10, iterations=args.iterations, seed=seed)
    if method == "seal":
        return SEAL(10, iterations=args.iterations, restarts=restarts(method, args), n_neighbors=args.neighbors,
                    label_on=args.label_on, label_restarts=args.label_restarts, seed=seed, verbose=args.verbose)
    if method == "satc":
        return SATC(10, epochs=args.satc_epochs, temperature=args.satc_temperature, restarts=restarts(method, args),
                    n_neighbors=args.neighbors, seed=seed, verbose=args.verbose)
    raise ValueError(method)


def run_config(method: str, args) -> dict:
    if method == "seal":
        return {"restarts": restarts(method, args), "iterations": args.iterations, "n_neighbors": args.neighbors,
                "label_on": args.label_on, "label_restarts": args.label_restarts}
    if method == "satc":
        return {"restarts": restarts(method, args), "temperature": args.satc_temperature, "epochs": args.satc_epochs,
                "n_neighbors": args.neighbors}
    if method == "turtle":
        return {"iterations": args.iterations}
    return {}


def variant(row: dict) -> str:
    """Table label: the method, and for the distillation methods the settings
    that changed between recorded runs (rows before `config` was recorded used
    one restart and, for SATC, the paper's T = 0.5; rows without `n_neighbors`
    used the papers' 50, rows without `label_on` labeled on the kept phi_hat;
    SATC rows name their epochs when not 20)."""
    if row["method"] not in ("seal", "satc"):
        return row["method"]
    config = row.get("config", {})
    label = f"{row['method']}, {config.get('restarts', 1)} restart(s)"
    if row["method"] == "satc":
        label += f", T={config.get('temperature', 0.5)}"
        if config.get("epochs", 20) != 20:
            label += f", {config['epochs']} epochs"
    if config.get("n_neighbors", 50) != 50:
        label += f", top-{config['n_neighbors']} neighbours"
    if config.get("label_on", "phi_hat") != "phi_hat" or config.get("label_restarts", "kept") != "kept":
        label += f", labeling on {config.get('label_on', 'phi_hat')} ({config.get('label_restarts', 'kept')})"
    return label


def run_one(method: str, seed: int, train: FeatureStore, test: FeatureStore, args) -> dict:
    Z = np.array(train.space(SPACE))
    Zt = np.array(test.space(SPACE))
    model = make_model(method, seed, args)
    t0 = time.perf_counter()
    if method in ("seal", "satc"):
        model.fit([Z], patches=train.patches())
    else:
        model.fit([Z])
    fit_s = time.perf_counter() - t0
    row = {"method": method, "seed": seed, "fit_s": round(fit_s, 1), "config": run_config(method, args),
           "train": evaluate(train.labels(), model.labels_),
           "test": evaluate(test.labels(), model.predict([Zt]))}
    if method == "seal":
        yt = test.labels()
        row["triplet_phi"] = triplet_accuracy(Zt, yt, 10000, seed=0)
        row["triplet_phi_hat"] = triplet_accuracy(model.transform([Zt])[0], yt, 10000, seed=0)
        with torch.no_grad():  # the visual head's own answer, for context
            head = model.heads_[0].eval()
            row["head_test"] = evaluate(yt, head(F.normalize(torch.from_numpy(Zt), dim=1)).argmax(1).numpy())
    details = getattr(model, "fit_details_", None)
    if details is not None:
        row["fit_details"] = details
    return row


def table(rows: list[dict]) -> str:
    lines = ["| method | seeds | ACC | NMI | ARI | fit time (s) |", "|---|---|---|---|---|---|"]
    labels = sorted({variant(r) for r in rows}, key=lambda v: (["kmeans", "turtle", "seal", "satc"].index(
        v.split(",")[0]), v))
    for label in labels:
        runs = [r for r in rows if variant(r) == label]
        cells = []
        for m in METRICS:
            v = np.array([r["test"][m] for r in runs])
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v[0]:.1f}")
        fit = np.mean([r["fit_s"] for r in runs])
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + f" | {fit:.0f} |")
    for label in labels:
        seal = [r for r in rows if variant(r) == label and r["method"] == "seal"]
        if seal:
            phi = np.mean([r["triplet_phi"] for r in seal])
            hat = np.mean([r["triplet_phi_hat"] for r in seal])
            lines.append(f"\ntriplet accuracy on the test split ({label}): phi {phi:.3f}, phi_hat {hat:.3f}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["kmeans", "turtle", "seal", "satc"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=2000, help="outer iterations of human labeling")
    ap.add_argument("--satc-epochs", type=int, default=200)
    ap.add_argument("--satc-temperature", type=float, default=1.0)
    ap.add_argument("--restarts", type=int, default=None,
                    help="distillation restarts of SEAL and SATC (default: each method's own, 3 and 5)")
    ap.add_argument("--neighbors", type=int, default=50, help="cross-modal neighbours of SEAL and SATC")
    ap.add_argument("--label-on", default="phi+phi_hat", choices=("phi_hat", "phi+phi_hat"),
                    help="spaces of SEAL's labeling")
    ap.add_argument("--label-restarts", default="all", choices=("kept", "all"),
                    help="phi_hat of SEAL's kept restart or of every restart")
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file, one row per run")
    ap.add_argument("--resume", action="store_true", help="skip runs already in --out")
    ap.add_argument("--table-only", action="store_true", help="print the table of the runs in --out")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.table_only:
        print(table([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]))
        return

    train = feature_store(args.train, "train")
    test = feature_store(args.test, "test")
    rows = []
    if args.resume and args.out.exists():
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    done = {(variant(r), r["seed"]) for r in rows}
    for method in args.methods:
        for seed in args.seeds:
            if (variant({"method": method, "config": run_config(method, args)}), seed) in done:
                continue
            row = run_one(method, seed, train, test, args)
            row["threads"] = torch.get_num_threads()
            print(json.dumps({k: row[k] for k in ("method", "seed", "fit_s", "test")}), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
