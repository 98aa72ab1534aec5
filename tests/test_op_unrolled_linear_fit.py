import pytest
import torch

from seal_fast import ops
from seal_fast.ops.unrolled_linear_fit import unrolled_linear_fit, unrolled_linear_fit_reference

from conftest import devices, needs_cuda, needs_ops, skip_without_kernels


def sample_inputs(device, dtype, B=130, dims=(37, 20), K=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    Zs = [torch.randn(B, d, generator=g, dtype=torch.float64).to(device, dtype) for d in dims]
    t = torch.softmax(2 * torch.randn(B, K, generator=g, dtype=torch.float64), 1).to(device, dtype)
    W0s = [(0.1 * torch.randn(K, d, generator=g, dtype=torch.float64)).to(device, dtype) for d in dims]
    b0s = [(0.1 * torch.randn(K, generator=g, dtype=torch.float64)).to(device, dtype) for _ in dims]
    return Zs, t, W0s, b0s


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,dims,K,steps", [(130, (37, 20), 6, 10), (1, (5,), 2, 3), (257, (300,), 10, 10),
                                            (64, (8, 9, 10), 3, 0), (70, (1280,), 10, 4)])
def test_matches_reference(device, dtype, B, dims, K, steps):
    skip_without_kernels(device)
    Zs, t, W0s, b0s = sample_inputs(device, dtype, B, dims, K, seed=B + K)
    lr = 1e-2
    got = unrolled_linear_fit(Zs, t, W0s, b0s, steps, lr, backend="compiled")
    ref = unrolled_linear_fit(Zs, t, W0s, b0s, steps, lr, backend="reference")
    tol = 1e-5 if dtype == torch.float64 else 2e-4
    for outs, refs in zip(got, ref):
        for a, r in zip(outs, refs):
            assert a.shape == r.shape and a.dtype == r.dtype
            torch.testing.assert_close(a, r, rtol=tol, atol=tol * r.abs().max().item())
    if dtype == torch.float64:  # final W within 1e-5 relative
        for a, r in zip(got[0], ref[0]):
            assert ((a - r).norm() / r.norm()).item() < 1e-5


@needs_ops
@pytest.mark.parametrize("device", devices)
def test_exact_gradient_matches_autograd_through_reference(device):
    skip_without_kernels(device)
    Zs, t, W0s, b0s = sample_inputs(device, torch.float64, B=90, dims=(16, 11), K=5, seed=3)
    w = torch.randn(5, 16, dtype=torch.float64, device=device)

    def outer(backend, targets):
        Ws, bs, logits = unrolled_linear_fit(Zs, targets, W0s, b0s, 6, 5e-2, exact=True, backend=backend)
        ce = sum(-(targets * torch.log_softmax(l, 1)).sum(1).mean() for l in logits)
        return ce + (Ws[0] * w).sum() + bs[1].square().sum()

    t1 = t.clone().requires_grad_()
    t2 = t.clone().requires_grad_()
    g_op, = torch.autograd.grad(outer("compiled", t1), t1)
    g_ref, = torch.autograd.grad(outer("reference", t2), t2)
    torch.testing.assert_close(g_op, g_ref, rtol=1e-9, atol=1e-12)


@needs_ops
def test_exact_gradcheck():
    Zs, t, W0s, b0s = sample_inputs("cpu", torch.float64, B=12, dims=(4, 3), K=3, seed=4)
    t = t.requires_grad_()

    def f(targets):
        Ws, bs, logits = unrolled_linear_fit(Zs, targets, W0s, b0s, 3, 0.1, exact=True, backend="compiled")
        return (*Ws, *bs, *logits)

    assert torch.autograd.gradcheck(f, (t,), eps=1e-6, atol=1e-5)


def test_first_order_mode_detaches_targets():
    Zs, t, W0s, b0s = sample_inputs("cpu", torch.float64, seed=5)
    t = t.requires_grad_()
    for backend in ("reference", "auto"):
        _, _, logits = unrolled_linear_fit(Zs, t, W0s, b0s, 2, 1e-2, backend=backend)
        assert not logits[0].requires_grad


def test_reference_matches_torch_optim_adam():
    """The oracle itself: same trajectory as nn.Linear + torch.optim.Adam + F.cross_entropy."""
    Zs, t, W0s, b0s = sample_inputs("cpu", torch.float64, B=50, dims=(7,), K=4, seed=6)
    lin = torch.nn.Linear(7, 4).double()
    with torch.no_grad():
        lin.weight.copy_(W0s[0])
        lin.bias.copy_(b0s[0])
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, betas=(0.9, 0.999))
    for _ in range(8):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(Zs[0]), t).backward()
        opt.step()
    Ws, bs, _ = unrolled_linear_fit_reference(Zs, t, W0s, b0s, 8, 1e-2)
    torch.testing.assert_close(Ws[0], lin.weight.detach())
    torch.testing.assert_close(bs[0], lin.bias.detach())


@needs_ops
def test_opcheck():
    Zs, t, W0s, b0s = sample_inputs("cpu", torch.float32, B=40, seed=7)
    torch.library.opcheck(torch.ops.seal_fast.unrolled_linear_fit.default,
                          (Zs, t, W0s, b0s, 3, 1e-2, 0.9, 0.999, 1e-8),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_bad_shapes():
    Zs, t, W0s, b0s = sample_inputs("cpu", torch.float32)
    with pytest.raises(ValueError, match="W0s"):
        unrolled_linear_fit(Zs, t, [W0s[1], W0s[0]], b0s, 2, 1e-2)
    with pytest.raises(ValueError, match="one entry per space"):
        unrolled_linear_fit(Zs, t, W0s[:1], b0s, 2, 1e-2)


@needs_ops
def test_device_generic_backward_matches_cpu_kernel():
    """The ATen implementation that serves CUDA, checked against the CPU kernel."""
    from seal_fast import _extension

    Zs, t, W0s, b0s = sample_inputs("cpu", torch.float64, B=70, dims=(9, 13), K=4, seed=8)
    g = torch.Generator().manual_seed(9)
    gW = [torch.randn(W.shape, generator=g, dtype=torch.float64) for W in W0s]
    gb = [torch.randn(b.shape, generator=g, dtype=torch.float64) for b in b0s]
    gl = [torch.randn(t.shape, generator=g, dtype=torch.float64) for _ in Zs]
    args = (gW, gb, gl, Zs, t, W0s, b0s, 5, 0.05, 0.9, 0.999, 1e-8)
    torch.testing.assert_close(_extension._C.unrolled_linear_fit_backward_aten(*args),
                               torch.ops.seal_fast.unrolled_linear_fit_backward(*args))


@needs_ops
def test_linear_fit_cuda_scratch_is_independent_of_the_batch():
    from seal_fast import _extension

    scratch = _extension._C.linear_fit_cuda_scratch_bytes
    dims, K, sms = [768, 1536], 1000, 132  # ImageNet's 2-space setting on an H100
    slot = (K * sum(dims) + 2 * K) * 4      # one partial gradient of every space, float32
    full = scratch(1_281_167, K, dims, sms)
    assert full == scratch(40_000, K, dims, sms) == sms * slot  # a fixed number of slots beyond 132 tiles
    assert scratch(10_000, K, dims, sms) == 79 * slot           # fewer tiles than slots: one slot a tile
    assert scratch(200, K, dims, sms) == 2 * slot
    assert full < 1.3e9
    per_tile = -(-1_281_167 // 128) * slot  # the old plan, one slot per 128-row tile: ~92 GB
    assert per_tile > 70 * full


def test_linear_fit_weights_must_have_the_targets_dtype():
    t = torch.softmax(torch.randn(10, 3), 1)
    with pytest.raises(ValueError, match="must have the targets' dtype"):
        ops.unrolled_linear_fit([torch.randn(10, 4)], t, [torch.zeros(3, 4, dtype=torch.float64)], [torch.zeros(3)],
                                2, 1e-3)


@needs_ops
@needs_cuda
def test_cuda_linear_fit_many_spaces_and_large_batches():
    """More spaces than one launch holds (SEAL labels on phi + 3 restarts per space),
    and a batch of many tiles, against the CPU kernel."""
    skip_without_kernels("cuda")
    g = torch.Generator().manual_seed(6)
    B, K, dims = 40_000, 12, [32, 16, 8, 24, 40, 12]
    Zs = [torch.randn(B, d, generator=g) for d in dims]
    t = torch.softmax(torch.randn(B, K, generator=g), 1)
    W0s = [0.1 * torch.randn(K, d, generator=g) for d in dims]
    b0s = [torch.zeros(K) for _ in dims]
    cpu = ops.unrolled_linear_fit(Zs, t, W0s, b0s, 5, 1e-2, backend="compiled")
    torch.cuda.reset_peak_memory_stats()
    gpu = ops.unrolled_linear_fit([z.cuda() for z in Zs], t.cuda(), [w.cuda() for w in W0s],
                                  [b.cuda() for b in b0s], 5, 1e-2, backend="compiled")
    for a, b in zip(cpu[0] + cpu[1], gpu[0] + gpu[1]):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
    from seal_fast import _extension

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    plan = _extension._C.linear_fit_cuda_scratch_bytes(B, K, dims, sms)
    inputs = sum(z.numel() for z in Zs) * 4 + 2 * B * K * 4 * len(dims)
    assert torch.cuda.max_memory_allocated() < inputs * 2 + plan + (64 << 20)
