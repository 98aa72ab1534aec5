"""Names for clusters, offline first.

ImageNet naming: an EfficientNet-Lite store's visual space is the pooled embedding its
ImageNet classifier (`net._fc`, 1280 -> 1000) reads, so the classifier applies to the
stored rows as they are, with no re-embedding. A cluster's mean posterior over the
1,000 classes gives its top classes; the classes are WordNet synsets, so a broader
name is the sum of the posteriors under a hypernym ("footwear" holds sandal, clog,
running shoe, ...). The name shown is the most specific class or hypernym whose
mean posterior reaches NAME_THRESHOLD; below it the cluster has "no confident name",
which is the normal answer for images ImageNet has no class for (digits, X-rays).

Zero-shot naming (a CLIP space): the mean over the cluster of each image's softmax
over WordNet nouns (CLIP's logit scale, 100) through the text tower (SATC's nouns).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SealFastError
from ..rows import ROW_BLOCK
from .wordnet import NounHierarchy, wnid_offset

# The lowest mean posterior a name needs, measured (bench/results/naming-cpu-2026-12-04.md):
# the cat photo's views reach 0.87 as "domestic cat", while wrong names reach 0.56 (noise as
# "bird", sneakers as "implement") and digits 0.39 ("nematode"); 0.6 gives none of the wrong ones.
NAME_THRESHOLD = 0.6
# A hypernym over more ImageNet classes than this says too little to be a name ("organism",
# "device", "invertebrate", "container"); "bird" (59 classes), "clothing" and "footwear" still qualify.
MAX_LEAVES = 60
CLIP_LOGIT_SCALE = 100.0


@dataclass
class ClusterName:
    """What the report says a cluster is: `name` (None: no confident name) with
    `confidence` (the mean posterior under it), the top classes with theirs, and the
    lowest common hypernym of the top classes when it is informative."""

    name: str | None
    confidence: float
    top: list = field(default_factory=list)      # [(class, mean posterior)], best first
    broader: tuple | None = None                  # (hypernym, mean posterior under it)

    def to_dict(self) -> dict:
        return {"name": self.name, "confidence": round(self.confidence, 4),
                "top": [[n, round(p, 4)] for n, p in self.top],
                "broader": [self.broader[0], round(self.broader[1], 4)] if self.broader else None}


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k class ids in the classifiers' output order."""
    text = resources.files(__package__).joinpath("imagenet_wnids.txt").read_text()
    wnids = text.split()
    if len(wnids) != 1000:
        raise SealFastError(f"imagenet_wnids.txt lists {len(wnids)} classes, not 1000; the package is damaged")
    return wnids


def imagenet_class_names() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def mean_posteriors(Z, labels: np.ndarray, n_clusters: int, logits) -> np.ndarray:
    """(K, C): each cluster's mean of softmax(logits(z)) over its rows, in row blocks
    (N may exceed memory: Z can be a memory map)."""
    sums = None
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    with torch.no_grad():
        for start in range(0, labels.shape[0], ROW_BLOCK):
            z = torch.from_numpy(np.array(Z[start:start + ROW_BLOCK], dtype=np.float32))
            p = torch.softmax(logits(z).double(), dim=1)
            part = torch.zeros(n_clusters, p.shape[1], dtype=torch.float64).index_add_(
                0, torch.from_numpy(np.array(labels[start:start + ROW_BLOCK], dtype=np.int64)), p)
            sums = part if sums is None else sums + part
    return (sums.numpy() / np.maximum(counts, 1)[:, None])


class ImageNetNamer:
    """Names clusters from mean ImageNet posteriors and WordNet's hierarchy."""

    def __init__(self, hierarchy: NounHierarchy | None = None, threshold: float = NAME_THRESHOLD,
                 max_leaves: int = MAX_LEAVES):
        self.hierarchy = hierarchy or NounHierarchy()
        self.threshold = threshold
        self.class_names = imagenet_class_names()
        leaves = [wnid_offset(w) for w in imagenet_wnids()]
        self.ancestors = [self.hierarchy.ancestors(s) for s in leaves]
        under: dict[int, list[int]] = {}
        for c, anc in enumerate(self.ancestors):
            for a in anc:
                under.setdefault(a, []).append(c)
        # the names a cluster can get: every class, and every hypernym narrow enough to say something
        self.nodes = [a for a, cs in under.items() if len(cs) <= max_leaves]
        self.size = np.asarray([len(under[a]) for a in self.nodes])
        self.membership = np.zeros((len(self.nodes), len(leaves)))  # node x class: 1 where the class is under it
        for i, a in enumerate(self.nodes):
            self.membership[i, under[a]] = 1.0
        self.leaf_of = dict(zip(leaves, range(len(leaves))))
        self.labels = {node: self.class_names[self.leaf_of[node]] if node in self.leaf_of
                       else self.hierarchy.lemma(node) for node in self.nodes}
        if hierarchy is None:  # every synset it needs is read: let the file go
            self.hierarchy.close()

    def _label(self, node: int) -> str:
        return self.labels[node]

    def names(self, posteriors: np.ndarray) -> list[ClusterName]:
        """The name of each cluster from its mean posterior, (K, 1000) -> K names."""
        posteriors = np.atleast_2d(posteriors)
        masses = posteriors @ self.membership.T  # (K, nodes): the posterior under each class and hypernym
        index = {node: i for i, node in enumerate(self.nodes)}
        out = []
        for posterior, mass in zip(posteriors, masses):
            order = np.argsort(-posterior, kind="stable")
            top = [(self.class_names[c], float(posterior[c])) for c in order[:3]]
            # the most specific class or hypernym that holds enough of the posterior
            held = np.flatnonzero(mass >= self.threshold)
            name, confidence = None, float(posterior[order[0]])
            if held.size:
                best = held[np.lexsort((-mass[held], self.size[held]))[0]]
                name, confidence = self._label(self.nodes[best]), float(mass[best])
            common = set.intersection(*(self.ancestors[c] for c in order[:3]))
            informative = [index[n] for n in common if n in index and n not in self.leaf_of]
            broader = None
            if informative:
                lowest = min(informative, key=lambda i: self.size[i])
                broader = (self._label(self.nodes[lowest]), float(mass[lowest]))
            out.append(ClusterName(name, confidence, top, broader))
        return out


def imagenet_head(backbone: str, weights=None):
    """The ImageNet classifier that reads `backbone`'s stored embedding, or None when
    the backbone has none (CLIP, DINOv2, imported arrays)."""
    from ..backbones.efficientnet import EFFICIENTNET_LITE, EfficientNetLite

    if backbone not in EFFICIENTNET_LITE:
        return None
    return EfficientNetLite(backbone, weights).imagenet_head()


def name_with_imagenet(Z, labels: np.ndarray, n_clusters: int, head, namer: ImageNetNamer | None = None):
    """{cluster: ClusterName} from an ImageNet classifier `head` over the rows `Z`."""
    namer = namer or ImageNetNamer()
    used = np.flatnonzero(np.bincount(labels, minlength=n_clusters))
    posteriors = mean_posteriors(Z, labels, n_clusters, head)
    return dict(zip(used.tolist(), namer.names(posteriors[used])))


def name_with_text(Z, labels: np.ndarray, n_clusters: int, noun_embeddings, nouns: list[str],
                   threshold: float = NAME_THRESHOLD) -> dict:
    """{cluster: ClusterName}: zero-shot, each image's softmax over the nouns' CLIP
    text embeddings, averaged over the cluster."""
    nouns_t = F.normalize(torch.from_numpy(np.array(noun_embeddings, dtype=np.float32)), dim=1)
    if nouns_t.shape[1] != Z.shape[1]:
        raise SealFastError(f"the noun embeddings are {nouns_t.shape[1]}-d but the space is {Z.shape[1]}-d: "
                            "they must come from the same CLIP model")
    posteriors = mean_posteriors(Z, labels, n_clusters,
                                 lambda z: CLIP_LOGIT_SCALE * F.normalize(z, dim=1) @ nouns_t.T)
    out = {}
    for c in np.flatnonzero(np.bincount(labels, minlength=n_clusters)).tolist():
        order = np.argsort(-posteriors[c], kind="stable")
        top = [(nouns[i], float(posteriors[c, i])) for i in order[:3]]
        best = top[0][1]
        out[c] = ClusterName(top[0][0] if best >= threshold else None, best, top)
    return out
