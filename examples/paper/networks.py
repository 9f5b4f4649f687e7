"""The paper's three kinds of networks, scaled to inputs that ship offline.

Inputs arrive flat — (N, 64) for 8×8 digits, (N, 40) for MNIST-1D — and ``shape`` says how
a convolutional network should see them: (1, 8, 8) gives 2-D convolutions, (1, 40) 1-D.
Layers are named so that results read as the paper's: ``fc1``…, ``conv1``…, ``stem.conv``,
``block2.conv1``, ``fc``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn


def _conv(shape: tuple[int, ...]) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """Convolution, BatchNorm and max-pool classes for 1-D or 2-D inputs."""
    if len(shape) == 3:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d
    return nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d


def fc(inputs: int, classes: int = 10) -> nn.Module:
    """MNIST-FC's shape: inputs-100-50-classes, ReLU."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(inputs, 100),
            relu1=nn.ReLU(),
            fc2=nn.Linear(100, 50),
            relu2=nn.ReLU(),
            fc3=nn.Linear(50, classes),
        )
    )


def lenet(shape: tuple[int, ...], classes: int = 10) -> nn.Module:
    """LeNet's shape (conv·20, pool, conv·40, pool, FC, FC) with 3-wide kernels for the small
    inputs (the paper: 5×5 on 28×28)."""
    conv, _, pool = _conv(shape)
    spatial = 1
    for size in shape[1:]:
        spatial *= size // 4
    return nn.Sequential(
        OrderedDict(
            view=nn.Unflatten(1, shape),
            conv1=conv(shape[0], 20, 3, padding=1),
            relu1=nn.ReLU(),
            pool1=pool(2),
            conv2=conv(20, 40, 3, padding=1),
            relu2=nn.ReLU(),
            pool2=pool(2),
            flat=nn.Flatten(),
            fc1=nn.Linear(40 * spatial, 100),
            relu3=nn.ReLU(),
            fc2=nn.Linear(100, classes),
        )
    )


class Block(nn.Module):
    """A ResNet basic block: conv-BN-ReLU-conv-BN plus the shortcut, then ReLU."""

    def __init__(self, shape: tuple[int, ...], inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        conv, norm, _ = _conv(shape)
        self.conv1 = conv(inputs, outputs, 3, stride, padding=1, bias=False)
        self.bn1 = norm(outputs)
        self.conv2 = conv(outputs, outputs, 3, 1, padding=1, bias=False)
        self.bn2 = norm(outputs)
        self.shortcut = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                OrderedDict(conv=conv(inputs, outputs, 1, stride, bias=False), bn=norm(outputs))
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
        return (out + self.shortcut(x)).relu()


def resnet(shape: tuple[int, ...], classes: int = 10, width: int = 8) -> nn.Module:
    """A ResNet-20-like network with BatchNorm, one block per stage (widths w, 2w, 4w)."""
    conv, norm, _ = _conv(shape)
    pool = nn.AdaptiveAvgPool2d(1) if len(shape) == 3 else nn.AdaptiveAvgPool1d(1)
    return nn.Sequential(
        OrderedDict(
            view=nn.Unflatten(1, shape),
            stem=nn.Sequential(
                OrderedDict(
                    conv=conv(shape[0], width, 3, padding=1, bias=False),
                    bn=norm(width),
                    relu=nn.ReLU(),
                )
            ),
            block1=Block(shape, width, width, 1),
            block2=Block(shape, width, 2 * width, 2),
            block3=Block(shape, 2 * width, 4 * width, 2),
            pool=pool,
            flat=nn.Flatten(),
            fc=nn.Linear(4 * width, classes),
        )
    )


def _inputs(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


#: network name → builder taking the input shape
NETWORKS = {
    "fc": lambda shape: fc(_inputs(shape)),
    "lenet": lenet,
    "resnet": resnet,
}
