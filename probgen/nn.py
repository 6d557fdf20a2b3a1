"""Neural-network building blocks shared by the families (VAE encoders/decoders, flows, ...).

Every block maps ``[..., in]`` to ``[..., out]`` on flattened data, so a family never reshapes
for its networks and any leading batch dimensions (Monte Carlo particles, minibatches) pass
through. The convolutional blocks reshape rows to ``image_shape`` internally.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "ConvDecoder", "ConvEncoder", "count_parameters", "mlp"]

#: Activation name -> module class (names as in torch.nn.functional).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _check_dims(hidden: Sequence[int], *named: tuple[str, int]) -> None:
    for name, value in named:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(hidden, (str, bytes)) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise ValueError(f"hidden must be a sequence of positive integers, got {hidden!r}")


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"
) -> nn.Sequential:
    """A multilayer perceptron ``in -> hidden[0] -> ... -> out``, activations between layers.

    The output layer is linear: families apply their own output link (logits, softplus scales).

    Args:
        in_dim, out_dim: input and output widths.
        hidden: widths of the hidden layers (may be empty: one linear map).
        activation: a name in :data:`ACTIVATIONS`.
    """
    _check_dims(hidden, ("in_dim", in_dim), ("out_dim", out_dim))
    widths = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(
            f"image_shape must be (H, W) or (C, H, W) positive ints, got {image_shape}"
        )
    c, h, w = shape
    if h % 4 or w % 4:
        raise ValueError(
            f"image_shape {image_shape}: the conv blocks halve H and W twice, so both must be "
            "divisible by 4 (e.g. 28x28 MNIST)"
        )
    return c, h, w


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions and a linear head: ``[..., C*H*W] -> [..., out_dim]``.

    The DCGAN-style encoder used for MNIST-sized images (Radford et al. 2016, arXiv:1511.06434):
    ``C -> 32 -> 64`` channels with 4x4 kernels, each halving the resolution.

    Args:
        image_shape: ``(H, W)`` or ``(C, H, W)``; ``H`` and ``W`` divisible by 4.
        out_dim: output width.
        channels: channels of the two convolutions.
        activation: a name in :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        out_dim: int,
        channels: tuple[int, int] = (32, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_dims(
            (), ("out_dim", out_dim), *((f"channels[{i}]", c) for i, c in enumerate(channels))
        )
        self.image_shape = _image_shape(image_shape)
        c, h, w = self.image_shape
        self.convs = nn.Sequential(
            nn.Conv2d(c, channels[0], 4, stride=2, padding=1),
            _activation(activation),
            nn.Conv2d(channels[0], channels[1], 4, stride=2, padding=1),
            _activation(activation),
            nn.Flatten(),
        )
        self.head = nn.Linear(channels[1] * (h // 4) * (w // 4), out_dim)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[:-1]
        images = x.reshape(-1, *self.image_shape)
        return self.head(self.convs(images)).reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """A linear map to a ``64 x H/4 x W/4`` feature map and two stride-2 transposed convolutions.

    ``[..., in_dim] -> [..., C*H*W]`` (pre-activation outputs: logits or means). Mirrors
    :class:`ConvEncoder`.
    """

    def __init__(
        self,
        in_dim: int,
        image_shape: Sequence[int],
        out_channels: int | None = None,
        channels: tuple[int, int] = (64, 32),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_dims(
            (), ("in_dim", in_dim), *((f"channels[{i}]", c) for i, c in enumerate(channels))
        )
        self.image_shape = _image_shape(image_shape)
        c, h, w = self.image_shape
        self.out_channels = c if out_channels is None else out_channels
        self._grid = (channels[0], h // 4, w // 4)
        self.head = nn.Sequential(nn.Linear(in_dim, math.prod(self._grid)), _activation(activation))
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(channels[0], channels[1], 4, stride=2, padding=1),
            _activation(activation),
            nn.ConvTranspose2d(channels[1], self.out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        features = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self._grid)
        out: Tensor = self.deconvs(features)
        return out.reshape(*batch, -1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
