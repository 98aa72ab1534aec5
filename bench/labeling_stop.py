"""When do the human labeling's labels stop changing? The ground for the label-free
stopping rule (TURTLE's and SEAL's `stop_tol`).

Runs the bi-level search for the full T on one feature store (TURTLE's labeling,
or with --patches SEAL's: on phi and the phi_hat of every distillation restart, the
heads trained by SEAL itself with the same seed) and records, every
window of iterations, the share of a fixed probe subset whose label changed (what
the rule watches), the mean objective, and the ACC of the labels at that point
(what the rule must not lose). Public API only:

    python bench/labeling_stop.py --store feats/fashion-mnist-test-lite0 \\
        --seeds 0 1 2 --iterations 3000 --out runs/labeling-stop.jsonl
    python bench/labeling_stop.py --store feats/digits-lite0 --patches feats/digits-lite2 ...
    python bench/labeling_stop.py --summary runs/labeling-stop.jsonl --tol 0.01 0.02 0.05

--summary replays the rule on the recorded windows (the same test the labeling
makes: `stop_tol`, `stop_patience` windows in a row) and prints, per run and
tolerance, where it would have stopped and the ACC there against the ACC at T.
"""
import argparse
import json
import time

import numpy as np
import torch

from seal_fast import SEAL, FeatureStore
from seal_fast.labeling import LabelingConfig, StopRule, human_labeling
from seal_fast.metrics import evaluate


def stop_point(windows: list[dict], tol: float, patience: int) -> dict:
    """The window at which the labeling's own rule (share changed <= tol in `patience` windows in a row) stops."""
    rule = StopRule(tol, patience)
    return next((w for w in windows if rule.update(w["changed"])), windows[-1])


def summary(path: str, tols: list[float], patience: int) -> str:
    rows = [json.loads(line) for line in open(path)]
    lines = ["| store | method | seed | T | ACC at T | s at T | " + " | ".join(f"tol {t}: stop, ACC, s" for t in tols) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(tols)]
    deltas = {}  # (tol, store, method) -> ACC at the stop minus ACC at T, per run
    for r in rows:
        last = r["windows"][-1]
        store = r["store"].rstrip("/").split("/")[-1]
        cells = []
        for t in tols:
            w = stop_point(r["windows"], t, patience)
            deltas.setdefault((t, store, r["method"]), []).append(w["acc"] - last["acc"])
            cells.append(f"{w['iteration']}, {w['acc']:.2f}, {w['seconds']:.0f}")
        lines.append(f"| {store} | {r['method']} | {r['seed']} | {last['iteration']} | "
                     f"{last['acc']:.2f} | {last['seconds']:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "ACC at the stop minus ACC at T:", ""]
    for t in tols:
        groups = {k[1:]: d for k, d in deltas.items() if k[0] == t}
        every = [x for d in groups.values() for x in d]
        lines.append(f"- tol {t}: " + "; ".join(f"{store} {method} {_spread(d)}" for (store, method), d in groups.items())
                     + f"; all {_spread(every)}")
    return "\n".join(lines)


def _spread(d: list[float]) -> str:
    return f"mean {np.mean(d):+.2f} (min {np.min(d):+.2f}, max {np.max(d):+.2f}, {len(d)} runs)"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--summary", default=None, help="a JSONL this script wrote: print the rule's replay")
    p.add_argument("--tol", nargs="+", type=float, default=[0.01, 0.02, 0.05])
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--store")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--iterations", type=int, default=6000)
    p.add_argument("--patches", default=None, help="a store of the same images whose patches SEAL uses")
    p.add_argument("--out")
    args = p.parse_args()
    if args.summary:
        print(summary(args.summary, args.tol, args.patience))
        return
    if not (args.store and args.out):
        p.error("--store and --out are needed (or --summary)")
    store = FeatureStore(args.store)
    y = store.labels()
    phi = [np.array(store.space(name)) for name in store.spaces]
    for seed in args.seeds:
        if args.patches:  # SEAL's labeling spaces: the distillation run by SEAL.fit itself
            seal = SEAL(int(y.max()) + 1, iterations=1, stop_tol=0.0, seed=seed).fit(phi, patches=FeatureStore(args.patches).patches())
            Zs = [torch.from_numpy(S) for S in seal.labeling_spaces(phi)]
        else:
            Zs = [torch.from_numpy(Z) for Z in phi]
        windows = []
        t0 = time.perf_counter()

        def record(done, encoder):
            labels = encoder.predict_proba(Zs).argmax(1).numpy()
            windows.append({"iteration": done, "seconds": round(time.perf_counter() - t0, 1),
                            **{k: v for k, v in evaluate(y, labels).items() if k != "n"}})

        result = human_labeling(Zs, int(y.max()) + 1, LabelingConfig(iterations=args.iterations, stop_tol=0.0), seed=seed,
                                on_window=record)
        for w, (done, changed, objective) in zip(windows, result.trace):
            w.update(changed=changed, objective=objective)
        row = {"store": args.store, "method": "seal" if args.patches else "turtle", "patches": args.patches,
               "spaces": store.spaces, "labeling_spaces": len(Zs), "seed": seed, "iterations": args.iterations,
               "windows": windows}
        print(json.dumps({k: v for k, v in row.items() if k != "windows"}), windows[-1], flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
