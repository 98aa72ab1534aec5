import pytest
import torch

from seal_fast.ops import patch_knn, patch_knn_reference

from conftest import devices, needs_ops, skip_without_kernels


@needs_ops
@pytest.mark.parametrize("device", devices)
def test_patch_knn_matches_reference_with_ties(device):
    skip_without_kernels(device)
    g = torch.Generator().manual_seed(3)
    P = torch.randn(5, 10, 6, generator=g)
    P[:, 7] = P[:, 2]  # duplicate patches: exact ties
    got = patch_knn(P.to(device), 4, backend="compiled").cpu()
    ref = patch_knn_reference(P, 4)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert (got[:, :, 0] == torch.arange(10)).all()


@needs_ops
def test_opcheck():
    X = torch.randn(4, 12, 10, generator=torch.Generator().manual_seed(9))
    torch.library.opcheck(torch.ops.seal_fast.patch_knn.default, (X, 3), test_utils=("test_schema", "test_faketensor"))


def test_bad_inputs():
    X = torch.randn(4, 12, 10)
    with pytest.raises(ValueError, match="k\\+1"):
        patch_knn(X, 12)
