"""Networks of the benchmark protocol (method.md §3): a shared body and one linear head per task.

Every ``Conv2d`` / ``Linear`` of a body is bias-free: these are exactly the layers the package
prunes and quantises (found with ``isinstance(m, (nn.Conv2d, nn.Linear))`` over
``body.named_modules()``). Normalisation, where a network has it, is WSN-style
``BatchNorm{1,2}d(affine=False, track_running_stats=False)``: no parameters to own, and batch
statistics in train *and* eval mode, so nothing shared drifts between tasks. A consequence: such
networks need batches of at least 2 samples (BatchNorm1d rejects a batch of one), also at eval.

The bodies follow WSN (Kang et al., ICML 2022, github.com/ihaeyong/WSN, ``networks/``), which in
turn takes AlexNet and the reduced ResNet-18 from GPM (Saha et al., ICLR 2021). Per-task heads
keep their bias here (WSN's heads are bias-free; method.md §2.6 keeps them). All layers keep
PyTorch's default initialisation; the learner re-initialises free weights with
``reset_parameters()``. Flattened sizes come from a dry forward at build time, so every network
takes any input size at or above its stated minimum.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError, shorten

MODELS: tuple[str, ...] = ("mlp", "alexnet", "resnet18_reduced", "tinyimagenet_conv", "small_conv")
# Names under which a task's head weight and bias are quantised and stored, next to body layers.
HEAD = "head"
HEAD_BIAS = "head.bias"


def _bn2d(channels: int) -> nn.BatchNorm2d:
    # WSN style: no affine parameters, batch statistics also at eval (nothing shared to protect)
    return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)


def _bn1d(features: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(features, affine=False, track_running_stats=False)


def _check_input(input_shape: Sequence[int], model: str, min_size: int = 1) -> tuple[int, int, int]:
    """Validate a (C, H, W) input shape; raise ValueError saying what the model needs."""
    try:
        shape = tuple(operator.index(s) for s in input_shape)  # accepts numpy ints too
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(
            f"{model} needs input_shape (C, H, W) of three positive ints, got {input_shape!r}"
        )
    c, h, w = shape
    if h < min_size or w < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w}"
        )
    return c, h, w


@torch.no_grad()
def _flat_size(f: Callable[[Tensor], Tensor], input_shape: tuple[int, int, int]) -> int:
    """Number of features f produces per sample, from a dry forward on zeros.

    Batch of 2 because batch-statistics BatchNorm1d rejects a batch of one.
    """
    return f(torch.zeros(2, *input_shape)).flatten(1).shape[1]


# -----------------------------------------------------------------------------
# bodies


class MLP(nn.Module):
    """Fully connected body: flatten -> [Linear -> ReLU] per hidden size.

    Permuted-MNIST network of GPM/WSN (``networks/mlp.py``: 784-100-100, bias-free, no BN).
    """

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (100, 100)) -> None:
        super().__init__()
        c, h, w = _check_input(input_shape, "mlp")
        if len(hidden) == 0 or not all(isinstance(n, int) and n > 0 for n in hidden):
            raise ValueError(f"mlp needs at least one positive hidden size, got {hidden!r}")
        sizes = [c * h * w, *hidden]
        # named fc1, fc2, ... (as in WSN) so owner maps and reports read naturally
        self.depth = len(hidden)
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
            setattr(self, f"fc{i}", nn.Linear(a, b, bias=False))
        self.feature_dim = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for i in range(1, self.depth + 1):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return x


class AlexNet(nn.Module):
    """AlexNet-like body for split CIFAR-100 (32x32x3).

    WSN's ``SubnetAlexNet_norm`` (``networks/alexnet.py``, used by ``main_wsn_cifar100_100.py``),
    itself GPM's AlexNet with BatchNorm: conv 64 (4x4), 128 (3x3), 256 (2x2), no padding, each
    conv -> BN -> ReLU -> dropout -> max-pool 2; then FC 2048, 2048, each FC -> BN1d -> ReLU ->
    dropout. Dropout 0.2, 0.2, 0.5 after the convs and 0.5 after the FCs, as in WSN.
    Needs inputs of at least 19x19 (for 32x32 the flattened conv output is 256*2*2 = 1024).
    """

    min_size = 19

    def __init__(
        self,
        input_shape: Sequence[int],
        conv_dropout: Sequence[float] = (0.2, 0.2, 0.5),
        fc_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        c, h, w = _check_input(input_shape, "alexnet", self.min_size)
        self.conv1 = nn.Conv2d(c, 64, 4, bias=False)
        self.bn1 = _bn2d(64)
        self.conv2 = nn.Conv2d(64, 128, 3, bias=False)
        self.bn2 = _bn2d(128)
        self.conv3 = nn.Conv2d(128, 256, 2, bias=False)
        self.bn3 = _bn2d(256)
        self.drop_convs = nn.ModuleList(nn.Dropout(p) for p in conv_dropout)
        self.flat_dim = _flat_size(self._features, (c, h, w))
        self.fc1 = nn.Linear(self.flat_dim, 2048, bias=False)
        self.bn4 = _bn1d(2048)
        self.fc2 = nn.Linear(2048, 2048, bias=False)
        self.bn5 = _bn1d(2048)
        self.drop_fc = nn.Dropout(fc_dropout)
        self.feature_dim = 2048

    def _features(self, x: Tensor) -> Tensor:
        convs = ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3))
        for (conv, bn), drop in zip(convs, self.drop_convs):
            x = F.max_pool2d(drop(F.relu(bn(conv(x)))), 2)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self._features(x)
        x = self.drop_fc(F.relu(self.bn4(self.fc1(x))))
        x = self.drop_fc(F.relu(self.bn5(self.fc2(x))))
        return x


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs; 1x1 conv + BN shortcut when the shape changes.

    GPM/WSN ``networks/resnet18.py`` (``GPMBasicBlock`` / ``SubnetBasicBlock``).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _bn2d(planes)
        self.shortcut = nn.Sequential()  # identity
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), _bn2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Reduced(nn.Module):
    """Reduced ResNet-18 of GEM/GPM for 5-datasets (32x32x3), as WSN runs it.

    WSN ``networks/resnet18.py`` (``SubnetResNet18(taskcla, nf=20)`` in
    ``main_wsn_five_dataset_resnet18.py``): 3x3 stem conv (stride 1, padding 1) + BN + ReLU,
    BasicBlocks [2, 2, 2, 2] with nf, 2nf, 4nf, 8nf filters and strides 1, 2, 2, 2, then
    ``avg_pool2d(out, 2)`` and flatten. Feature dim 8nf * (H/16) * (W/16): 160*2*2 = 640 for
    32x32. Needs inputs of at least 9x9 (layer4 output >= 2x2 for the pooling).
    """

    min_size = 9

    def __init__(self, input_shape: Sequence[int], nf: int = 20) -> None:
        super().__init__()
        c, h, w = _check_input(input_shape, "resnet18_reduced", self.min_size)
        self.conv1 = nn.Conv2d(c, nf, 3, stride=1, padding=1, bias=False)
        self.bn1 = _bn2d(nf)
        self.in_planes = nf
        self.layer1 = self._make_layer(nf * 1, 2, stride=1)
        self.layer2 = self._make_layer(nf * 2, 2, stride=2)
        self.layer3 = self._make_layer(nf * 4, 2, stride=2)
        self.layer4 = self._make_layer(nf * 8, 2, stride=2)
        self.feature_dim = _flat_size(self, (c, h, w))

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in [stride] + [1] * (num_blocks - 1):
            blocks.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 2)
        return out.flatten(1)


class TinyImageNetConv(nn.Module):
    """4-conv network of WSN for TinyImageNet (64x64x3).

    WSN ``networks/tinynet.py`` (``SubNet``) with ``networks/tiny/modelfactory.py``: 4 convs of
    160 channels (3x3, stride 2, padding 1) each followed by ReLU, flatten (160*4*4 = 2560 for
    64x64), FC 640 -> ReLU, FC 640 -> ReLU. Feature dim 640.

    Deviation from the brief's "each BN + ReLU", following WSN: WSN's default is
    ``bn_flag = False`` (no BatchNorm at all; even with the flag set, its forward skips bn1 and
    bn2) and both dropouts have p = 0.0. So by default there is no BN and no dropout here;
    ``batch_norm=True`` puts WSN-style BN after every conv and FC, ``dropout`` sets the p WSN
    applies after the last conv and after the first FC.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: int = 160,
        hidden: int = 640,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, h, w = _check_input(input_shape, "tinyimagenet_conv")
        norm2d = _bn2d if batch_norm else (lambda n: nn.Identity())
        norm1d = _bn1d if batch_norm else (lambda n: nn.Identity())
        self.conv1 = nn.Conv2d(c, channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False)
        self.bn2 = norm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False)
        self.bn3 = norm2d(channels)
        self.conv4 = nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False)
        self.bn4 = norm2d(channels)
        self.drop = nn.Dropout(dropout)
        self.flat_dim = _flat_size(self._features, (c, h, w))
        self.fc1 = nn.Linear(self.flat_dim, hidden, bias=False)
        self.bn5 = norm1d(hidden)
        self.fc2 = nn.Linear(hidden, hidden, bias=False)
        self.bn6 = norm1d(hidden)
        self.feature_dim = hidden

    def _features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))
        return self.drop(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(F.relu(self.bn5(self.fc1(self._features(x)))))
        return F.relu(self.bn6(self.fc2(x)))


class SmallConv(nn.Module):
    """Small conv net for split Fashion-MNIST (28x28x1) and the 8x8 digits (not from WSN).

    conv 32 (3x3, pad 1) -> BN -> ReLU -> max-pool 2, conv 64 (3x3, pad 1) -> BN -> ReLU ->
    max-pool 2, flatten, FC 128 -> ReLU. Feature dim 128. Needs inputs of at least 4x4.
    """

    min_size = 4

    def __init__(self, input_shape: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        c, h, w = _check_input(input_shape, "small_conv", self.min_size)
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1, bias=False)
        self.bn1 = _bn2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = _bn2d(64)
        self.flat_dim = _flat_size(self._features, (c, h, w))
        self.fc1 = nn.Linear(self.flat_dim, hidden, bias=False)
        self.feature_dim = hidden

    def _features(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc1(self._features(x)))


BODIES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "alexnet": AlexNet,
    "resnet18_reduced": ResNet18Reduced,
    "tinyimagenet_conv": TinyImageNetConv,
    "small_conv": SmallConv,
}
assert tuple(BODIES) == MODELS

# -----------------------------------------------------------------------------
# the multi-head network


class MultiHeadNet(nn.Module):
    """A shared body and one linear head per task (task-incremental).

    ``body`` maps (N, C, H, W) to (N, feature_dim); ``heads[t]`` is
    ``nn.Linear(feature_dim, classes_per_task[t], bias=True)``; ``forward(x, task)`` returns the
    logits of head ``task`` (0-based).
    """

    def __init__(self, body: nn.Module, feature_dim: int, classes_per_task: Sequence[int]) -> None:
        super().__init__()
        if len(classes_per_task) == 0 or not all(
            isinstance(n, int) and n > 0 for n in classes_per_task
        ):
            raise ValueError(
                f"classes_per_task needs one positive int per task, got {classes_per_task!r}"
            )
        self.body = body
        self.feature_dim = feature_dim
        self.heads = nn.ModuleList(nn.Linear(feature_dim, n, bias=True) for n in classes_per_task)

    def forward(self, x: Tensor, task: int) -> Tensor:
        """Logits (N, classes_per_task[task]) of head ``task`` for a batch x of shape (N, C, H, W)."""
        if not 0 <= task < len(self.heads):
            raise IndexError(f"task {task} out of range: this network has {len(self.heads)} heads")
        return self.heads[task](self.body(x))


def build_model(
    name: str, input_shape: tuple[int, int, int], classes_per_task: Sequence[int], **kwargs
) -> MultiHeadNet:
    """Build network ``name`` (one of MODELS) for inputs of shape (C, H, W), one head per task.

    ``classes_per_task[t]`` is the number of classes of task t. Extra keyword arguments go to the
    body's class (e.g. ``hidden=(256, 256)`` for "mlp", ``nf=32`` for "resnet18_reduced",
    ``batch_norm=True`` for "tinyimagenet_conv"). Raises ValueError for an unknown name or an
    input shape the network can't take.
    """
    if name not in BODIES:
        raise ConfigError(f"unknown model {shorten(name)}; valid choices: {', '.join(MODELS)}")
    body = BODIES[name](input_shape, **kwargs)
    return MultiHeadNet(body, body.feature_dim, classes_per_task)


def body_parameter_count(model: MultiHeadNet) -> int:
    """Number of weights in the body's prunable layers (every Conv2d / Linear)."""
    return sum(
        math.prod(m.weight.shape)
        for m in model.body.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    )


@functools.lru_cache(maxsize=None)
def has_batch_norm(name: str, input_shape: tuple[int, int, int]) -> bool:
    """Whether network ``name`` normalises by batch statistics, so that its evaluation accuracy
    depends on the evaluation batch (its size and which classes it mixes)."""
    with torch.device("meta"):  # shapes only: nothing is allocated
        net = build_model(name, input_shape, [2])
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
