"""The accuracy candidates' bench scripts (bench/spatial_label_space.py,
bench/patch_variants.py): the pieces their rows rest on, on small inputs."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_bench
from seal_fast.spatial import SpatialEncoder


@pytest.fixture(scope="module")
def benches():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # their `from accuracy import`
    try:
        yield load_bench("spatial_label_space"), load_bench("patch_variants")
    finally:
        sys.path.pop(0)


def test_the_complete_graph_is_the_knn_graph_when_k_is_every_other_patch(benches):
    spatial_label_space, _ = benches
    P = torch.randn(4, 9, 16, generator=torch.Generator().manual_seed(1))
    complete = spatial_label_space.CompleteGraphEncoder(16, 16, generator=torch.Generator().manual_seed(0))
    knn = SpatialEncoder(16, 16, patch_neighbors=8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(complete(P), knn(P))
    fewer = SpatialEncoder(16, 16, patch_neighbors=3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(complete(P), fewer(P))  # and differs from a sparser graph


def test_the_patch_variants_embed_what_the_backbone_gives(benches, tmp_path):
    _, patch_variants = benches
    from seal_fast.backbones.efficientnet import EfficientNetLite
    from seal_fast.data.sources import open_source
    assert patch_variants.VARIANTS["two-layers"] == ("block+stride16", 1)
    images = (np.random.default_rng(0).random((5, 32, 32, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "few.npz", images=images)
    source = open_source(tmp_path / "few.npz")
    path = tmp_path / "p.npy"
    patch_variants.embed_patches(source, "two-layers", path, batch_size=2)  # batches of 2, 2 and 1
    stored = np.load(path)
    assert stored.shape == (5, 81, 472) and stored.dtype == np.float16
    backbone = EfficientNetLite("efficientnet-lite2", patch_layer="block+stride16").eval()
    with torch.inference_mode():
        direct = backbone(backbone.preprocessing([source.read(i) for i in range(5)]), pooled=False, patches=True)
    np.testing.assert_allclose(stored.astype(np.float32), direct["patches"].half().float().numpy(), rtol=0, atol=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.npz", "p.npy"]  # no temporary file left
