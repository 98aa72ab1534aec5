"""The `seal-fast` command line (fixed; see the README): parse, call `pipeline`, print. Heavy modules
load inside `main`, so that a Ctrl-C while they load (torch takes seconds) ends in one line."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# `cluster` options that set the estimator parameter of the same name; their type,
# choices and help come from the estimators' declarations (models/base.py: param)
TUNABLE = ("iterations", "stop_tol", "epochs", "max_epochs", "restarts", "restart_choice", "n_neighbors",
           "patch_neighbors", "label_on", "label_restarts", "labeling_init", "backend")
ALIASES = {"n_neighbors": ("--neighbors",)}
ARRAY_OPTIONS = ("patches", "text", "labels", "names")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from .backbones import DEFAULT_BACKBONE, DEFAULT_PATCH_BACKBONE
    from .models import METHODS
    from .pipeline import describe_param

    p = _Parser(prog="seal-fast", description="Discover the categories of unlabeled images.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    i = sub.add_parser("info", help="versions, compiled backends and visible devices")
    i.add_argument("--check", action="store_true", help="also check every compiled op against its reference")
    e = sub.add_parser("embed", help="images -> feature store (visual spaces + patch features)")
    e.add_argument("source", help="image folder (sub-folders = classes), .npz (images[, labels]), or a built-in")
    e.add_argument("--out", required=True, help="feature store directory to write")
    e.add_argument("--backbone", nargs="+", metavar="NAME", help=f"visual backbone(s) (default: {DEFAULT_BACKBONE})")
    e.add_argument("--patch-backbone", default=DEFAULT_PATCH_BACKBONE, metavar="NAME", help="patch network, or none")
    e.add_argument("--weights", nargs="+", default=[], metavar="[NAME=]PATH", help="local checkpoint(s), NAME=PATH")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--chunk-size", type=int, default=1024, help="images per resumable chunk (at most a minute)")
    e.add_argument("--compile", action="store_true", help="torch.compile the backbone (large N on CPU)")
    e.add_argument("--with-text", action="store_true", help="also TAC-style text features (a CLIP backbone; SATC)")
    e.add_argument("--text", dest="renamed", action="store_const", help=argparse.SUPPRESS,
                   const="--text is now --with-text (in cluster and import, --text names a text array)")
    e.add_argument("--nouns", default=None, metavar="FILE", help="one noun per line instead of WordNet's")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("cluster", help="fit a method on a feature store (or array files) and label every row")
    c.add_argument("inputs", nargs="+", metavar="FEATDIR|ARRAY", help="a feature store, or .npy/.npz/.pt files")
    _array_options(c)
    c.add_argument("--method", required=True, choices=METHODS)
    c.add_argument("--n-clusters", required=True, metavar="K|auto|auto:KMIN-KMAX",
                   help="K, or 'auto' to choose it (in 2..~sqrt(N); auto:KMIN-KMAX a range of your own)")
    c.add_argument("--spaces", nargs="+", default=None, metavar="NAME", help="spaces to use (default: all)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="auto")
    c.add_argument("--out", required=True, metavar="RESULT.npy")
    c.add_argument("--save-model", default=None, metavar="MODEL")
    for name in TUNABLE:  # typed, with choices and help from the estimators' declarations
        spec = describe_param(name)
        c.add_argument(f"--{name.replace('_', '-')}", *ALIASES.get(name, ()), dest=name, default=None,
                       type=spec["type"], choices=spec["choices"], help=spec["help"])
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    pr = sub.add_parser("predict", help="label another feature store (or array files) with a saved model")
    pr.add_argument("model")
    pr.add_argument("inputs", nargs="+", metavar="FEATDIR|ARRAY", help="a store, or arrays in the fit's order")
    pr.add_argument("--out", required=True, metavar="RESULT.npy")
    pr.add_argument("--device", default="auto")
    im = sub.add_parser("import", help="array files -> a feature store (embeddings made elsewhere)")
    im.add_argument("arrays", nargs="+", metavar="ARRAY", help=".npy, .npz or .pt files, one or more spaces each")
    im.add_argument("--out", required=True, help="feature store directory to write")
    _array_options(im)
    ev = sub.add_parser("evaluate", help="ACC / NMI / ARI of a result against true labels")
    ev.add_argument("result", metavar="RESULT.npy")
    ev.add_argument("--truth", required=True, metavar="FEATDIR|LABELS.npy", help="true labels (-1: unlabelled)")
    r = sub.add_parser("report", help="one offline HTML page of a result: named clusters, typical and doubtful members")
    r.add_argument("result", metavar="RESULT.npy")
    r.add_argument("--features", nargs="+", required=True, metavar="FEATDIR|ARRAY", help="what the result was fitted on")
    r.add_argument("--truth", default=None, metavar="FEATDIR|LABELS.npy", help="true labels (default: the store's)")
    r.add_argument("--model", default=None, help="the saved model: typical members by its labeler's confidence")
    r.add_argument("--weights", default=None, metavar="PATH", help="local checkpoint of the naming network")
    r.add_argument("--nouns", default=None, metavar="FILE", help="CLIP zero-shot names: one noun a line, not WordNet's")
    r.add_argument("--out", required=True, metavar="report.html")
    d = sub.add_parser("demo", help="offline end-to-end run on real images with real weights")
    d.add_argument("--dataset", default="digits", help="built-in dataset (default: digits)")
    d.add_argument("--out", default="seal-fast-demo", help="folder for features, results and figure")
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    return p


def _array_options(parser) -> None:
    parser.add_argument("--patches", default=None, metavar="P.npy", help="with arrays: patch features (N, M, c)")
    parser.add_argument("--text", default=None, metavar="T.npy", help="with arrays: text features (N, d)")
    parser.add_argument("--labels", default=None, metavar="L.npy", help="with arrays: true labels, for evaluation")
    parser.add_argument("--names", nargs="+", metavar="NAME", help="with arrays: names of the spaces, in order")


def main(argv=None) -> int:
    command = "?"
    try:
        args = _parser().parse_args(argv)
        command = args.command
        from .errors import Interrupted, SealFastError

        try:
            if getattr(args, "renamed", None):  # an option's old spelling
                raise SealFastError(args.renamed)
            return globals()[f"cmd_{command}"](args) or 0  # looked up now: tests may replace one
        except SealFastError as exc:
            return _fail(f"seal-fast {command}: error: {exc}", 2)
        except Interrupted as exc:
            return _fail(f"seal-fast {command}: {exc}", 130)
    except KeyboardInterrupt:
        return _fail(f"seal-fast {command}: interrupted; no output was written", 130)


def _fail(line: str, code: int) -> int:
    """One line on stderr, once: under torchrun every rank meets the same error, rank 0 says it."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr)
    return code


def cmd_info(args):
    from . import build_info
    from .backbones import known_backbones
    from .models import METHODS

    print(json.dumps({**build_info(), "backbones": known_backbones(), "methods": list(METHODS)}, indent=2))
    if args.check:
        from .op_checks import check_report

        text, ok = check_report()
        print(text)
        return 0 if ok else 1


def cmd_embed(args):
    from . import pipeline

    store = pipeline.embed_images(args.source, args.out, backbones=args.backbone, patch_backbone=args.patch_backbone,
                                  weights=args.weights, device=args.device, batch_size=args.batch_size,
                                  chunk_size=args.chunk_size, compile=args.compile, with_text=args.with_text,
                                  nouns=args.nouns, progress=not args.quiet)
    if store is not None:  # None: a rank other than 0 under torchrun
        print(f"wrote {store.summary()}")


def _array_args(args) -> dict:
    return {name: getattr(args, name, None) for name in ARRAY_OPTIONS}


def _input_paths(args) -> list[Path]:
    return [Path(p) for p in [*args.inputs, *(getattr(args, n, None) for n in ("patches", "text", "labels"))] if p]


def cmd_cluster(args):
    from . import distributed, pipeline
    from .choose_k import parse_n_clusters
    from .files import check_outputs, k_plot_output, labels_output

    out, report_path = labels_output(args.out)
    outputs = {"--out": out, "the run report": report_path, **({"--save-model": Path(args.save_model)}
                                                                if args.save_model else {})}
    if not isinstance(parse_n_clusters(args.n_clusters), int):
        outputs["the plot of K's scores"] = k_plot_output(out)
    # under torchrun every rank fits the same model (the neighbour search is split over them); rank 0 writes
    rank, _, device = distributed.init(args.device) if distributed.launched() else (0, 1, args.device)
    tuning = {name: getattr(args, name) for name in TUNABLE if getattr(args, name) is not None}
    pipeline.check_method_params(args.method, tuning, spell=lambda name: f"--{name.replace('_', '-')}")
    check_outputs(outputs, inputs=_input_paths(args))
    run = pipeline.cluster(args.inputs, args.method, args.n_clusters, spaces=args.spaces, seed=args.seed,
                           device=device, verbose=not args.quiet and rank == 0, array_options=_array_args(args),
                           **tuning)
    if rank == 0:
        pipeline.save_run(run, out, args.save_model)
        print(f"wrote {out} ({run.summary()})")


def cmd_predict(args):
    from . import pipeline
    from .files import check_outputs, labels_output, save_npy_atomic
    from .models import load_model

    out, _ = labels_output(args.out)
    model = load_model(args.model, device=args.device)
    inputs = pipeline.as_inputs(args.inputs)
    check_outputs({"--out": out}, inputs=[Path(args.model), *_input_paths(args)])
    labels = pipeline.predict(model, inputs)
    save_npy_atomic(out, labels)
    print(f"wrote {out} ({len(labels)} labels)")


def cmd_import(args):
    from . import pipeline

    print(f"wrote {pipeline.import_arrays(args.arrays, args.out, **_array_args(args)).summary()}")


def cmd_evaluate(args):
    from . import pipeline

    print(json.dumps(pipeline.evaluate(args.result, args.truth)))


def cmd_report(args):
    from . import pipeline

    summary = pipeline.report(args.result, args.features, args.out, truth=args.truth, model=args.model,
                              weights=args.weights, nouns=args.nouns)
    print("\n".join([f"wrote {args.out} ({summary['line']})", *(f"note: {n}" for n in summary["notes"])]))


def cmd_demo(args):
    from .demo import run_demo

    run_demo(dataset=args.dataset, out=args.out, device=args.device, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
