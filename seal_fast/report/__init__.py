"""`seal-fast report`: one offline HTML page of a clustering, to judge it by looking.

    from seal_fast.report import write_report
    write_report("labels.npy", "feats/", "report.html", model="seal.pt")

Per cluster: a name with its confidence (or "no confident name"), its size, its most
typical members and its least typical ones; with truth, ACC / NMI / ARI, the confusion
matrix ordered by the Hungarian matching, each cluster's majority class and per-class
recall. content.py decides what the page says, naming.py the names, thumbnails.py the
images, html.py the markup.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..backbones.clip import CLIP_MODELS
from ..errors import SealFastError
from ..store import FeatureStore
from ..validation import check_labels
from .content import build_content
from .html import render
from .naming import MAX_LEAVES, NAME_THRESHOLD, imagenet_head, name_with_imagenet, name_with_text
from .thumbnails import open_thumbnails

__all__ = ["write_report", "make_report"]
METHOD_NAMES = {"kmeans": "K-Means", "turtle": "TURTLE", "seal": "SEAL", "satc": "SATC"}


# what the page reads from RESULT.json, by type: a field of another type is left out
RUN_FIELDS = {"method": str, "n_clusters": int, "inputs": (str, dict), "spaces": list, "seed": int, "device": str,
              "backend": str, "created": str, "timings": dict, "params": dict}


def _run_report(result) -> dict:
    """RESULT.json beside RESULT.npy, when there is one (settings, timings), keeping the
    fields of the expected types only: the page never trusts it further than that."""
    path = Path(result).with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(run, dict):
        return {}
    run = {k: v for k, v in run.items() if k in RUN_FIELDS and isinstance(v, RUN_FIELDS[k])
           and not isinstance(v, bool)}
    run["timings"] = {k: v for k, v in run.get("timings", {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return run


def _spaces(store, run: dict, model) -> list[str]:
    """The spaces the clustering was fitted on (the run report's or the model's), else all."""
    from ..pipeline import select_spaces

    fitted = (getattr(model, "meta_", None) or {}).get("spaces") or run.get("spaces")
    if isinstance(store, FeatureStore) and fitted and all(isinstance(s, str) and s in store.spaces for s in fitted):
        return list(fitted)
    return select_spaces(store)


def _check_model(model, labels: np.ndarray, Zs, run: dict) -> None:
    """The model must be the one that gave these labels: its method, its K, and its own
    predictions on a sample of the rows."""
    k = getattr(model, "n_clusters_", None)
    if run.get("method") and run["method"] != model.method:
        raise SealFastError(f"the model is a {model.method} model but the result was made by {run['method']}: "
                            "give the model of this result")
    if not isinstance(k, int) or labels.max() >= k:
        raise SealFastError(f"the model has {k} clusters but the result has cluster id {labels.max()}: "
                            "give the model of this result")
    rows = np.random.default_rng(0).choice(labels.shape[0], min(2000, labels.shape[0]), replace=False)
    rows.sort()
    agree = float((model.predict([np.asarray(Z[rows]) for Z in Zs]) == labels[rows]).mean())
    if agree < 0.95:
        raise SealFastError(f"the model gives these labels on only {agree:.0%} of {rows.size} sampled rows: "
                            "give the model of this result")


def _noun_embeddings(store, backbone, weights, nouns_path, progress):
    """(noun embeddings, nouns, where they came from): the store's cache (`embed --with-text`)
    when it holds the nouns asked for, else the CLIP text tower (--weights, or the hub online)."""
    from ..text_counterparts import read_nouns

    cache = f"nouns_{backbone}"
    cached = (store.manifest.get("text") or {}).get("nouns") if isinstance(store.manifest.get("text"), dict) else None
    if nouns_path is None and store.has(cache) and isinstance(cached, list) and \
            len(cached) == store.entry(cache)["shape"][0]:
        return store.array(cache), cached, f"{len(cached)} nouns (cached by `embed --with-text`)"
    import open_clip

    from ..backbones.clip import create_clip_model
    from ..text_counterparts import embed_nouns

    words = read_nouns(nouns_path)
    model = create_clip_model(backbone, weights)
    emb = embed_nouns(model, open_clip.get_tokenizer(CLIP_MODELS[backbone]), words, "cpu", progress=progress)
    return emb, words, f"{len(words)} nouns ({nouns_path or 'WordNet'})"


def _names(store, Zs, spaces, labels, k, weights=None, nouns=None, progress=True) -> tuple[dict, str]:
    """({cluster: ClusterName}, how they were made or why there are none). A missing
    namer (no WordNet, no weights) leaves the page without names, not unwritten."""
    source = store.manifest.get("source") if isinstance(store, FeatureStore) else None
    if not isinstance(source, dict) or source.get("kind") == "import":
        return {}, "none: imported arrays carry no classifier to name them with"
    embedded, custom = (store.manifest.get(key) for key in ("backbones", "weights"))
    embedded, custom = (x if isinstance(x, dict) else {} for x in (embedded, custom))
    try:
        for name, Z in zip(spaces, Zs):
            backbone = store.entry(f"space_{name}").get("backbone", name)
            if backbone not in embedded:  # a space the store did not embed itself: its name proves nothing
                continue
            if backbone in custom and weights is None:
                return {}, (f"none: {backbone} was embedded with its own weights ({custom[backbone]}); "
                            "pass them with --weights to name the clusters with its own head")
            head = imagenet_head(backbone, weights)
            if head is not None and head.in_features == Z.shape[1]:
                return (name_with_imagenet(Z, labels, k, head),
                        f"{backbone}'s own ImageNet classifier on the stored embedding, mean posterior per "
                        f"cluster; a name (a class, or a WordNet hypernym of at most {MAX_LEAVES} classes) needs "
                        f"at least {NAME_THRESHOLD} of it")
            if backbone in CLIP_MODELS:
                emb, words, how = _noun_embeddings(store, backbone, weights, nouns, progress)
                return name_with_text(Z, labels, k, emb, words), f"zero-shot: {backbone}'s text tower over {how}"
    except SealFastError as exc:
        return {}, f"none: {exc}"
    return {}, "none: no space comes from a network with an ImageNet head (EfficientNet-Lite) or a CLIP text tower"


def make_report(result, features, *, truth=None, model=None, weights=None, nouns=None, title=None,
                progress=True, **array_options) -> tuple[str, dict]:
    """(the page's HTML, a summary: names, notes, timings). Nothing is written.

    Args:
        result: labels (N,), or a RESULT.npy path (its RESULT.json is read when present).
        features: a feature store, array files, or an opened store / ArrayInputs.
        truth: true labels, a LABELS.npy or a store; default: the store's labels, if any.
        model: a fitted estimator or a model file: typicality from its labeler (else the
            cosine to the cluster's mean).
        weights: a local checkpoint of the naming network, when not the installed one
            (for a CLIP space without cached nouns: its text tower's, else the hub's).
        nouns: a noun list (one a line) for zero-shot naming instead of WordNet's.
    """
    from ..models import load_model
    from ..pipeline import as_inputs, load_labels

    t0 = time.perf_counter()
    raw = load_labels(result) if isinstance(result, (str, Path)) else np.asarray(result)
    labels = np.array(check_labels(raw, name="the result"), dtype=np.int64)  # a copy: a memory map is read-only
    run = _run_report(result) if isinstance(result, (str, Path)) else {}
    store = as_inputs(features, **array_options)
    n = store.n if isinstance(store, FeatureStore) else store.space(store.spaces[0]).shape[0]
    if labels.shape[0] != n:
        raise SealFastError(f"the result has {labels.shape[0]} labels but the features have {n} rows: "
                            "give the features the result was made from")
    if isinstance(model, (str, Path)):
        model = load_model(model, device="cpu")
    spaces = _spaces(store, run, model)
    Zs = [store.space(s) for s in spaces]
    if model is not None:
        dims = [Z.shape[1] for Z in Zs]
        if list(model.feature_dims_) != dims:
            raise SealFastError(f"the model was fitted on spaces of widths {model.feature_dims_} "
                                f"{(getattr(model, 'meta_', None) or {}).get('spaces') or ''}, but the features' "
                                f"spaces {spaces} have widths {dims}: give the model of this result")
        _check_model(model, labels, Zs, run)
    y = None
    if truth is not None:
        y = load_labels(truth) if isinstance(truth, (str, Path)) else truth
        y = check_labels(y, n, "the truth", allow_unlabelled=True)
    elif store.has("labels"):
        try:
            y = store.labels()
        except SealFastError:
            y = None
    class_names = store.manifest.get("class_names") if isinstance(store, FeatureStore) else None
    ids, compact = np.unique(labels, return_inverse=True)  # the namers see the clusters used, numbered densely
    k = getattr(model, "n_clusters_", None) or run.get("n_clusters") or ids.size
    content = build_content(labels, Zs, n_clusters=k, model=model, truth=y, class_names=class_names, run=run)
    names, content.naming = _names(store, Zs, spaces, compact, ids.size, weights, nouns, progress)
    for view in content.clusters:
        view.name = names.get(int(np.searchsorted(ids, view.cluster)))
    thumbs, why = open_thumbnails(store)
    if why:
        content.notes.append(why)
    uris = {}
    if thumbs:
        shown = [row for v in content.clusters for row in v.typical + v.doubtful]
        for row in tqdm(shown, desc="thumbnails", unit="img", disable=not progress or len(shown) < 2000):
            uris[row] = thumbs.uri(row)
        if thumbs.missing:
            more = f" and {len(thumbs.missing) - 5} more" if len(thumbs.missing) > 5 else ""
            content.notes.append(f"{len(thumbs.missing)} image(s) could not be read: "
                                 f"{'; '.join(thumbs.missing[:5])}{more}")
    method = METHOD_NAMES.get(run.get("method"), run.get("method") or "Clustering")
    page = render(content, uris.get, title or f"{method} clusters, K={k}, N={n}")
    summary = {"n": n, "k": k, "clusters": {v.cluster: {"size": v.size, "majority": v.majority,
                                                        "name": v.name.to_dict() if v.name else None}
                                            for v in content.clusters},
               "evaluation": content.evaluation, "notes": content.notes, "naming": content.naming,
               "seconds": round(time.perf_counter() - t0, 2)}
    named = sum(1 for v in content.clusters if v.name is not None and v.name.name is not None)
    summary["line"] = f"{len(content.clusters)} clusters, {named} named with confidence; made in {summary['seconds']} s"
    return page, summary


def write_report(result, features, out, *, truth=None, model=None, weights=None, nouns=None, title=None,
                 progress=True, **array_options) -> dict:
    """Write the report of `result` to `out` (an .html file, written whole or not at all);
    returns make_report's summary with the file's path and size."""
    from ..files import atomic_path, check_outputs

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise SealFastError(f"--out {out}: the report is one HTML page; give a path ending in .html")
    inputs = [Path(p) for p in ([result] if isinstance(result, (str, Path)) else [])]
    inputs += [Path(p) for p in ([features] if isinstance(features, (str, Path)) else
                                 features if isinstance(features, (list, tuple)) else [])]
    inputs += [features.path] if isinstance(features, FeatureStore) else []
    inputs += [Path(p) for p in (truth, model, weights, nouns) if isinstance(p, (str, Path))]
    inputs += [Path(p) for p in array_options.values() if isinstance(p, (str, Path))]
    check_outputs({"--out": out}, inputs=inputs)
    page, summary = make_report(result, features, truth=truth, model=model, weights=weights, nouns=nouns,
                                title=title, progress=progress, **array_options)
    with atomic_path(out, ".html") as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    summary["path"] = str(out)
    summary["bytes"] = out.stat().st_size
    summary["line"] = f"{summary['bytes'] / 1e6:.1f} MB; {summary['line']}"
    return summary
