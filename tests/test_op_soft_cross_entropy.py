import pytest
import torch

from seal_fast.ops import soft_cross_entropy, soft_cross_entropy_reference

from conftest import devices, needs_ops, skip_without_kernels


def sample_inputs(device, dtype, B=37, K=11, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(B, K, generator=g, dtype=torch.float64) * 3).to(device, dtype)
    t = torch.softmax(torch.randn(B, K, generator=g, dtype=torch.float64), 1).to(device, dtype)
    return z.requires_grad_(requires_grad), t.requires_grad_(requires_grad)


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 2), (37, 11), (300, 1000), (0, 4)])
def test_forward_matches_reference(device, dtype, shape):
    skip_without_kernels(device)
    z, t = sample_inputs(device, dtype, *shape)
    loss, lp = soft_cross_entropy(z, t, backend="compiled")
    ref_loss, ref_lp = soft_cross_entropy_reference(z, t)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(loss, ref_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(lp, ref_lp, rtol=tol, atol=tol)


@needs_ops
@pytest.mark.parametrize("device", devices)
def test_backward_matches_reference(device):
    skip_without_kernels(device)
    z, t = sample_inputs(device, torch.float64, requires_grad=True, seed=1)
    loss, lp = soft_cross_entropy(z, t, backend="compiled")
    w = torch.randn_like(loss)
    wl = torch.randn_like(lp)
    gz, gt = torch.autograd.grad((loss * w).sum() + (lp * wl).sum(), (z, t))
    z2, t2 = z.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    loss2, lp2 = soft_cross_entropy_reference(z2, t2)
    gz2, gt2 = torch.autograd.grad((loss2 * w).sum() + (lp2 * wl).sum(), (z2, t2))
    torch.testing.assert_close(gz, gz2)
    torch.testing.assert_close(gt, gt2)


@needs_ops
@pytest.mark.parametrize("device", devices)
def test_gradcheck(device):
    skip_without_kernels(device)
    z, t = sample_inputs(device, torch.float64, B=5, K=4, requires_grad=True, seed=2)
    assert torch.autograd.gradcheck(lambda a, b: soft_cross_entropy(a, b, backend="compiled"), (z, t))


@needs_ops
@pytest.mark.parametrize("device", devices)
def test_opcheck(device):
    skip_without_kernels(device)
    z, t = sample_inputs(device, torch.float32, requires_grad=True, seed=3)
    torch.library.opcheck(torch.ops.seal_fast.soft_cross_entropy.default, (z, t))


@needs_ops
def test_torch_compile_fullgraph():
    z, t = sample_inputs("cpu", torch.float32, seed=4)
    f = torch.compile(lambda a, b: soft_cross_entropy(a, b, backend="compiled")[0].sum(), fullgraph=True)
    torch.testing.assert_close(f(z, t), soft_cross_entropy_reference(z, t)[0].sum())


@needs_ops
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs(dtype):
    skip_without_kernels("cuda")
    z, t = sample_inputs("cuda", torch.float32, seed=5)
    loss, _ = soft_cross_entropy(z.to(dtype), t.to(dtype), backend="compiled")
    ref, _ = soft_cross_entropy_reference(z, t)
    torch.testing.assert_close(loss.float(), ref, rtol=2e-2, atol=2e-2)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        soft_cross_entropy(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="dtypes"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))


def test_reference_backend_needs_no_extension():
    z, t = sample_inputs("cpu", torch.float64, seed=6)
    loss, _ = soft_cross_entropy(z, t, backend="reference")
    torch.testing.assert_close(loss, -(t * torch.log_softmax(z, 1)).sum(1))
