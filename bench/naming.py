"""The measurement behind the report's naming threshold: for every true class of labelled
stores (each class taken as one cluster), and for the skimage cat photo's views and for
noise images, the mean ImageNet posterior of the best class and of the best name at any
threshold, so one can see where the threshold has to lie.

    python bench/naming.py --stores digits=FEATDIR fashion-mnist-test=FEATDIR --photos \
        --out bench/results/naming-cpu-2026-12-04.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from seal_fast.report.naming import NAME_THRESHOLD, ImageNetNamer, imagenet_head, mean_posteriors
from seal_fast.store import FeatureStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def photo_store(folder: Path):
    """The report test's cat photo views and noise images (tests/test_report.py)."""
    from test_report import _photo_and_noise_store

    return _photo_and_noise_store(folder)


def rows_for(name: str, store: FeatureStore, labels, class_names, namer: ImageNetNamer) -> list[str]:
    space = store.spaces[0]
    k = int(labels.max()) + 1
    posteriors = mean_posteriors(store.space(space), labels, k, imagenet_head(space))
    strict = namer.names(posteriors)
    out = []
    for c in range(k):
        p = posteriors[c]
        best = int(np.argmax(p))
        masses = p @ namer.membership.T
        node = int(np.argmax(np.where(namer.size > 1, masses, -1)))
        out.append(f"| {name} | {class_names[c]} | {namer.class_names[best]} {p[best]:.2f} | "
                   f"{namer._label(namer.nodes[node])} {masses[node]:.2f} | {strict[c].name or '(none)'} |")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="*", default=[], metavar="NAME=FEATDIR")
    ap.add_argument("--photos", action="store_true", help="also the cat photo's views and noise images")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    namer = ImageNetNamer()
    lines = [f"# Naming: mean ImageNet posteriors per true class ({dt.date.today().isoformat()}, "
             f"{os.cpu_count()} CPU cores, no GPU)", "",
             f"Made by `python bench/naming.py {' '.join(sys.argv[1:] if argv is None else argv)}`. Each true class "
             "is taken as one cluster. Columns: the best ImageNet class and its mean posterior; the WordNet "
             f"hypernym (at most {namer.membership.sum(1).max():.0f} classes) holding the most posterior; the name "
             f"the report gives at the threshold {NAME_THRESHOLD}.", "",
             "| data | class | best class | best hypernym | name given |", "|---|---|---|---|---|"]
    if args.photos:
        with tempfile.TemporaryDirectory() as tmp:
            store, y = photo_store(Path(tmp))
            lines += rows_for("skimage photos", store, y, ["cat photo (8 views)", "noise (8 images)"], namer)
    for item in args.stores:
        name, path = item.split("=", 1)
        store = FeatureStore(path)
        y = store.labels()
        lines += rows_for(name, store, y, store.manifest.get("class_names") or [str(i) for i in range(y.max() + 1)],
                          namer)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
