"""Config validation: every bad value fails by name, before any data is loaded."""

import dataclasses
import math

import pytest

from adaqpacknet.config import Config, field_names, field_types, parse_override


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"no_such_key": 1}, "unknown config key"),
        ({"r_min": -0.1}, "r_min=-0.1 is outside the valid range [0, 1)"),
        ({"r_max": 1.0}, "r_max=1.0 is outside the valid range [0, 1)"),
        ({"r_min": 0.7, "r_max": 0.4}, "r_min=0.7 must not exceed r_max=0.4"),
        ({"max_bits": 9}, "max_bits=9 is outside the valid range 1..8"),
        ({"max_bits": 0}, "max_bits=0 is outside the valid range 1..8"),
        ({"min_bits": 0}, "min_bits=0 is outside the valid range 1..8"),
        ({"tolerance": -1.0}, "tolerance=-1.0 must be a finite number >= 0"),
        ({"epochs": 0}, "epochs=0 must be >= 1"),
        ({"scenario": "imagenet"}, "unknown scenario 'imagenet'; valid choices: permuted_mnist"),
        ({"model": "vgg"}, "unknown model 'vgg'; valid choices: auto, mlp"),
        ({"quantizer": "lloyd"}, "unknown quantizer 'lloyd'; valid choices: kmeans, linear"),
        ({"lr": "1e-3"}, "lr='1e-3' has type str; expected float"),
        ({"download": "yes"}, "download='yes' has type str; expected bool"),
        ({"epochs": True}, "epochs=True has type bool; expected int"),
        ({"population": 0}, "population=0 must be >= 1"),
        ({"val_fraction": 1.5}, "val_fraction=1.5 is outside the valid range (0, 1)"),
        ({"capacity_rule": "greedy"}, "unknown capacity_rule 'greedy'; valid choices: reference, budget"),
        ({"capacity_budget": 0.0}, "capacity_budget=0.0 is outside the valid range (0, 1]"),
        ({"capacity_budget": 1.5}, "capacity_budget=1.5 is outside the valid range (0, 1]"),
        ({"budget_share_min": 0.0}, "budget_share_min=0.0 must be a finite number > 0"),
        ({"budget_share_min": 2.0, "budget_share_max": 1.0}, "budget_share_min=2.0 must not exceed budget_share_max=1.0"),
        ({"capacity_rule": "budget", "method": "wsn"}, "capacity_rule='budget' sets Ada-QPacknet's search; method='wsn'"),
        ({"reuse_frozen": False, "method": "independent"}, "reuse_frozen=False is an ablation of the owner-map methods"),
    ],
)
def test_bad_values_raise_value_error_naming_them(changes, message):
    with pytest.raises(ValueError) as error:
        Config.from_dict(changes)
    assert message in str(error.value)


def test_errors_come_before_any_data_is_loaded(monkeypatch):
    import adaqpacknet.continual as continual
    from adaqpacknet.cli import main

    def fail(*args, **kwargs):
        raise AssertionError("data was touched")

    monkeypatch.setattr(continual, "build_scenario", fail)
    monkeypatch.setattr(continual, "check_data_available", fail)
    with pytest.raises(SystemExit):
        main(["run", "epochs=0"])


def test_round_trip_and_replace():
    config = Config(scenario="split_digits", epochs=2)
    assert Config.from_dict(config.to_dict()) == config
    assert config.replace(seed=3).seed == 3
    with pytest.raises(ValueError, match="r_min"):
        config.replace(r_min=2.0)


def test_frozen():
    with pytest.raises(Exception):
        Config().epochs = 3  # type: ignore[misc]


def test_cli_overrides_are_typed_by_field():
    assert parse_override("lr=1e-3") == ("lr", 1e-3)
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override("download=true") == ("download", True)
    assert parse_override("num_tasks=none") == ("num_tasks", None)
    assert parse_override("scenario=split_digits") == ("scenario", "split_digits")
    with pytest.raises(ValueError, match="epochs='three' is not a valid int"):
        parse_override("epochs=three")
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        parse_override("epoch=3")


@pytest.mark.parametrize(
    "changes, label",
    [
        ({}, "ada_qpacknet"),
        ({"quantizer": "none"}, "ada_qpacknet_float"),
        ({"capacity_rule": "budget"}, "ada_qpacknet_budget"),
        ({"capacity_rule": "budget", "reuse_frozen": False, "quantizer": "none"}, "ada_qpacknet_budget_no_reuse_float"),
        ({"capacity_rule": "budget", "population": 1}, "ada_qpacknet_budget_p1"),
        ({"method": "packnet", "quantizer": "none", "population": 1, "reuse_frozen": False}, "packnet_no_reuse"),
    ],
)
def test_labels_name_every_variant_of_the_owner_map_methods(changes, label):
    assert Config.from_dict(changes).label == label


RULED = [f for f in dataclasses.fields(Config) if f.metadata.get("rule")]


def _breaking(rule: dict):
    """A value that the rule refuses."""
    if rule["choices"] is not None:
        return "no_such_choice"
    if rule["at_least"] is not None:
        return rule["at_least"] - 1
    if rule["within"] is not None:
        return rule["within"][1]  # the open upper end
    return -1.0 if rule["finite"] == ">=" else 0.0


@pytest.mark.parametrize("declared", RULED, ids=lambda f: f.name)
def test_every_declared_rule_refuses_a_bad_value_by_name(declared):
    # The rules are declared on the fields (config._field): each one must fire, naming its field.
    bad = _breaking(declared.metadata["rule"])
    with pytest.raises(ValueError, match=rf"^(unknown {declared.name} 'no_such_choice'|{declared.name}=)"):
        Config(**{declared.name: bad})


def test_key_value_parsing_reads_the_declared_types():
    for name in field_names():
        assert field_types(name)[0] in (int, float, bool, str, list), name
    assert parse_override("val_fraction=0.2") == ("val_fraction", 0.2)
    assert parse_override("num_tasks=none") == ("num_tasks", None)
    assert parse_override("reuse_frozen=no") == ("reuse_frozen", False)
    with pytest.raises(ValueError, match=r"epochs='two' is not a valid int"):
        parse_override("epochs=two")
    assert len(RULED) >= 40  # most fields carry a rule; the rest are free (data_root) or checked together


NUMERIC = [name for name in field_names() if set(field_types(name)) & {int, float} and bool not in field_types(name) and name != "num_tasks"]


def test_every_numeric_field_is_bounded_above():
    # Issue 26: every number a config holds has a stated range (num_tasks: the scenario's, checked
    # with it); far above it, the error names the field and the bound.
    assert len(NUMERIC) >= 30
    for name in NUMERIC:
        rule = next(f for f in dataclasses.fields(Config) if f.name == name).metadata["rule"]
        high = rule["within"][1] if rule["within"] is not None else rule["at_most"]
        assert high is not None and math.isfinite(high), name
        huge = 10**30 if float not in field_types(name) else 1e30
        with pytest.raises(ValueError, match=rf"^{name}=\S+ (must be|is outside)"):
            Config(**{name: huge})
