import os

import numpy as np
import pytest
import torch

from seal_fast.errors import SealFastError
from seal_fast.text_counterparts import (WORDNET_NOUNS, parse_wordnet_nouns, read_nouns, retrieve_text, select_nouns,
                            text_counterparts, textual_compactness)

FIXTURE = """  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived
00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 | a general concept
00002684 03 n 0b object 0 physical_object 0 a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 039 @ 00001930 n 0000 | a thing
00003553 03 n 02 whole 0 unit 0 016 @ 00002684 n 0000 | an assemblage
"""


def test_wordnet_parser_on_fixture(tmp_path):
    path = tmp_path / "data.noun"
    path.write_text(FIXTURE)
    n, lemmas = parse_wordnet_nouns(path)
    assert n == 4
    assert lemmas[:4] == ["entity", "abstraction", "abstract entity", "object"]
    assert len(lemmas) == 1 + 2 + 11 + 2  # word counts are hex: 0b = 11


@pytest.mark.skipif(not os.path.isfile(WORDNET_NOUNS), reason="Debian's wordnet-base is not installed")
def test_wordnet_parser_on_the_debian_file():
    n, lemmas = parse_wordnet_nouns()
    assert n == 82115
    assert len(lemmas) > 100000 and "entity" in lemmas and "dog" in lemmas


def test_missing_wordnet_says_how_to_install(tmp_path):
    with pytest.raises(SealFastError, match="apt-get install wordnet-base"):
        parse_wordnet_nouns(tmp_path / "nope")


def test_user_noun_list(tmp_path):
    (tmp_path / "n.txt").write_text("cat\n\ndog\ncat\n")
    assert read_nouns(tmp_path / "n.txt") == ["cat", "dog"]
    (tmp_path / "e.txt").write_text("\n  \n")
    with pytest.raises(SealFastError, match="empty"):
        read_nouns(tmp_path / "e.txt")


def test_retrieval_hand_worked():
    # two orthogonal nouns; an image at 45 degrees between them but a bit closer to noun 0
    nouns = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    img = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    t = retrieve_text(img, nouns, tau=0.1)
    w0 = 1 / (1 + np.exp((0.6 - 0.8) / 0.1))  # softmax weight of noun 0
    expected0 = np.array([w0, 1 - w0]) / np.hypot(w0, 1 - w0)
    np.testing.assert_allclose(t[0].numpy(), expected0, rtol=1e-5)
    np.testing.assert_allclose(t[1].numpy(), [np.exp(-10) / np.hypot(np.exp(-10), 1), 1 / np.hypot(np.exp(-10), 1)],
                               rtol=1e-4, atol=1e-6)


def test_compactness_hand_worked():
    # two clusters on the unit circle at +-theta around two directions; every point is
    # at squared distance |x - c|^2 from its centre c (the normalised mean is not unit length)
    theta = 0.3
    pts = []
    for base in (0.0, np.pi / 2):
        pts += [[np.cos(base + s * theta), np.sin(base + s * theta)] for s in (-1, 1)]
    pts = np.array(pts * 5, dtype=np.float32)
    tau = textual_compactness(pts, 2)
    # centre of each pair = cos(theta) * base direction, distance^2 = sin(theta)^2
    assert tau == pytest.approx(np.sin(theta) ** 2, rel=1e-4)


def test_noun_selection_keeps_confident_nouns_per_centre():
    g = torch.Generator().manual_seed(0)
    dirs = torch.eye(4)
    images = torch.cat([dirs[i] + 0.05 * torch.randn(50, 4, generator=g) for i in range(4)])
    nouns = torch.cat([dirs + 0.01 * torch.randn(4, 4, generator=g) for _ in range(10)])  # 10 per direction
    keep = select_nouns(images, nouns, n_centers=4, per_center=3)
    assert keep.numel() == 12
    owners = (nouns[keep] @ dirs.T).argmax(1)
    assert sorted(torch.bincount(owners, minlength=4).tolist()) == [3, 3, 3, 3]


def test_text_counterparts_shape_and_dim_check():
    rng = np.random.default_rng(0)
    text, sel = text_counterparts(rng.normal(size=(900, 8)), rng.normal(size=(40, 8)))
    assert text.shape == (900, 8) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert sel.size <= 3 * 5  # 900 / 300 = 3 centres, 5 nouns each
    with pytest.raises(SealFastError, match="text tower must match"):
        text_counterparts(rng.normal(size=(10, 8)), rng.normal(size=(5, 7)))


def test_text_features_are_added_to_a_store_that_stays_readable(tmp_path):
    """`embed --with-text`'s last step on a real CLIP architecture (random weights: no hub):
    the store keeps its cached noun embeddings (another row count than N) and reopens,
    and a second call reuses the cache."""
    open_clip = pytest.importorskip("open_clip")
    from seal_fast.embed import add_text_features
    from seal_fast.store import FeatureStore, write_store

    model = open_clip.create_model("RN50", pretrained=None).eval()
    dim = model.visual.output_dim
    rng = np.random.default_rng(0)
    write_store(tmp_path / "f", spaces={"clip-rn50": rng.normal(size=(600, dim)).astype(np.float32)})
    nouns = tmp_path / "nouns.txt"
    nouns.write_text("\n".join(["cat", "dog", "car", "tree", "shoe", "boat", "house", "bird", "fish", "cup"]))
    store = add_text_features(tmp_path / "f", "clip-rn50", nouns_path=nouns, model=model, progress=False)
    assert store.text().shape == (600, dim) and store.array("nouns_clip-rn50").shape == (10, dim)
    again = FeatureStore(tmp_path / "f")
    assert again.manifest["text"]["n_nouns"] == 10 and again.has("nouns_clip-rn50")
    cached = add_text_features(tmp_path / "f", "clip-rn50", nouns_path=nouns, model=None, progress=False)
    np.testing.assert_array_equal(cached.text(), store.text())  # no model needed: the cache was used
