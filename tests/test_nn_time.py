"""Tests for the timestep-conditioned networks of :mod:`probgen.nn_time`."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from probgen.nn_time import TimeMLP, UNet, timestep_embedding

#: float32 embedding vs the float64 numpy formula: the phases are computed in float64, so the
#: only error is rounding sin/cos values in [-1, 1] to float32 (<= 6e-8); 1e-6 leaves margin.
EMB_TOL_F32 = 1e-6
#: float64 embedding vs numpy: both evaluate the same float64 formula; differences are a few ulp
#: of phases up to ~1e3 rad (~1e-13).
EMB_TOL_F64 = 1e-12
#: Embeddings of distinct t in 1..1000 (dim 128) are >= 1.95 apart in L2 (measured); anything
#: above float32 noise (~1e-6) shows distinctness, 0.5 keeps a wide margin.
EMB_MIN_DISTANCE = 0.5
#: float32 vs float64 forward of the same weights: float32 rounding (~6e-8 relative) amplified
#: over ~10 layers and sums of a few hundred terms stays well below 1e-4 for O(1) outputs.
F32_VS_F64_TOL = 1e-4
#: Overfitting target: final MSE below this fraction of the initial MSE (the brief's 10%).
OVERFIT_FRACTION = 0.1


def numpy_embedding(t: np.ndarray, dim: int, max_period: float = 10000.0) -> np.ndarray:
    """The Vaswani et al. (2017) sinusoidal embedding written out independently in numpy."""
    half = dim // 2
    freqs = np.exp(-np.log(max_period) * np.arange(half) / half) if half else np.zeros(0)
    phases = np.asarray(t, dtype=np.float64)[..., None] * freqs
    out = np.concatenate([np.sin(phases), np.cos(phases)], axis=-1)
    if dim % 2:
        out = np.concatenate([out, np.zeros((*out.shape[:-1], 1))], axis=-1)
    return out


def perturb_(layer: torch.nn.Module, seed: int = 1) -> None:
    """Give a zero-initialised output layer random weights, so gradients flow past it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


# ------------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("dim", [128, 7, 1])
@pytest.mark.parametrize("max_period", [10000.0, 100.0])
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
def test_embedding_matches_numpy(dim: int, max_period: float, shape: tuple[int, ...]) -> None:
    t = torch.randint(1, 1001, shape)
    emb = timestep_embedding(t, dim, max_period)
    assert emb.shape == (*shape, dim)
    assert emb.dtype == torch.get_default_dtype()
    ref = numpy_embedding(t.numpy(), dim, max_period)
    np.testing.assert_allclose(emb.numpy(), ref, rtol=0, atol=EMB_TOL_F32)


def test_embedding_dtype_and_odd_padding() -> None:
    t = torch.tensor([1, 17, 999], dtype=torch.int32)
    emb = timestep_embedding(t, 9, dtype=torch.float64)
    assert emb.dtype == torch.float64
    np.testing.assert_allclose(emb.numpy(), numpy_embedding(t.numpy(), 9), rtol=0, atol=EMB_TOL_F64)
    assert torch.equal(emb[:, -1], torch.zeros(3, dtype=torch.float64))
    # sin^2 + cos^2 = 1 per frequency: an identity check independent of the formula's layout.
    torch.testing.assert_close(emb[:, :4] ** 2 + emb[:, 4:8] ** 2, torch.ones(3, 4).double())


def test_embedding_distinct_across_t() -> None:
    emb = timestep_embedding(torch.arange(1, 1001), 128)
    dist = torch.cdist(emb, emb)
    dist.fill_diagonal_(float("inf"))
    assert dist.min().item() > EMB_MIN_DISTANCE


# ------------------------------------------------------------------------------ shapes


def small_unet(**kw: object) -> UNet:
    kw.setdefault("channels", (16, 32))
    return UNet((1, 8, 8), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("out_mult", [1, 2])
def test_time_mlp_shapes(out_mult: int) -> None:
    net = TimeMLP(3, hidden=(16, 16, 8), out_mult=out_mult, time_dim=12)
    B, S, d = 5, 4, 3 * out_mult
    assert net(torch.randn(B, 3), torch.randint(1, 50, (B,))).shape == (B, d)
    assert net(torch.randn(S, B, 3), torch.randint(1, 50, (B,))).shape == (S, B, d)
    assert net(torch.randn(S, B, 3), torch.randint(1, 50, (S, B))).shape == (S, B, d)
    assert net(torch.randn(S, B, 3), torch.tensor(7)).shape == (S, B, d)
    assert net(torch.randn(3), torch.tensor(7)).shape == (d,)


@pytest.mark.parametrize("out_mult", [1, 2])
def test_unet_shapes_and_channel_major_layout(out_mult: int) -> None:
    net = UNet((2, 8, 8), out_mult=out_mult, channels=(16, 32), time_dim=16)
    B, S, D = 3, 2, 2 * 8 * 8
    assert net(torch.randn(B, D), torch.randint(1, 50, (B,))).shape == (B, D * out_mult)
    assert net(torch.randn(S, B, D), torch.randint(1, 50, (B,))).shape == (S, B, D * out_mult)
    assert net(torch.randn(S, B, D), torch.tensor(3)).shape == (S, B, D * out_mult)
    assert net(torch.randn(D), torch.tensor(3)).shape == (D * out_mult,)
    # With a bias-only output conv, output k's channel c is the constant bias[k * C + c]:
    # chunk k must then be that image in the input's (C, H, W) flat layout.
    values = torch.arange(2.0 * out_mult)
    with torch.no_grad():
        net.out_conv.bias.copy_(values)
    chunks = net(torch.randn(B, D), torch.tensor(3)).chunk(out_mult, -1)
    for k, chunk in enumerate(chunks):
        expected = values[2 * k : 2 * k + 2, None, None].expand(2, 8, 8).reshape(-1)
        torch.testing.assert_close(chunk, expected.expand(B, D), rtol=0, atol=0)


def test_unet_mnist_sizes() -> None:
    x, t = torch.randn(2, 784), torch.tensor([1, 1000])
    for channels in [(32, 64), (32, 64, 64)]:
        assert UNet((28, 28), channels=channels)(x, t).shape == (2, 784)


# ------------------------------------------------------------------- init and gradients


@pytest.mark.parametrize(
    ("make", "dim", "out_layer"),
    [
        (lambda: TimeMLP(4, hidden=(16, 16, 8), out_mult=2, time_dim=8), 4, "out"),
        (lambda: small_unet(out_mult=2), 64, "out_conv"),
    ],
    ids=["TimeMLP", "UNet"],
)
def test_zero_output_at_init_and_gradients_everywhere(make, dim: int, out_layer: str) -> None:
    net = make()
    x, t = torch.randn(6, dim), torch.randint(1, 100, (6,))
    out = net(x, t)
    assert torch.equal(out, torch.zeros_like(out))
    for layer in (out_layer, "pw_out"):  # the MLP's pointwise path has its own zero output
        if hasattr(net, layer):
            perturb_(getattr(net, layer))
    net(x, t).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- overfitting


def fit(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> float:
    """Ratio of the final to the initial MSE after 200 Adam steps."""
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    initial = (net(x, t) - target).square().mean().item()
    for _ in range(200):
        opt.zero_grad()
        loss = (net(x, t) - target).square().mean()
        loss.backward()
        opt.step()
    final = (net(x, t) - target).square().mean().item()
    return final / initial


def test_unet_overfits_fixed_images() -> None:
    torch.manual_seed(0)
    x, target = torch.randn(8, 64), torch.randn(8, 64)
    assert fit(small_unet(), x, torch.tensor(10), target) < OVERFIT_FRACTION


def test_time_mlp_learns_t_dependent_target() -> None:
    torch.manual_seed(0)
    T = 100
    x, t = torch.rand(256, 2) * 2 - 1, torch.randint(1, T + 1, (256,))
    target = x * t[:, None] / T  # needs t: the best t-blind fit, x * mean(t) / T, leaves ~28%
    net = TimeMLP(2, hidden=(64, 64, 64), time_dim=32)
    assert fit(net, x, t, target) < OVERFIT_FRACTION


# ------------------------------------------------------------------------ dtype, device


@pytest.mark.parametrize("kind", ["TimeMLP", "UNet"])
def test_float64_matches_float32(kind: str) -> None:
    torch.manual_seed(0)
    net32 = TimeMLP(4, hidden=(16, 16), time_dim=8) if kind == "TimeMLP" else small_unet()
    perturb_(net32.out if kind == "TimeMLP" else net32.out_conv)
    net64 = copy.deepcopy(net32).double()
    assert all(p.dtype == torch.float64 for p in net64.parameters())
    dim = 4 if kind == "TimeMLP" else 64
    x, t = torch.randn(5, dim, dtype=torch.float64), torch.randint(1, 1000, (5,))
    out64 = net64(x, t)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(
        net32(x.float(), t).double(), out64, rtol=F32_VS_F64_TOL, atol=F32_VS_F64_TOL
    )


def test_modules_move_with_to() -> None:
    # The meta device has no data: a forward pass there fails on any tensor the module creates
    # on a fixed device, so it checks that everything follows ``.to()`` without a GPU.
    for net, dim in [(TimeMLP(4, hidden=(8, 8), time_dim=8), 4), (small_unet(), 64)]:
        net = net.to("meta")
        out = net(torch.empty(3, dim, device="meta"), torch.ones(3, dtype=torch.long))
        assert out.device.type == "meta" and out.shape == (3, dim)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data_dim": 0}, "data_dim must be a positive integer"),
        ({"data_dim": 2, "hidden": (8, 0)}, "hidden must be a sequence of positive"),
        ({"data_dim": 2, "hidden": ()}, "hidden must contain at least one"),
        ({"data_dim": 2, "out_mult": 0}, "out_mult must be a positive integer"),
        ({"data_dim": 2, "time_dim": -1}, "time_dim must be a positive integer"),
        ({"data_dim": 2, "activation": "swish"}, "unknown activation 'swish'"),
    ],
)
def test_time_mlp_constructor_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TimeMLP(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_shape": (8, 6), "channels": (8, 8, 8)}, r"divisible by 4"),
        ({"image_shape": (1, 0, 8)}, r"image_shape must be \(H, W\) or \(C, H, W\)"),
        ({"image_shape": (8, 8), "out_mult": 0}, "out_mult must be a positive integer"),
        ({"image_shape": (8, 8), "channels": ()}, "channels must contain at least one"),
        ({"image_shape": (8, 8), "channels": (16, -8)}, "channels must be a sequence of posit"),
        ({"image_shape": (8, 8), "channels": (16, 12)}, "divisible by groups=8"),
        ({"image_shape": (8, 8), "groups": 0}, "groups must be a positive integer"),
        ({"image_shape": (8, 8), "time_dim": 0}, "time_dim must be a positive integer"),
        ({"image_shape": (8, 8), "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_unet_constructor_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_forward_and_embedding_errors() -> None:
    mlp, unet = TimeMLP(3, hidden=(8,), time_dim=4), small_unet()
    t = torch.ones(2, dtype=torch.long)
    with pytest.raises(
        ValueError, match=r"x must have shape \[\.\.\., 3\] \(data_dim\), got shape \(2, 4\)"
    ):
        mlp(torch.randn(2, 4), t)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 64\] .*got shape \(2, 63\)"):
        unet(torch.randn(2, 63), t)
    with pytest.raises(ValueError, match=r"t must be an integer tensor .* got dtype torch.float32"):
        mlp(torch.randn(2, 3), t.float())
    with pytest.raises(ValueError, match=r"t must be an integer torch\.Tensor .* got int"):
        unet(torch.randn(2, 64), 3)
    with pytest.raises(ValueError, match=r"t of shape \(3,\) must broadcast to the batch shape"):
        mlp(torch.randn(2, 3), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must be an integer tensor .* got dtype torch.bool"):
        timestep_embedding(torch.tensor([True]), 4)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        timestep_embedding(t, 0)
    with pytest.raises(ValueError, match="max_period must be a positive finite number"):
        timestep_embedding(t, 4, max_period=0.0)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        timestep_embedding(t, 4, dtype=torch.int64)


def test_pointwise_path_is_the_same_network_on_every_coordinate() -> None:
    """With the global output at zero, coordinate d's output depends on x_d alone and is the
    same function of it for every d: a hand-written per-coordinate evaluation agrees."""
    torch.manual_seed(0)
    net = TimeMLP(5, hidden=(8,), out_mult=2, time_dim=8, pointwise=4).double()
    perturb_(net.pw_out)
    x, t = torch.randn(3, 5, dtype=torch.float64), torch.tensor([2, 7, 9])
    out = net(x, t).reshape(3, 2, 5)
    e = net.time_act(net.time_mlp(timestep_embedding(t, 8, dtype=torch.float64)))
    for d in range(5):
        u = torch.nn.functional.silu(x[:, d : d + 1] * net.pw_in + net.pw_time(e))
        torch.testing.assert_close(out[:, :, d], net.pw_out(u), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="pointwise must be an integer >= 0"):
        TimeMLP(5, hidden=(8,), pointwise=-1)
