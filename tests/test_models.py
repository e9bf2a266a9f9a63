"""Tests of adaqpacknet.models: shapes, bias-free bodies, parameter-free BN, counts, errors."""

import pytest
import torch
from torch import nn

from adaqpacknet.models import MODELS, MultiHeadNet, body_parameter_count, build_model

# (name, protocol input shape, feature dim, body weights in Conv2d/Linear layers)
CASES = [
    ("mlp", (1, 28, 28), 100, 784 * 100 + 100 * 100),
    # conv 3*64*4*4 + 64*128*3*3 + 128*256*2*2, fc 256*2*2*2048 + 2048*2048
    ("alexnet", (3, 32, 32), 2048, 3072 + 73728 + 131072 + 1024 * 2048 + 2048 * 2048),
    # stem 540, layer1 14400, layer2 51200, layer3 204800, layer4 819200 (shortcuts included)
    ("resnet18_reduced", (3, 32, 32), 640, 1_090_140),
    # convs 3*160*9 + 3*160*160*9, fc 160*4*4*640 + 640*640
    ("tinyimagenet_conv", (3, 64, 64), 640, 4320 + 3 * 230400 + 2560 * 640 + 640 * 640),
    # conv 1*32*9 + 32*64*9, fc 64*7*7*128
    ("small_conv", (1, 28, 28), 128, 288 + 18432 + 64 * 7 * 7 * 128),
    ("small_conv", (1, 8, 8), 128, 288 + 18432 + 64 * 2 * 2 * 128),
]
IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, shape, _, _ in CASES]
CLASSES = [10, 5, 2]


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return {(name, shape): build_model(name, shape, CLASSES) for name, shape, _, _ in CASES}


def test_models_tuple():
    assert MODELS == ("mlp", "alexnet", "resnet18_reduced", "tinyimagenet_conv", "small_conv")
    assert {name for name, *_ in CASES} == set(MODELS)


@pytest.mark.parametrize("name,shape,feature_dim,n_weights", CASES, ids=IDS)
def test_logits_shape_per_head(built, name, shape, feature_dim, n_weights):
    model = built[(name, shape)]
    assert isinstance(model, MultiHeadNet)
    assert model.feature_dim == feature_dim
    x = torch.randn(4, *shape)
    assert model.body(x).shape == (4, feature_dim)
    for task, n in enumerate(CLASSES):
        assert model(x, task).shape == (4, n)
    with pytest.raises(IndexError):
        model(x, len(CLASSES))


@pytest.mark.parametrize("name,shape,feature_dim,n_weights", CASES, ids=IDS)
def test_body_bias_free_and_counts(built, name, shape, feature_dim, n_weights):
    model = built[(name, shape)]
    layers = [m for _, m in model.body.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers
    assert all(m.bias is None for m in layers)
    assert body_parameter_count(model) == n_weights
    # the prunable weights are the body's only parameters (BN has none)
    assert sum(p.numel() for p in model.body.parameters()) == n_weights


@pytest.mark.parametrize("name,shape,feature_dim,n_weights", CASES, ids=IDS)
def test_batchnorm_has_no_params_or_stats(built, name, shape, feature_dim, n_weights):
    model = built[(name, shape)]
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not m.affine and m.weight is None and m.bias is None
            assert not m.track_running_stats and m.running_mean is None and m.running_var is None
    assert len(list(model.buffers())) == 0


@pytest.mark.parametrize("name,shape,feature_dim,n_weights", CASES, ids=IDS)
def test_heads_have_bias(built, name, shape, feature_dim, n_weights):
    model = built[(name, shape)]
    assert len(model.heads) == len(CLASSES)
    for head, n in zip(model.heads, CLASSES):
        assert isinstance(head, nn.Linear)
        assert head.bias is not None and head.bias.shape == (n,)
        assert head.weight.shape == (n, feature_dim)


@pytest.mark.parametrize("name,shape,feature_dim,n_weights", CASES, ids=IDS)
def test_eval_forward_deterministic(built, name, shape, feature_dim, n_weights):
    model = built[(name, shape)].eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(model(x, 0), model(x, 0))
    model.train()


def test_mlp_exact_parameters():
    model = build_model("mlp", (1, 28, 28), [10] * 10)
    fcs = [m for m in model.body.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in fcs] == [(100, 784), (100, 100)]
    assert sum(p.numel() for p in model.body.parameters()) == 784 * 100 + 100 * 100
    assert sum(p.numel() for p in model.heads.parameters()) == 10 * (100 * 10 + 10)
    wide = build_model("mlp", (1, 28, 28), [10], hidden=(256, 64))
    assert wide.feature_dim == 64 and body_parameter_count(wide) == 784 * 256 + 256 * 64


def test_alexnet_dropout_active_in_train_only():
    torch.manual_seed(0)
    model = build_model("alexnet", (3, 32, 32), [10])
    drops = [m.p for m in model.body.modules() if isinstance(m, nn.Dropout)]
    assert sorted(drops) == [0.2, 0.2, 0.5, 0.5]
    x = torch.randn(8, 3, 32, 32)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x, 0), model(x, 0))


def test_reset_parameters_available():
    model = build_model("resnet18_reduced", (3, 32, 32), [10])
    layers = [m for m in model.body.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 20  # stem + 16 block convs + 3 shortcuts
    for m in layers:
        before = m.weight.detach().clone()
        m.reset_parameters()
        assert m.bias is None and not torch.equal(before, m.weight)


def test_other_input_sizes():
    # flattened sizes come from a dry forward, so other reasonable sizes work
    for name, shape in [
        ("alexnet", (1, 28, 28)),
        ("resnet18_reduced", (3, 64, 64)),
        ("tinyimagenet_conv", (3, 32, 32)),
        ("small_conv", (3, 32, 32)),
        ("mlp", (1, 8, 8)),
    ]:
        model = build_model(name, shape, [3])
        assert model(torch.randn(2, *shape), 0).shape == (2, 3)
    assert build_model("resnet18_reduced", (3, 64, 64), [3]).feature_dim == 160 * 4 * 4
    assert build_model("tinyimagenet_conv", (3, 64, 64), [3], batch_norm=True).feature_dim == 640


def test_unknown_name():
    with pytest.raises(ValueError) as err:
        build_model("vgg", (3, 32, 32), [10])
    assert "vgg" in str(err.value)
    for name in MODELS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "name,shape,needs",
    [
        ("alexnet", (3, 16, 16), "19x19"),
        ("resnet18_reduced", (3, 8, 8), "9x9"),
        ("small_conv", (1, 3, 3), "4x4"),
        ("small_conv", (1, 28, 3), "4x4"),
        ("mlp", (784,), "(C, H, W)"),
        ("tinyimagenet_conv", (3, 0, 64), "(C, H, W)"),
    ],
)
def test_bad_input_shape(name, shape, needs):
    with pytest.raises(ValueError, match=needs.replace("(", r"\(").replace(")", r"\)")):
        build_model(name, shape, [10])


def test_bad_classes_per_task():
    for bad in ([], [10, 0]):
        with pytest.raises(ValueError):
            build_model("mlp", (1, 28, 28), bad)
