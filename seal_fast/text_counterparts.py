"""Textual counterparts of images (TAC's recipe, used by SATC).

1. Nouns: WordNet 3.0 noun lemmas, read from Debian's `wordnet-base`
   (/usr/share/wordnet/data.noun), or a user's own list (one noun per line).
2. Noun embeddings: the CLIP text tower on seven prompt templates, averaged.
3. Selection: spherical K-Means of the image embeddings into about N/300
   centres; every noun goes to the centre that claims it most confidently
   (softmax over centres); each centre keeps its 5 most confident nouns.
4. Retrieval: text_i = normalise(softmax(img_i . nouns / 0.005) . nouns).

And SATC's selector: the compactness tau of the textual features (eq. 5) —
the mean over K-Means clusters of the mean squared distance to the centre.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .kmeans_algorithm import kmeans
from .errors import SealFastError

WORDNET_NOUNS = os.environ.get("SEAL_FAST_WORDNET", "/usr/share/wordnet/data.noun")
PROMPT_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def parse_wordnet_nouns(path=WORDNET_NOUNS) -> tuple[int, list[str]]:
    """(number of noun synsets, unique noun lemmas in file order, '_' -> ' ')."""
    path = Path(path)
    if not path.is_file():
        raise SealFastError(f"WordNet noun file {path} not found; install it with `apt-get install wordnet-base` "
                            "(Debian/Ubuntu), set SEAL_FAST_WORDNET, or pass your own list with --nouns FILE")
    synsets = 0
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split()
            if len(fields) < 4:
                continue
            synsets += 1
            count = int(fields[3], 16)  # word count, in hex
            for w in range(count):
                lemma = fields[4 + 2 * w].replace("_", " ")
                # adjective markers like "(a)" only appear in adjective files; strip defensively
                lemma = lemma.split("(")[0].strip()
                if lemma:
                    seen.setdefault(lemma, None)
    return synsets, list(seen)


def read_nouns(path=None) -> list[str]:
    """WordNet nouns, or one noun per line from `path` (blank lines and duplicates dropped)."""
    if path is None:
        return parse_wordnet_nouns()[1]
    path = Path(path)
    if not path.is_file():
        raise SealFastError(f"noun list {path} does not exist")
    nouns = list(dict.fromkeys(line.strip() for line in path.read_text(encoding="utf-8").splitlines()))
    nouns = [n for n in nouns if n]
    if not nouns:
        raise SealFastError(f"noun list {path} is empty")
    return nouns


@torch.no_grad()
def embed_nouns(clip_model, tokenizer, nouns: Sequence[str], device, batch_size: int = 1024,
                progress: bool = True) -> np.ndarray:
    """CLIP text embeddings of every noun, averaged over the prompt templates (V, d) float32."""
    if not nouns:
        raise SealFastError("the noun list is empty")
    total = None
    for template in tqdm(PROMPT_TEMPLATES, desc="noun prompts", disable=not progress):
        parts = []
        for s in range(0, len(nouns), batch_size):
            tokens = tokenizer([template.format(n) for n in nouns[s:s + batch_size]]).to(device)
            parts.append(clip_model.encode_text(tokens).float().cpu())
        emb = torch.cat(parts)
        total = emb if total is None else total + emb
    return (total / len(PROMPT_TEMPLATES)).numpy().astype(np.float32)


def select_nouns(images: torch.Tensor, nouns: torch.Tensor, n_centers: int, per_center: int = 5,
                 seed: int = 0) -> torch.Tensor:
    """Indices of the nouns kept: the `per_center` most confident nouns of every
    image centre (spherical K-Means of the images)."""
    img = F.normalize(images.float(), dim=1)
    nn_ = F.normalize(nouns.float(), dim=1)
    n_centers = max(1, min(n_centers, img.shape[0]))
    _, labels, _, _ = kmeans(img, n_centers, n_init=3, seed=seed)
    centers = torch.zeros(n_centers, img.shape[1], device=img.device).index_add_(0, labels, img)
    centers = F.normalize(centers, dim=1)
    soft = torch.softmax(centers @ nn_.T, dim=0)          # (centres, V): which centre claims each noun
    confidence, owner = soft.max(dim=0)
    keep = []
    for c in range(n_centers):
        members = torch.nonzero(owner == c).flatten()
        if members.numel():
            order = torch.argsort(confidence[members], descending=True, stable=True)
            keep.append(members[order[:per_center]])
    return torch.cat(keep).sort().values


def retrieve_text(images: torch.Tensor, nouns: torch.Tensor, tau: float = 0.005, block: int = 8192) -> torch.Tensor:
    """text_i = normalise(softmax(img_i . nouns / tau) . nouns), (N, d)."""
    img = F.normalize(images.float(), dim=1)
    nn_ = F.normalize(nouns.float(), dim=1)
    out = [F.normalize(torch.softmax(img[s:s + block] @ nn_.T / tau, dim=1) @ nn_, dim=1)
           for s in range(0, img.shape[0], block)]
    return torch.cat(out)


def text_counterparts(images, noun_embeddings, *, per_center: int = 5, images_per_center: int = 300,
                      tau: float = 0.005, seed: int = 0, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """(text features (N, d) float32, indices of the selected nouns)."""
    img = torch.as_tensor(np.asarray(images), dtype=torch.float32, device=device)
    nouns = torch.as_tensor(np.asarray(noun_embeddings), dtype=torch.float32, device=device)
    if img.shape[1] != nouns.shape[1]:
        raise SealFastError(f"image embeddings are {img.shape[1]}-d but noun embeddings {nouns.shape[1]}-d: "
                            "the text tower must match the visual backbone")
    selected = select_nouns(img, nouns, img.shape[0] // images_per_center, per_center, seed)
    text = retrieve_text(img, nouns[selected], tau)
    return text.cpu().numpy(), selected.cpu().numpy()


def textual_compactness(text, n_clusters: int, seed: int = 0) -> float:
    """SATC eq. 5: mean over K-Means clusters of the mean squared distance to the centre."""
    T = torch.as_tensor(np.asarray(text), dtype=torch.float32)
    T = F.normalize(T, dim=1)
    centers, labels, _, _ = kmeans(T, n_clusters, n_init=3, seed=seed)
    d2 = ((T - centers[labels]) ** 2).sum(1)
    per_cluster = torch.zeros(n_clusters).index_add_(0, labels, d2)
    counts = torch.bincount(labels, minlength=n_clusters).float()
    used = counts > 0
    return float((per_cluster[used] / counts[used]).mean())
