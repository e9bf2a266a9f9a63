"""Owner maps and their views: one owner per weight, views that show exactly tasks 1..t."""

import pytest
import torch

from adaqpacknet.models import build_model
from adaqpacknet.ownership import (
    assign,
    attach_owner_maps,
    capacity_used,
    free_masks,
    owner_maps,
    prunable_layers,
    raw_weight,
    show_task,
    show_training,
    weight_mask,
)


def small_model():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 4, 4), [3, 3])
    attach_owner_maps(model)
    return model


def test_state_lives_in_buffers_and_round_trips_through_state_dict():
    model = small_model()
    layer = prunable_layers(model)["fc1"]
    owner = owner_maps(model)["fc1"]
    owner[0, :5] = 1
    clone = small_model()
    clone.load_state_dict(model.state_dict())
    assert torch.equal(owner_maps(clone)["fc1"], owner)
    assert weight_mask(layer).owner.dtype == torch.uint8


def test_assign_refuses_a_weight_that_already_has_an_owner():
    model = small_model()
    keep = {n: torch.zeros_like(o, dtype=torch.bool) for n, o in owner_maps(model).items()}
    keep["fc1"][0, 0] = True
    assign(model, keep, 1)
    with pytest.raises(ValueError, match="already owned"):
        assign(model, keep, 2)
    with pytest.raises(ValueError, match="task id 0"):
        assign(model, keep, 0)


def test_views_show_exactly_the_owned_weights():
    model = small_model()
    owners = owner_maps(model)
    owners["fc1"][0] = 1
    owners["fc1"][1] = 2
    show_task(model, 1)
    layer = prunable_layers(model)["fc1"]
    effective = layer.weight.detach()
    assert torch.equal(effective[0], raw_weight(layer).detach()[0])
    assert not effective[1:].any()
    show_task(model, 2)
    assert torch.equal(layer.weight.detach()[:2], raw_weight(layer).detach()[:2])
    free = free_masks(model)
    show_training(model, 3, free)
    assert layer.weight.detach()[2:].abs().sum() > 0  # free weights train in task 3
    with pytest.raises(ValueError, match="trainable weights must be free"):
        show_training(model, 3, {n: torch.ones_like(m) for n, m in free.items()})


def test_capacity():
    model = small_model()
    owner_maps(model)["fc2"][:] = 1
    capacity = capacity_used(model)
    assert capacity["fc2"] == 1.0 and capacity["fc1"] == 0.0
    assert capacity["total"] == pytest.approx(100 * 100 / (16 * 100 + 100 * 100))
