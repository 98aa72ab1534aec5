"""The estimators by method name, and the parameter names retired from them."""
from __future__ import annotations

import dataclasses
import functools

from ..errors import SealFastError

_REGISTRY: dict[str, type] = {}


def register(cls):
    """Add an estimator to the registry. Every parameter must be declared with
    `param`; a renamed parameter (the class's `renamed`) given by its old name is
    refused with the new one, instead of dataclass's bare "unexpected keyword"."""
    undeclared = [f.name for f in dataclasses.fields(cls) if "check" not in f.metadata]
    if undeclared:
        raise TypeError(f"{cls.__name__}: parameters {undeclared} are not declared with param(..., check=...)")
    init = cls.__init__

    @functools.wraps(init)  # keeps the signature scikit-learn reads the parameter names from
    def __init__(self, *args, **kwargs):
        refuse_renamed(type(self), kwargs)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    _REGISTRY[cls.method] = cls
    return cls


def refuse_renamed(cls, names, spell=lambda name: name) -> None:
    """A clear error for the first of `names` that `cls` knows only by a new name."""
    for name in names:
        if name in cls.renamed:
            raise SealFastError(f"{cls.__name__}: {spell(name)} is now {spell(cls.renamed[name])} "
                                f"({cls.param_field(cls.renamed[name]).metadata['help']})")


def registered_methods() -> tuple[str, ...]:
    """Every method name an estimator registered."""
    return tuple(_REGISTRY)


def estimator_class(method: str) -> type:
    """The estimator class of a method name ("kmeans", "turtle", "seal", "satc")."""
    if method not in _REGISTRY:
        raise SealFastError(f"unknown method {method!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[method]
