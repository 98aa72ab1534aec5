"""The `seal-fast` command line (its shape is fixed; see the README)."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .distillation import RESTART_CHOICES
from .errors import Interrupted, SealFastError
from .models import METHODS, estimator_class, store_inputs
from .models.seal import LABEL_ON, LABEL_RESTARTS

# `cluster` options that set an estimator parameter of the same name; a method
# whose constructor lacks the parameter refuses the option
TUNABLE = ("iterations", "stop_tol", "epochs", "restarts", "restart_choice", "n_neighbors", "label_on",
           "label_restarts", "backend")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seal-fast", description=(
        "Discover human-meaningful categories in unlabeled images, given only their number."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    i = sub.add_parser("info", help="versions, compiled backends and visible devices")
    i.add_argument("--check", action="store_true",
                   help="also run every compiled op against its reference on each device (a few seconds); "
                        "exit 1 if any disagrees")

    e = sub.add_parser("embed", help="images -> feature store (visual spaces + patch features)")
    e.add_argument("source", help="image folder (sub-folders = classes), .npz with 'images' "
                                  "[and 'labels'], or a built-in: digits, fashion-mnist[-train|-test]")
    e.add_argument("--out", required=True, help="feature store directory to write")
    e.add_argument("--backbone", nargs="+", default=None, metavar="NAME",
                   help="visual backbone(s), one space each (default: efficientnet-lite0)")
    e.add_argument("--patch-backbone", default="efficientnet-lite2", metavar="NAME",
                   help="backbone for the patch features, a second network as in the papers, "
                        "or 'none' (default: efficientnet-lite2)")
    e.add_argument("--weights", nargs="+", default=[], metavar="[NAME=]PATH",
                   help="local checkpoint(s) as NAME=PATH; a bare PATH applies to the one --backbone named")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--chunk-size", type=int, default=1024,
                   help="images per resumable chunk (a chunk also closes after a minute of work)")
    e.add_argument("--compile", action="store_true", help="torch.compile the backbone (large N on CPU)")
    e.add_argument("--text", action="store_true",
                   help="also write TAC-style text counterparts (needs a CLIP backbone; used by SATC)")
    e.add_argument("--nouns", default=None, metavar="FILE",
                   help="one noun per line instead of WordNet's nouns (with --text)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser("cluster", help="fit a method on a feature store (or array files) and label every row")
    c.add_argument("inputs", nargs="+", metavar="FEATDIR|ARRAY",
                   help="a feature store, or array files (.npy, .npz, .pt), each holding one or more spaces")
    _array_options(c, labels=True)
    c.add_argument("--method", required=True, choices=METHODS)
    c.add_argument("--n-clusters", required=True, type=int, metavar="K")
    c.add_argument("--spaces", nargs="+", default=None, metavar="NAME",
                   help="spaces of the store to use (default: all)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="auto")
    c.add_argument("--out", required=True, metavar="RESULT.npy")
    c.add_argument("--save-model", default=None, metavar="MODEL")
    c.add_argument("--iterations", type=int, default=None,
                   help="outer iterations T of human labeling, at most (turtle/seal; default 6000)")
    c.add_argument("--stop-tol", type=float, default=None,
                   help="labeling stops once at most this share of a probe subset changes label in 3 windows "
                        "of 100 iterations in a row (turtle/seal; default 0.02, measured in the README; 0: run all iterations)")
    c.add_argument("--epochs", type=int, default=None,
                   help="mutual-distillation epochs (seal: default 20; satc: at most, per restart, default 5)")
    c.add_argument("--restarts", type=int, default=None,
                   help="distillation restarts (seal: default 3, labels on all, see --label-restarts; "
                        "satc: default 5, keeps one, see --restart-choice)")
    c.add_argument("--restart-choice", default=None, choices=RESTART_CHOICES,
                   help="which restart satc keeps: the consensus one (default) or the one whose "
                        "partition keeps the most visual neighbour pairs together")
    c.add_argument("--n-neighbors", "--neighbors", dest="n_neighbors", type=int, default=None, metavar="N",
                   help="cross-modal neighbours per sample (seal/satc; default 50)")
    c.add_argument("--label-on", default=None, choices=LABEL_ON,
                   help="spaces of seal's human labeling: phi and phi_hat (default) or phi_hat alone (the paper)")
    c.add_argument("--label-restarts", default=None, choices=LABEL_RESTARTS,
                   help="phi_hat of every restart (default) or of the kept restart only (seal)")
    c.add_argument("--backend", default=None, choices=("auto", "compiled", "reference"),
                   help="compiled ops or the pure-PyTorch reference (turtle/seal/satc; default: auto)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    pr = sub.add_parser("predict", help="label another feature store (or array files) with a saved model")
    pr.add_argument("model")
    pr.add_argument("inputs", nargs="+", metavar="FEATDIR|ARRAY",
                    help="a feature store with the model's spaces, or array files in the order of the fit")
    pr.add_argument("--out", required=True, metavar="RESULT.npy")
    pr.add_argument("--device", default="auto")

    im = sub.add_parser("import", help="array files -> a feature store (embeddings made elsewhere)")
    im.add_argument("arrays", nargs="+", metavar="ARRAY", help=".npy, .npz or .pt files, one or more spaces each")
    im.add_argument("--out", required=True, help="feature store directory to write")
    _array_options(im, labels=True)

    ev = sub.add_parser("evaluate", help="ACC / NMI / ARI of a result against true labels")
    ev.add_argument("result", metavar="RESULT.npy")
    ev.add_argument("--truth", required=True, metavar="FEATDIR|LABELS.npy",
                    help="true labels; -1 marks an unlabelled row, left out of the scores")

    d = sub.add_parser("demo", help="offline end-to-end run on real images with real weights")
    d.add_argument("--dataset", default="digits", help="built-in dataset (default: digits)")
    d.add_argument("--out", default="seal-fast-demo", help="folder for features, results and figure")
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    return p


def _array_options(parser, labels: bool) -> None:
    parser.add_argument("--patches", default=None, metavar="P.npy", help="with arrays: patch features (N, M, c)")
    parser.add_argument("--text", default=None, metavar="T.npy", help="with arrays: text features (N, d)")
    if labels:
        parser.add_argument("--labels", default=None, metavar="L.npy",
                            help="with arrays: true labels (N,), for evaluation only")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="with arrays: names of the spaces, in order (default: file names / keys)")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"info": cmd_info, "embed": cmd_embed, "cluster": cmd_cluster, "predict": cmd_predict,
                "import": cmd_import, "evaluate": cmd_evaluate, "demo": cmd_demo}[args.command](args) or 0
    except SealFastError as exc:
        print(f"seal-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"seal-fast {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"seal-fast {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


# --- commands -----------------------------------------------------------------
def cmd_info(args):
    from . import build_info
    from .backbones import known_backbones

    info = build_info()
    info["backbones"] = known_backbones()
    info["methods"] = list(METHODS)
    print(json.dumps(info, indent=2))
    if args.check:
        from .self_test import format_rows, self_test

        rows = self_test()
        print(format_rows(rows))
        failed = [r for r in rows if r["ok"] is False]
        print(f"{len(failed)} of {sum(r['ok'] is not None for r in rows)} op checks failed" if failed
              else "every compiled op agrees with its reference")
        return 1 if failed else 0


def _parse_weights(items, backbones, patch_backbone, explicit) -> dict:
    """{backbone: checkpoint path} from --weights. A bare PATH belongs to the one backbone
    named with --backbone, or to the only backbone in use; otherwise NAME=PATH is needed."""
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
        if not Path(path).is_file():
            raise SealFastError(f"weights file {path} does not exist")
        out[name] = path
    return out


def cmd_embed(args):
    from .backbones import DEFAULT_BACKBONE
    from .embed import embed

    backbones = args.backbone or [DEFAULT_BACKBONE]
    patch = None if args.patch_backbone in ("none", "") else args.patch_backbone
    weights = _parse_weights(args.weights, backbones, patch, args.backbone)
    if args.text:  # fail before the long part, not after it
        from .backbones.clip import CLIP_MODELS
        from .text import read_nouns

        clip = [b for b in backbones if b in CLIP_MODELS]
        if not clip:
            raise SealFastError("--text needs a CLIP backbone, e.g. --backbone clip-vit-b-32 efficientnet-lite0")
        read_nouns(args.nouns)
    store = embed(args.source, args.out, backbones=backbones, patch_backbone=patch, weights=weights,
                  device=args.device, batch_size=args.batch_size, chunk_size=args.chunk_size, compile=args.compile,
                  progress=not args.quiet)
    if distributed.active():  # torchrun: the other ranks are done; rank 0 adds text and reports
        rank = torch.distributed.get_rank()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return
    if args.text:
        from .embed import add_text_features

        store = add_text_features(args.out, clip[0], weights=weights.get(clip[0]), nouns_path=args.nouns,
                                  device=args.device, progress=not args.quiet)
    skipped = store.manifest.get("n_skipped", 0)
    print(f"wrote {store.path}: N={store.n}, spaces={store.spaces}"
          f"{', patches ' + str(tuple(store.entry('patches')['shape'])) if store.has('patches') else ''}"
          f"{', labels' if store.labels_available else ''}"
          f"{', text ' + str(tuple(store.entry('text')['shape'])) if store.has('text') else ''}")
    if skipped:
        first = store.manifest["skipped"][0]
        print(f"skipped {skipped} unreadable image(s), e.g. {first['name']}: {first['reason']} "
              f"(all listed in {store.path / 'manifest.json'})")


def _select_spaces(store, names):
    available = store.spaces
    if not available:
        raise SealFastError(f"feature store {store.path} has no embedding space")
    names = names or available
    for n in names:
        if n not in available:
            raise SealFastError(f"feature store {store.path} has no space {n!r}; it has {available}")
    return names


def build_estimator(method: str, n_clusters: int, *, seed: int, device: str, verbose: bool, **tuning):
    """The estimator of `method`; `tuning` holds the TUNABLE options given (None: not given)."""
    cls = estimator_class(method)
    params = {"seed": seed, "device": device, "verbose": verbose}
    for name, value in tuning.items():
        if value is None:
            continue
        if name not in cls.param_names():
            users = [m for m in METHODS if name in estimator_class(m).param_names()]
            users = ", ".join(users[:-1]) + " and " + users[-1] if len(users) > 1 else users[0]
            raise SealFastError(f"--{name.replace('_', '-')} applies to {users} only, not {method}")
        params[name] = value
    return cls(n_clusters, **params)


def _labels_output(path) -> tuple[Path, Path]:
    """The labels file (.npy) and the run report written beside it (.json)."""
    out = Path(path)
    if out.suffix != ".npy":
        raise SealFastError(f"--out {out}: the labels are written as a .npy file (the run report goes beside "
                            "it with .json); give a path ending in .npy")
    return out, out.with_suffix(".json")


def _open_inputs(args):
    """The command's FEATDIR or array files, with the array options it has."""
    from .inputs import open_inputs

    return open_inputs(args.inputs, **{name: getattr(args, name, None)
                                       for name in ("patches", "text", "labels", "names")})


def _input_paths(args) -> list[Path]:
    extra = [getattr(args, name, None) for name in ("patches", "text", "labels")]
    return [Path(p) for p in [*args.inputs, *extra] if p]


def cmd_cluster(args):
    from .files import check_outputs, staged_outputs, write_json, write_npy

    t0 = time.perf_counter()
    out, report_path = _labels_output(args.out)
    outputs = {"--out": out, "the run report": report_path}
    if args.save_model:
        outputs["--save-model"] = Path(args.save_model)
    # under torchrun every rank fits the same model (the neighbour search is split
    # over them) and rank 0 writes the outputs
    rank, _, device = distributed.init(args.device) if distributed.launched() else (0, 1, args.device)
    model = build_estimator(args.method, args.n_clusters, seed=args.seed, device=device,
                            verbose=not args.quiet and rank == 0, **{name: getattr(args, name) for name in TUNABLE})
    model.check_params()
    store = _open_inputs(args)
    check_outputs(outputs, inputs=_input_paths(args))
    spaces = _select_spaces(store, args.spaces)
    Zs, kwargs = store_inputs(model, store, spaces)
    t_load = time.perf_counter() - t0
    model.fit(Zs, **kwargs)
    t_fit = time.perf_counter() - t0 - t_load
    model.meta_ = {"spaces": spaces, "inputs": _describe(store)}
    labels = np.asarray(model.labels_, dtype=np.int64)
    report = _report(args, store, spaces, model, labels, {"load_s": t_load, "fit_s": t_fit})
    report["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    if rank != 0:
        return
    with staged_outputs() as stage:  # all of them or none
        if args.save_model:
            model.save(stage(args.save_model, ".pt"))
        write_npy(stage(out, ".npy"), labels)
        write_json(stage(report_path, ".json"), report)
    line = f"wrote {out} ({labels.shape[0]} labels, {len(np.unique(labels))} clusters used)"
    if "evaluation" in report:
        line += f"; against the store's labels: {json.dumps(report['evaluation'])}"
    print(line)


def _resolved_backend(model) -> str:
    from ._extension import use_compiled

    backend = getattr(model, "backend", None)
    if backend is None:
        return "torch"
    if backend == "reference":
        return "reference"
    dev = model._device()
    return "compiled" if use_compiled(torch.empty(0, device=dev)) else "reference"


def _report(args, store, spaces, model, labels, timings) -> dict:
    from . import build_info
    from .metrics import evaluate

    info = build_info()
    report = {
        "method": model.method,
        "n_clusters": args.n_clusters,
        "n": int(labels.shape[0]),
        "inputs": _describe(store),
        "spaces": spaces,
        "seed": args.seed,
        "device": str(model._device()),
        "backend": _resolved_backend(model),
        "params": {k: str(v) if isinstance(v, torch.device) else v for k, v in model.get_params().items()
                   if k != "verbose"},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "fit_details": getattr(model, "fit_details_", {}),
        "versions": {k: info[k] for k in ("seal_fast", "torch", "compiled_ops")},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    truth = store.labels()
    if truth is not None:
        # for information only: labels are never used for fitting
        report["evaluation"] = evaluate(truth, labels)
    return report


def _describe(store) -> dict | str:
    """Where the fitted data came from, for the report and the model file."""
    from .store import FeatureStore

    return str(store.path.resolve()) if isinstance(store, FeatureStore) else store.description


def cmd_predict(args):
    from .files import check_outputs, save_npy_atomic
    from .models import load_model
    from .store import FeatureStore

    out, _ = _labels_output(args.out)
    model = load_model(args.model, device=args.device)
    store = _open_inputs(args)
    check_outputs({"--out": out}, inputs=[Path(args.model), *_input_paths(args)])
    fitted = model.meta_.get("spaces") or []
    if isinstance(store, FeatureStore):  # a store: the fitted spaces by name
        spaces = fitted or _select_spaces(store, None)
        for name in spaces:
            if name not in store.spaces:
                raise SealFastError(f"the model was fitted on space {name!r}, which {store.path} does not have "
                                    f"(it has {store.spaces}); embed it with the same backbone")
    else:  # arrays: the spaces in the order given, as many as the fit had
        spaces = store.spaces
        if len(spaces) != len(model.feature_dims_):
            raise SealFastError(f"the model was fitted on {len(model.feature_dims_)} space(s) {fitted}; "
                                f"got {len(spaces)} array space(s) {spaces}")
    labels = model.predict([store.space(n) for n in spaces])  # every method predicts from the visual spaces
    save_npy_atomic(out, np.asarray(labels, dtype=np.int64))
    print(f"wrote {out} ({len(labels)} labels)")


def cmd_import(args):
    from .files import check_outputs
    from .inputs import ArrayInputs, open_inputs
    from .store import write_store

    arrays = open_inputs(args.arrays, patches=args.patches, text=args.text, labels=args.labels, names=args.names)
    if not isinstance(arrays, ArrayInputs):
        raise SealFastError(f"{args.arrays[0]} is a feature store already; import reads array files")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SealFastError(f"--out {out} exists and is not an empty directory; give a new one")
    check_outputs({"--out": out / "manifest.json"},
                  inputs=[Path(p) for p in [*args.arrays, args.patches, args.text, args.labels] if p])
    store = write_store(out, spaces={name: arrays.space(name) for name in arrays.spaces},
                        patches=arrays.patches() if arrays.has("patches") else None, labels=arrays.labels(),
                        text=arrays.text(), meta={"source": {**arrays.description, "kind": "import"}})
    print(f"wrote {store.path}: N={store.n}, spaces={store.spaces}"
          f"{', patches ' + str(tuple(store.entry('patches')['shape'])) if store.has('patches') else ''}"
          f"{', labels' if store.labels_available else ''}")


def _load_labels(path) -> np.ndarray:
    from .store import FeatureStore

    p = Path(path)
    if p.is_dir():
        y = FeatureStore(p).labels()
        if y is None:
            raise SealFastError(f"feature store {p} has no labels.npy to evaluate against")
        return y
    if not p.is_file():
        raise SealFastError(f"{p} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SealFastError(f"{p}: not a readable .npy file ({exc})") from exc


def cmd_evaluate(args):
    from .metrics import evaluate

    pred = _load_labels(args.result)
    truth = _load_labels(args.truth)
    print(json.dumps(evaluate(truth, pred)))


def cmd_demo(args):
    from .demo import run_demo

    run_demo(dataset=args.dataset, out=args.out, device=args.device, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
