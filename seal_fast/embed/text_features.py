"""TAC-style text features for a store that holds a CLIP space: the nouns embedded
by CLIP's text tower (cached in the store) and each image's text counterpart."""
from __future__ import annotations

import numpy as np

from ..backbones.clip import CLIP_MODELS, create_clip_model
from ..errors import SealFastError
from ..store import FeatureStore, add_array
from ..text_counterparts import embed_nouns, read_nouns, text_counterparts
from ..validation import resolve_device


def add_text_features(out, clip_backbone: str, *, weights: str | None = None, nouns_path=None, device="auto",
                      batch_size: int = 1024, seed: int = 0, progress: bool = True, model=None) -> FeatureStore:
    """Add TAC-style textual counterparts (`text.npy`) to a feature store that holds
    the CLIP space `clip_backbone`; the noun embeddings are cached in the store
    (`nouns_<backbone>.npy`, with the noun list in the manifest) and reused."""
    if clip_backbone not in CLIP_MODELS:
        raise SealFastError(f"text features need a CLIP backbone (its text tower embeds the nouns); "
                            f"{clip_backbone!r} is not one of {', '.join(CLIP_MODELS)}")
    store = FeatureStore(out)
    images = store.space(clip_backbone)
    nouns = read_nouns(nouns_path)
    dev = resolve_device(device)
    cache_key = f"nouns_{clip_backbone}"
    cached = store.manifest.get("text", {}).get("nouns") == nouns and store.has(cache_key)
    if cached:
        noun_emb = np.asarray(store.array(cache_key))
    else:
        import open_clip

        clip = model if model is not None else create_clip_model(clip_backbone, weights)
        clip = clip.to(dev)
        tokenizer = open_clip.get_tokenizer(CLIP_MODELS[clip_backbone])
        noun_emb = embed_nouns(clip, tokenizer, nouns, dev, batch_size, progress)
        store = add_array(out, cache_key, noun_emb, "nouns", backbone=clip_backbone)
    text, selected = text_counterparts(images, noun_emb, seed=seed, device=dev)
    meta = {"text": {"backbone": clip_backbone, "nouns_source": str(nouns_path or "WordNet 3.0 (data.noun)"),
                     "n_nouns": len(nouns), "nouns": nouns, "n_selected": int(selected.size),
                     "selected_nouns": [nouns[i] for i in selected.tolist()], "retrieval_tau": 0.005,
                     "images_per_center": 300, "nouns_per_center": 5}}
    return add_array(out, "text", text, "text", backbone=clip_backbone, meta=meta)
