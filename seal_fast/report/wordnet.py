"""WordNet's noun hierarchy, read from Debian's `wordnet-base` (data.noun).

A synset's offset is the byte offset of its line in data.noun (and ImageNet's class
ids are those offsets: n02123045 is "tabby"), so a synset is one seek and one line
away; the report reads the few thousand it needs, never the whole file.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import SealFastError
from ..text_counterparts import WORDNET_NOUNS

HYPERNYM_POINTERS = ("@", "@i")  # hypernym, instance hypernym


class NounHierarchy:
    """Synsets by offset: their first lemma and their hypernyms (every path to the root)."""

    def __init__(self, path=WORDNET_NOUNS):
        self.path = Path(path)
        if not self.path.is_file():
            raise SealFastError(f"WordNet noun file {self.path} not found; install it with "
                                "`apt-get install wordnet-base` (Debian/Ubuntu) or set SEAL_FAST_WORDNET")
        self._file = open(self.path, "rb")
        self._synset = lru_cache(maxsize=None)(self._read)

    def close(self) -> None:
        self._file.close()

    def _read(self, offset: int) -> tuple[str, tuple[int, ...]]:
        self._file.seek(offset)
        fields = self._file.readline().decode("utf-8", "replace").split()
        if len(fields) < 4 or not fields[0].isdigit() or int(fields[0]) != offset:
            raise SealFastError(f"{self.path}: no noun synset at offset {offset:08d} (not WordNet 3.0?)")
        words = int(fields[3], 16)
        lemma = fields[4].replace("_", " ")
        at = 4 + 2 * words
        pointers = int(fields[at])
        hypernyms = []
        for p in range(pointers):  # each pointer: symbol, offset, part of speech, source/target
            symbol, target, pos = fields[at + 1 + 4 * p: at + 4 + 4 * p]
            if symbol in HYPERNYM_POINTERS and pos == "n":
                hypernyms.append(int(target))
        return lemma, tuple(hypernyms)

    def lemma(self, offset: int) -> str:
        return self._synset(offset)[0]

    def hypernyms(self, offset: int) -> tuple[int, ...]:
        return self._synset(offset)[1]

    def ancestors(self, offset: int) -> set[int]:
        """The synset and every synset above it, on every path to the root."""
        seen, todo = set(), [offset]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(self.hypernyms(s))
        return seen


def wnid_offset(wnid: str) -> int:
    """ImageNet's 'n02123045' -> 2123045."""
    if len(wnid) != 9 or wnid[0] != "n" or not wnid[1:].isdigit():
        raise SealFastError(f"{wnid!r} is not a WordNet noun id (n followed by 8 digits)")
    return int(wnid[1:])
