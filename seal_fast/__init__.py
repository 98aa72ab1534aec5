"""seal_fast: discover human-meaningful categories in unlabeled images (SEAL, SATC, TURTLE)."""
from ._version import __version__
from ._info import build_info
from . import ops  # registers every op's fake kernel and autograd
from .errors import SealFastError
from .models import SATC, SEAL, TURTLE, KMeans, load_model
from .self_test import self_test
from .store import FeatureStore

__all__ = ["__version__", "build_info", "ops", "SealFastError", "load_model", "FeatureStore", "self_test",
           "KMeans", "TURTLE", "SEAL", "SATC"]
