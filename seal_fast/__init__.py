"""seal_fast: discover human-meaningful categories in unlabeled images (SEAL, SATC, TURTLE).

The names below are imported on first use (PEP 562), so that `import seal_fast`
does not load torch by itself and the command line can catch a Ctrl-C while it loads.
"""
import importlib

from ._version import __version__

# name -> (module, attribute; None: the module itself)
_WHERE = {
    "build_info": ("._info", "build_info"), "ops": (".ops", None), "SealFastError": (".errors", "SealFastError"),
    "load_model": (".models", "load_model"), "FeatureStore": (".store", "FeatureStore"),
    "self_test": (".op_checks", "self_test"), "KMeans": (".models", "KMeans"), "TURTLE": (".models", "TURTLE"),
    "SEAL": (".models", "SEAL"), "SATC": (".models", "SATC"), "pipeline": (".pipeline", None),
}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'seal_fast' has no attribute {name!r}")
    module_name, attribute = _WHERE[name]
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
