"""Images -> feature store: `embed` (run.py: the job, sharded under torchrun), its
resume journal (journal.py), the store's assembly (assemble.py), and TAC-style text
features added afterwards (text_features.py)."""
from .journal import PARTIAL
from .run import embed
from .text_features import add_text_features

__all__ = ["PARTIAL", "embed", "add_text_features"]
