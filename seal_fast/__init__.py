"""seal_fast: discover human-meaningful categories in unlabeled images (SEAL, SATC, TURTLE)."""
from ._version import __version__
from ._info import build_info
from . import ops  # registers fake kernels and autograd of the compiled ops
from .errors import SealFastError
from .models.base import load_model
from .models.kmeans import KMeans
from .models.satc import SATC
from .models.seal import SEAL
from .models.turtle import TURTLE
from .store import FeatureStore

__all__ = ["__version__", "build_info", "ops", "SealFastError", "load_model", "FeatureStore",
           "KMeans", "TURTLE", "SEAL", "SATC"]
