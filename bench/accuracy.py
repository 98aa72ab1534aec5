"""Accuracy of K-Means, TURTLE, SEAL and SATC on one dataset, 1-space and 2-space,
over seeds, on the same cached features: the command behind the results tables (README, docs/results.md).

    python bench/accuracy.py --dataset fashion-mnist --seeds 0 1 2 \
        --out bench/results/accuracy-fashion-mnist.jsonl

Datasets: `fashion-mnist` (fit on the 60k train split, label the 10k test split:
the papers' protocol), `fashion-mnist-test` (fit and label the 10k test split),
`digits` (fit and label scikit-learn's 1,797 digits), or any image folder / .npz
(fit and label it all). The feature stores are made once with `seal-fast embed`'s
code and cached under --cache, one per (images, network): its pooled space and its
patch features; a row may take its visual spaces from some networks and its
patches from another. Rows already in --out are skipped, so an interrupted run
continues. Each row records ACC / NMI / ARI on the evaluated split, the fit time,
the settings, the machine and the date; --table writes the Markdown summary
(mean +- std over seeds) of everything in --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from seal_fast import FeatureStore, KMeans, pipeline
from seal_fast.embed import embed
from seal_fast.inputs import ArrayInputs
from seal_fast.models import estimator_class
from seal_fast.metrics import evaluate, triplet_accuracy

NETS = {"lite0": "efficientnet-lite0", "lite1": "efficientnet-lite1", "lite2": "efficientnet-lite2"}

# name -> (method, visual networks, patch network or None, estimator settings)
CONFIGS = {
    "kmeans": ("kmeans", ["lite0"], None, {}),
    "kmeans-2space": ("kmeans", ["lite0", "lite2"], None, {}),
    "turtle": ("turtle", ["lite0"], None, {}),
    "turtle-2space": ("turtle", ["lite0", "lite2"], None, {}),
    "seal-same-network": ("seal", ["lite0"], "lite0", {}),
    "seal": ("seal", ["lite0"], "lite2", {}),
    "seal-lite1-patches": ("seal", ["lite0"], "lite1", {}),
    "seal-2space": ("seal", ["lite0", "lite2"], "lite1", {}),
    # cost and stability candidates (docs/results.md, "SEAL's cost")
    "seal-5-epochs": ("seal", ["lite0"], "lite2", {"epochs": 5}),
    "seal-consensus-start": ("seal", ["lite0"], "lite2", {"labeling_init": "consensus"}),
    "seal-5-epochs-consensus-start": ("seal", ["lite0"], "lite2", {"epochs": 5, "labeling_init": "consensus"}),
    "seal-5-epochs-kept-consensus-start": ("seal", ["lite0"], "lite2", {"epochs": 5, "label_restarts": "kept",
                                                                         "labeling_init": "consensus"}),
    "seal-5-epochs-phi-hat-consensus-start": ("seal", ["lite0"], "lite2", {"epochs": 5, "label_on": "phi_hat",
                                                                            "label_restarts": "kept",
                                                                            "labeling_init": "consensus"}),
    # a restart's basin is set in its first epochs (SATC's measurement): more, shorter restarts
    # give the consensus choice more partitions to agree on for the same distillation cost
    "seal-2-epochs-6-restarts-kept-consensus-start": ("seal", ["lite0"], "lite2",
                                                      {"epochs": 2, "restarts": 6, "label_restarts": "kept",
                                                       "labeling_init": "consensus"}),
    "seal-2-epochs-6-restarts-phi-hat-consensus-start": ("seal", ["lite0"], "lite2",
                                                         {"epochs": 2, "restarts": 6, "label_on": "phi_hat",
                                                          "label_restarts": "kept", "labeling_init": "consensus"}),
    # cheaper schedules than the default's six 2-epoch restarts (the fit within 2x TURTLE's)
    "seal-1-epoch": ("seal", ["lite0"], "lite2", {"epochs": 1}),
    "seal-5-restarts": ("seal", ["lite0"], "lite2", {"restarts": 5}),
    # the SEAL paper's eq. 12 weighs one symmetric InfoNCE per pair where TAC's recipe (here) sums two:
    # doubling the entropy weight restores the paper's balance of distillation against entropy
    "seal-5-epochs-kept-consensus-start-entropy-10": ("seal", ["lite0"], "lite2",
                                                      {"epochs": 5, "label_restarts": "kept",
                                                       "labeling_init": "consensus", "entropy_weight": 10.0}),
    "seal-5-epochs-kept-consensus-start-self-labeling": (
        "seal", ["lite0"], "lite2", {"epochs": 5, "label_restarts": "kept", "labeling_init": "consensus",
                                     "self_labeling": True}),
    "satc": ("satc", ["lite0"], "lite2", {}),
    "satc-same-network": ("satc", ["lite0"], "lite0", {}),
}


def splits(dataset: str) -> tuple[str, str]:
    """(source to fit on, source to evaluate on)."""
    if dataset == "fashion-mnist":
        return "fashion-mnist-train", "fashion-mnist-test"
    return dataset, dataset


def store_for(source: str, net: str, cache: Path, compile: bool = False) -> FeatureStore:
    """The cached store of `source` embedded with network `net` (pooled space and patches);
    `compile` runs the network through torch.compile when the store has to be made."""
    name = Path(source).stem if os.sep in source or source.endswith(".npz") else source
    path = cache / f"{name}-{net}"
    try:
        return FeatureStore(path)
    except Exception:
        print(f"embedding {source} with {NETS[net]} into {path} ...", file=sys.stderr, flush=True)
        return embed(source, path, backbones=[NETS[net]], patch_backbone=NETS[net], compile=compile)


def make_stores(dataset: str, configs: list[str], cache: Path, compile: bool) -> None:
    """Every store the configs read, made (or found) before any fit."""
    # the evaluated split is read for its visual spaces only (run_row), never for patches
    fit_source, eval_source = splits(dataset)
    visual = dict.fromkeys(n for c in configs for n in CONFIGS[c][1])
    patch = dict.fromkeys(CONFIGS[c][2] for c in configs if CONFIGS[c][2])
    for net in dict.fromkeys([*visual, *patch]):
        store_for(fit_source, net, cache, compile)
    for net in visual:
        store_for(eval_source, net, cache, compile)


def inputs(source: str, nets: list[str], patch_net: str | None, cache: Path) -> ArrayInputs:
    """The visual spaces of some networks' stores and the patches of another's, as one input."""
    spaces = {NETS[n]: np.asarray(store_for(source, n, cache).space(NETS[n])) for n in nets}
    patches = store_for(source, patch_net, cache).patches() if patch_net else None
    labels = store_for(source, nets[0], cache).labels()
    for n in nets[1:] + ([patch_net] if patch_net else []):
        other = store_for(source, n, cache).labels()
        if other is None or labels is None or not np.array_equal(other, labels):
            raise SystemExit(f"the stores of {source} do not hold the same images in the same order")
    return ArrayInputs(spaces, patches=patches, labels=labels, description={"kind": "bench", "source": source})


def machine() -> str:
    return f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, " \
           f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"


def run_row(config: str, seed: int, dataset: str, cache: Path, overrides: dict) -> dict:
    method, nets, patch_net, settings = CONFIGS[config]
    fit_source, eval_source = splits(dataset)
    fit_inputs = inputs(fit_source, nets, patch_net, cache)
    params = {**settings, **{k: v for k, v in overrides.items() if k in pipeline.method_params(method)}}
    # fit and label the same images: the spaces just read are the ones to score
    eval_inputs = fit_inputs if eval_source == fit_source else inputs(eval_source, nets, None, cache)
    y = eval_inputs.labels()
    n_clusters = int(len(np.unique(y)))
    run = pipeline.cluster(fit_inputs, method, n_clusters, seed=seed, **params)
    model, fit_s = run.model, run.report["timings"]["fit_s"]
    pred = run.labels if fit_source == eval_source else pipeline.predict(model, eval_inputs)
    eval_Zs = [eval_inputs.space(name) for name in eval_inputs.spaces]
    row = {"dataset": dataset, "config": config, "method": method, "seed": seed,
           "spaces": [NETS[n] for n in nets], "patches": NETS[patch_net] if patch_net else None,
           "params": {k: v for k, v in model.get_params().items() if k not in ("verbose", "device")},
           **evaluate(y, pred), "fit_s": round(fit_s, 1), "machine": machine(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    details = getattr(model, "fit_details_", {})
    if method == "seal":  # the paper's analysis: phi against phi_hat on the evaluated split
        phi, phi_hat = np.asarray(eval_Zs[0]), model.transform(eval_Zs)[0]
        row["triplet_phi"] = round(triplet_accuracy(phi, y, 10000, seed=seed), 4)
        row["triplet_phi_hat"] = round(triplet_accuracy(phi_hat, y, 10000, seed=seed), 4)
        row["kmeans_phi_acc"] = evaluate(y, KMeans(n_clusters, seed=seed).fit([phi]).labels_)["acc"]
        row["kmeans_phi_hat_acc"] = evaluate(y, KMeans(n_clusters, seed=seed).fit([phi_hat]).labels_)["acc"]
        row["labeling_iterations"] = model.n_iter_
    if method == "seal":  # where the fit's time went
        row["stage_s"] = seal_stage_seconds(details)
        if "self_labeling" in details:
            row["stage_s"]["self-labeling"] = round(details["self_labeling"]["seconds"], 1)
        row["labeling_spaces"] = details["labeling_spaces"]
    if method == "satc":
        row["stage_s"] = {"prepare": round(details["prepare_s"], 1), "neighbors": round(details["neighbor_s"], 1),
                          "distill": round(sum(details["restart_distill_s"]), 1)}
    if method in ("seal", "satc"):
        restarts = model.restart_labels_[0] if method == "seal" else model.restart_labels_
        if fit_source == eval_source:
            row["restart_head_acc"] = [evaluate(y[model.restart_rows_], r)["acc"] for r in restarts]
        row["restart_kept"] = details["distill"][0]["restart_kept"] if method == "seal" else details["restart_kept"]
    if method == "satc":
        row["epochs_run"] = details["epochs_run"]
    if method == "turtle":
        row["labeling_iterations"] = model.n_iter_
    return row


def seal_stage_seconds(details: dict) -> dict:
    """Where a SEAL fit's time went, from its `fit_details_`."""
    distill = details["distill"]
    return {"spatial": round(sum(d["spatial_s"] for d in distill), 1),
            "neighbors": round(sum(d["neighbor_s"] for d in distill), 1),
            "distill": round(sum(sum(d["restart_distill_s"]) for d in distill), 1),
            "labeling": round(details["labeling_s"], 1)}


def settings_changed(row: dict) -> str:
    """The row's estimator settings that differ from the package's current defaults."""
    defaults = json.loads(json.dumps(estimator_class(row["method"])(2).get_params(), default=str))
    changed = [f"{k}={v}" for k, v in row["params"].items()
               if k not in ("seed", "n_clusters") and defaults.get(k) != v]
    return ", ".join(changed) or "defaults"


def table(rows: list[dict]) -> str:
    """Mean +- std over seeds of every (dataset, config, settings changed) in `rows`, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["config"], settings_changed(r)), []).append(r)
    lines = ["| dataset | config | visual spaces | patches | settings changed | seeds | ACC | ACC spread | NMI | ARI | "
             "fit (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, config, changed), rs in groups.items():
        def stat(key):
            v = np.array([r[key] for r in rs], dtype=float)
            return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v[0]:.1f}"
        spaces = " + ".join(s.replace("efficientnet-", "") for s in rs[0]["spaces"])
        patches = (rs[0]["patches"] or "-").replace("efficientnet-", "")
        dataset = Path(dataset).name
        accs = [r["acc"] for r in rs]  # spread: max - min over seeds
        lines.append(f"| {dataset} | {config} | {spaces} | {patches} | {changed} | {len(rs)} | {stat('acc')} | "
                     f"{max(accs) - min(accs):.1f} | {stat('nmi')} | {stat('ari')} | "
                     f"{np.mean([r['fit_s'] for r in rs]):.0f} |")
    analysis = [(key, rs) for key, rs in groups.items() if "triplet_phi" in rs[0]]
    if analysis:  # the paper's analysis of phi against phi_hat, and when the labeling stopped
        lines += ["", "| dataset | config | settings changed | triplet acc. phi | triplet acc. phi_hat | "
                      "K-Means ACC on phi | K-Means ACC on phi_hat | labeling iterations |",
                  "|---|---|---|---|---|---|---|---|"]
        for (dataset, config, changed), rs in analysis:
            def mean(key, scale=1.0):
                return f"{scale * np.mean([r[key] for r in rs]):.1f}"
            lines.append(f"| {Path(dataset).name} | {config} | {changed} | {mean('triplet_phi', 100)} | "
                         f"{mean('triplet_phi_hat', 100)} | {mean('kmeans_phi_acc')} | {mean('kmeans_phi_hat_acc')} | "
                         f"{mean('labeling_iterations')} |")
    staged = [(key, rs) for key, rs in groups.items() if all("stage_s" in r for r in rs)]
    if staged:  # where the fit's time went, mean seconds per stage
        stages = list(dict.fromkeys(k for _, rs in staged for k in rs[0]["stage_s"]))
        lines += ["", f"| dataset | config | settings changed | {' | '.join(f'{k} (s)' for k in stages)} | "
                      "labeling spaces |", "|---|---|---|" + "---|" * (len(stages) + 1)]
        for (dataset, config, changed), rs in staged:
            cells = [f"{np.mean([r['stage_s'][k] for r in rs]):.0f}" if k in rs[0]["stage_s"] else "-"
                     for k in stages]
            lines.append(f"| {Path(dataset).name} | {config} | {changed} | {' | '.join(cells)} | "
                         f"{rs[0].get('labeling_spaces', '-')} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                   help="configs to run (default: all); none: only write the --table")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cache", default="feats", help="folder of the cached feature stores")
    p.add_argument("--out", required=True, help="JSONL of result rows (appended; existing rows are skipped)")
    p.add_argument("--table", default=None, help="write the Markdown summary of --out here")
    p.add_argument("--iterations", type=int, default=None, help="labeling iterations (turtle/seal)")
    p.add_argument("--epochs", type=int, default=None, help="distillation epochs (seal)")
    p.add_argument("--max-epochs", type=int, default=None, help="distillation epochs, at most (satc)")
    p.add_argument("--restarts", type=int, default=None, help="distillation restarts (seal/satc)")
    p.add_argument("--stop-tol", type=float, default=None, help="labeling stopping rule (turtle/seal)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks while making stores (faster on CPU for large N; "
                        "bench/test_bench_embed.py times it)")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("iterations", args.iterations), ("epochs", args.epochs),
                                   ("max_epochs", args.max_epochs),
                                   ("restarts", args.restarts), ("stop_tol", args.stop_tol)) if v is not None}
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["dataset"], r["config"], r["seed"], json.dumps(r.get("overrides", {}), sort_keys=True)))
    key_overrides = json.dumps(overrides, sort_keys=True)
    make_stores(args.dataset, args.configs, Path(args.cache), args.compile)
    for config in args.configs:
        for seed in args.seeds:
            if (args.dataset, config, seed, key_overrides) in done:
                continue
            row = run_row(config, seed, args.dataset, Path(args.cache), overrides)
            row["overrides"] = overrides
            print(json.dumps(row), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
    if args.table:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        Path(args.table).write_text(f"Made by `python bench/accuracy.py` ({' '.join(sys.argv[1:])}); rows in "
                                    f"`{out}`.\n\n{table(rows)}\n")


if __name__ == "__main__":
    main()
