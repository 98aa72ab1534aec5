"""The pipeline as library calls: what `seal-fast cluster / predict / evaluate` do,
the demo and the benchmarks call these too, so a method is wired in one place.

    run = cluster("feats/", "seal", 10, seed=0)          # labels, fitted model, run report
    labels = predict(run.model, "other_feats/")
    scores = evaluate(run.labels, "feats/")               # {"acc", "nmi", "ari", "n"}
    report("labels.npy", "feats/", "report.html")         # one offline HTML page of the clusters

`inputs` is a feature store directory, a list of array files (`.npy`, `.npz`, `.pt`),
or an opened `FeatureStore` / `ArrayInputs`. Nothing here writes files: the caller
decides where results go (`save_run` writes a run's, all or none).
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SealFastError
from .inputs import ArrayInputs, open_inputs
from .metrics import evaluate as _scores
from .models import METHODS, estimator_class
from .models.base import ClusterEstimator
from .models.registry import refuse_renamed
from .readers import read_npy, regular_file
from .store import FeatureStore
from .validation import as_feature_matrix


@dataclass
class ClusterRun:
    """What `cluster` returns: the labels of every row, the fitted model, and the run
    report (settings, timings, backend, and the evaluation when the inputs have labels)."""

    labels: np.ndarray
    model: ClusterEstimator
    report: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many labels and clusters, and the evaluation (or why there is none)."""
        line = f"{self.labels.shape[0]} labels, {len(np.unique(self.labels))} clusters used"
        if "choose_k" in self.report:
            choice = f"K={self.report['n_clusters']} chosen in {self.report['n_clusters_asked']}"
            nearest = ", ".join(f"{k} at {r:.2f}" for k, r in self.report["choose_k"]["runners_up"].items())
            line += f" ({choice}; next: {nearest} of its score)" if nearest else f" ({choice})"
        if "evaluation" in self.report:
            return line + f"; against the inputs' labels: {json.dumps(self.report['evaluation'])}"
        if "evaluation_skipped" in self.report:
            return line + f"; no evaluation ({self.report['evaluation_skipped']})"
        return line


def method_params(method: str) -> list[str]:
    """The parameters `method`'s estimator takes (besides n_clusters)."""
    return [p for p in estimator_class(method).param_names() if p != "n_clusters"]


def check_method_params(method: str, names, spell=lambda name: name) -> None:
    """Refuse a parameter `method` does not take, naming the methods that take it
    (`spell` writes a parameter's name as the caller knows it, e.g. a CLI flag)."""
    cls = estimator_class(method)
    own = cls.param_names()
    refuse_renamed(cls, names, spell)
    for name in names:
        if name not in own:
            users = [m for m in METHODS if name in estimator_class(m).param_names()]
            if not users:
                raise SealFastError(f"unknown parameter {spell(name)} for {method}")
            where = ", ".join(users[:-1]) + " and " + users[-1] if len(users) > 1 else users[0]
            raise SealFastError(f"{spell(name)} applies to {where} only, not {method}")


def describe_param(name: str) -> dict:
    """A parameter as the methods that take it declare it: its type, its choices (or
    None), and one line of help with each method's default."""
    fields = {m: estimator_class(m).param_field(name) for m in METHODS if name in estimator_class(m).param_names()}
    first = next(iter(fields.values()))
    check = first.metadata["check"]
    default = f"default {first.default}" if len({f.default for f in fields.values()}) == 1 else \
        "; ".join(f"{m}: default {f.default}" for m, f in fields.items())
    return {"type": check.type, "choices": getattr(check, "values", None),
            "help": f"{first.metadata['help']} ({'/'.join(fields)}; {default})"}


def make_estimator(method: str, n_clusters, **params) -> ClusterEstimator:
    """The estimator of `method` with `params` (None values: the default), every
    parameter checked; one the method does not take is refused, naming those that do."""
    given = {name: value for name, value in params.items() if value is not None}
    check_method_params(method, given)
    model = estimator_class(method)(n_clusters, **given)
    model.check_params()
    return model


def as_inputs(inputs, **array_options):
    """An opened FeatureStore / ArrayInputs as is; a path or a list of paths opened."""
    if isinstance(inputs, (FeatureStore, ArrayInputs)):
        return inputs
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return open_inputs(paths, **array_options)


def select_spaces(store, names=None) -> list[str]:
    """`names` (default: every space of the inputs), each checked to exist."""
    available = store.spaces
    if not available:
        raise SealFastError(f"{describe(store)} has no embedding space")
    names = [names] if isinstance(names, str) else list(names or available)
    for n in names:
        if n not in available:
            raise SealFastError(f"{describe(store)} has no space {n!r}; it has {available}")
    return names


def describe(store) -> str | dict:
    """Where the data came from, for the report and the model file."""
    return str(store.path.resolve()) if isinstance(store, FeatureStore) else store.description


def fit_inputs(model: ClusterEstimator, store, spaces: list[str]) -> tuple[list, dict]:
    """What `model.fit` takes from the inputs: the visual spaces `spaces`, and the
    other inputs the method accepts that the inputs have (or requires, so that a
    missing one is reported by the store)."""
    readers = {"patches": store.patches, "text": store.text}
    extra = {name: readers[name]() for name in model.accepts if name in model.requires or store.has(name)}
    return [store.space(name) for name in spaces], extra


def _name_the_bad_input(store, spaces: list[str], kinds=()) -> None:
    """After `fit` or `predict` refused its input: raise the same complaint naming the
    store and the space, or the array file, when one the call used is at fault
    (scanned only then: the fit's own scan is the one every run pays)."""
    if isinstance(store, FeatureStore):
        for name in spaces:
            as_feature_matrix(store.space(name), f"feature store {store.path}: space {name!r}")
    else:
        store.check_values(spaces, kinds)


def evaluation_labels(store) -> tuple[np.ndarray | None, str | None]:
    """(the true labels to score a result against, or None; why they are not used),
    checked before the fit. A store's labels serve evaluation only, so bad ones are
    left out, never a reason not to cluster; labels given with array inputs were
    asked for, so bad ones are an error (before the fit, not after it)."""
    given = isinstance(store, ArrayInputs)
    try:
        y = store.labels()  # check_labels refuses -3, another N, and labels that are all -1
    except SealFastError as exc:
        if given:
            raise
        return None, str(exc)
    return y, None


def cluster(inputs, method: str, n_clusters, *, spaces=None, seed: int = 0, device="auto", verbose: bool = False,
            array_options: dict | None = None, **params) -> ClusterRun:
    """Fit `method` on every row of `inputs` and label them.

    Args:
        inputs: a feature store, array files, or an opened store / ArrayInputs.
        method: one of METHODS.
        n_clusters: K, or "auto" / "auto:KMIN-KMAX" / a range to choose it (choose_k).
        spaces: the visual spaces to use (default: all of the inputs').
        array_options: with array files, their patches / text / labels / names (as the CLI's flags).
        params: the estimator's parameters (None: its default).

    Returns:
        ClusterRun(labels, model, report).
    """
    t0 = time.perf_counter()
    # every parameter is checked before any input is read
    model = make_estimator(method, n_clusters, seed=seed, device=device, verbose=verbose, **params)
    store = as_inputs(inputs, **(array_options or {}))
    names = select_spaces(store, spaces)
    Zs, extra = fit_inputs(model, store, names)
    truth, skipped = evaluation_labels(store)  # before the fit: a long fit never ends in a label error
    t_load = time.perf_counter() - t0
    try:
        model.fit(Zs, **extra)
    except SealFastError:
        _name_the_bad_input(store, names, tuple(extra))
        raise
    t_fit = time.perf_counter() - t0 - t_load
    model.meta_ = {"spaces": names, "inputs": describe(store)}
    labels = np.asarray(model.labels_, dtype=np.int64)
    report = run_report(model, store, names, labels, {"load_s": t_load, "fit_s": t_fit}, truth, skipped)
    report["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    return ClusterRun(labels, model, report)


def run_report(model, store, spaces, labels, timings, truth=None, skipped=None) -> dict:
    """The run report written beside the labels (`RESULT.json`)."""
    from . import build_info

    info = build_info()
    report = {
        "method": model.method,
        "n_clusters": model.n_clusters_,
        "n": int(labels.shape[0]),
        "inputs": describe(store),
        "spaces": spaces,
        "seed": model.seed,
        "device": str(model.resolved_device()),
        "backend": model.backend_used(),
        "params": {k: str(v) if not isinstance(v, (int, float, str, bool, type(None))) else v
                   for k, v in model.get_params().items() if k != "verbose"},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "fit_details": getattr(model, "fit_details_", {}),
        "versions": {k: info[k] for k in ("seal_fast", "torch", "compiled_ops")},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if model.k_search_ is not None:
        report["n_clusters_asked"] = str(model.n_clusters)
        report["choose_k"] = model.k_search_.report()
    if truth is not None:  # for information only: labels are never used for fitting
        report["evaluation"] = _scores(truth, labels)
    elif skipped is not None:
        report["evaluation_skipped"] = skipped
    return report


def save_run(run: ClusterRun, labels_path, model_path=None) -> None:
    """Write a run's labels (`.npy`), its report beside them (`.json`) and, when asked, the
    model, all together or none (check the paths first: files.check_outputs)."""
    from .choose_k import plot_scores
    from .files import k_plot_output, labels_output, staged_outputs, write_json, write_npy

    out, report_path = labels_output(labels_path)
    with staged_outputs() as stage:
        if run.model.k_search_ is not None:
            plot_scores(run.model.k_search_, stage(k_plot_output(out), ".png"),
                        f"{run.model.method}: eigengap of the kNN graph against K")
        if model_path:
            run.model.save(stage(model_path, ".pt"))
        write_npy(stage(out, ".npy"), run.labels)
        write_json(stage(report_path, ".json"), run.report)


def predict(model: ClusterEstimator, inputs, **array_options) -> np.ndarray:
    """Labels of the rows of `inputs` from a fitted model: a store's spaces are matched
    to the fitted ones by name; array files are taken in the order of the fit."""
    store = as_inputs(inputs, **array_options)
    fitted = (getattr(model, "meta_", None) or {}).get("spaces") or []
    if isinstance(store, FeatureStore):
        spaces = fitted or select_spaces(store)
        for name in spaces:
            if name not in store.spaces:
                raise SealFastError(f"the model was fitted on space {name!r}, which {store.path} does not have "
                                    f"(it has {store.spaces}); embed it with the same backbone")
    else:
        spaces = store.spaces
        if len(spaces) != len(model.feature_dims_):
            raise SealFastError(f"the model was fitted on {len(model.feature_dims_)} space(s) {fitted}; "
                                f"got {len(spaces)} array space(s) {spaces}")
    try:  # every method predicts from the visual spaces alone
        return np.asarray(model.predict([store.space(n) for n in spaces]), dtype=np.int64)
    except SealFastError:
        _name_the_bad_input(store, spaces)
        raise


def load_labels(path) -> np.ndarray:
    """Labels (N,) from a `.npy` file, or a feature store's labels."""
    p = Path(path)
    if p.is_dir():
        y = FeatureStore(p).labels()
        if y is None:
            raise SealFastError(f"feature store {p} has no labels.npy to evaluate against")
        return y
    y = read_npy(p)
    if y.ndim != 1:
        raise SealFastError(f"{p}: expected a 1-D array of labels, got shape {y.shape}")
    return np.asarray(y)


def evaluate(result, truth) -> dict:
    """ACC (Hungarian matching) / NMI / ARI in percent, and n: `result` and `truth` are
    label arrays, `.npy` files, or (truth) a feature store."""
    pred = load_labels(result) if isinstance(result, (str, Path)) else np.asarray(result)
    y = load_labels(truth) if isinstance(truth, (str, Path)) else np.asarray(truth)
    return _scores(y, pred)


def report(result, features, out, *, truth=None, model=None, weights=None, nouns=None, progress=True) -> dict:
    """`seal-fast report`: one offline HTML page of `result` at `out` (seal_fast.report)."""
    from .report import write_report

    return write_report(result, features, out, truth=truth, model=model, weights=weights, nouns=nouns,
                        progress=progress)


def import_arrays(arrays, out, *, patches=None, text=None, labels=None, names=None) -> FeatureStore:
    """A feature store at `out` from array files (embeddings made elsewhere); every name,
    array and output path is checked before anything is written."""
    from .files import check_outputs
    from .store import held_for_writing, write_store

    inputs = open_inputs(arrays, patches=patches, text=text, labels=labels, names=names)
    if not isinstance(inputs, ArrayInputs):
        raise SealFastError(f"{arrays[0]} is a feature store already; import reads array files")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SealFastError(f"--out {out} exists and is not an empty directory; give a new one")
    check_outputs({"--out": out / "manifest.json"}, inputs=[Path(p) for p in [*arrays, patches, text, labels] if p])
    inputs.check_values()
    labels = inputs.labels()
    # held_for_writing removes --out again if it made it and it is left empty; it is outside
    # the try, so a second job's refusal removes none of the first one's files
    with held_for_writing(out):
        try:
            return write_store(out, spaces={name: inputs.space(name) for name in inputs.spaces},
                               patches=inputs.patches() if inputs.has("patches") else None, labels=labels,
                               text=inputs.text(), meta={"source": {**inputs.description, "kind": "import"}})
        except BaseException:  # a full disk, Ctrl-C: leave --out as it was (new, or empty), so a rerun can use it
            for child in (out.iterdir() if out.is_dir() else []):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise


def parse_weights(items, backbones, patch_backbone, explicit) -> dict:
    """{backbone: checkpoint path} from `--weights` items. A bare PATH belongs to the one
    backbone named with --backbone, or to the only backbone in use; else NAME=PATH."""
    used = list(dict.fromkeys(backbones + ([patch_backbone] if patch_backbone else [])))
    owners = explicit if explicit and len(explicit) == 1 else used
    out = {}
    for item in items:
        if "=" in item and not Path(item).exists():
            name, path = item.split("=", 1)
        else:
            if len(owners) != 1:
                raise SealFastError(f"several backbones are used ({', '.join(used)}): give --weights as NAME=PATH")
            name, path = owners[0], item
        regular_file(path, f"weights file {path}")
        out[name] = path
    return out


def embed_images(source, out, *, backbones=None, patch_backbone=None, weights=(), device="auto", batch_size=64,
                 chunk_size=1024, compile=False, with_text=False, nouns=None, progress=True,
                 **renamed) -> FeatureStore | None:
    """`seal-fast embed`: the feature store of an image source (resumable; sharded under
    torchrun, where every rank but 0 returns None), with TAC-style text features when
    `with_text` (which needs a CLIP backbone, checked before the long part)."""
    if renamed:  # text= became with_text= (text= names a text-feature array everywhere else)
        old = next(iter(renamed))
        raise SealFastError("embed_images: text= is now with_text=" if old == "text" else
                            f"embed_images() got an unexpected keyword argument {old!r}")
    import torch

    from . import distributed
    from .backbones import DEFAULT_BACKBONE
    from .embed import add_text_features, embed
    from .store import held_for_writing

    named = [backbones] if isinstance(backbones, str) else list(backbones or [])
    backbones = named or [DEFAULT_BACKBONE]
    patch = None if patch_backbone in (None, "none", "") else patch_backbone
    weights = weights if isinstance(weights, dict) else parse_weights(list(weights), backbones, patch, named)
    clip = []
    if with_text:
        from .backbones.clip import CLIP_MODELS
        from .text_counterparts import read_nouns

        clip = [b for b in backbones if b in CLIP_MODELS]
        if not clip:
            raise SealFastError("--with-text needs a CLIP backbone, e.g. --backbone clip-vit-b-32 efficientnet-lite0")
        read_nouns(nouns)
    store = embed(source, out, backbones=backbones, patch_backbone=patch, weights=weights, device=device,
                  batch_size=batch_size, chunk_size=chunk_size, compile=compile, progress=progress)
    if distributed.active():  # torchrun: the other ranks are done; rank 0 adds text
        rank = torch.distributed.get_rank()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return None
    if with_text:  # held again (a job that took the folder in between is not overwritten: this one stops)
        with held_for_writing(out):
            store = add_text_features(out, clip[0], weights=weights.get(clip[0]), nouns_path=nouns, device=device,
                                      progress=progress)
    return store
