"""The method registry: one spec per method, every variant a valid config under its own label, and
no method named in a comparison anywhere else in the library."""

import ast
from pathlib import Path

import pytest

from adaqpacknet import classic, methods
from adaqpacknet.config import Config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", methods.METHODS)
def test_every_method_has_a_learner_that_accepts_it_and_only_it(name):
    learner = methods.learner_class(name)
    assert methods.spec(name).name == name
    others = [m for m in methods.METHODS if methods.learner_class(m) is not learner]
    bare = object.__new__(learner)  # check_learner reads the class only
    methods.check_learner(bare, Config(method=name, **({"population": 1, "quantizer": "none"} if name == "packnet" else {})))
    for other in others[:3]:
        with pytest.raises(ValueError, match=f"{learner.__name__} runs method .*not '{other}'"):
            methods.check_learner(bare, Config.from_dict({"method": other, **dict(methods.VARIANTS.get(other, {}))}))


@pytest.mark.parametrize("name", list(methods.VARIANTS))
def test_every_variant_is_a_valid_config_labelled_by_its_name(name):
    assert Config.from_dict(dict(methods.VARIANTS[name])).label == name


def test_the_traits_say_what_the_learners_do():
    assert {n for n, s in methods.SPECS.items() if s.owner_maps} == {"ada_qpacknet", "packnet"}
    assert {n for n, s in methods.SPECS.items() if s.frozen_tasks} == {"ada_qpacknet", "packnet", "wsn", "independent"}
    assert set(methods.HEADLINE) <= set(methods.VARIANTS)
    # Every classic strategy has its avalanche strategy and its state rule; avalanche's PackNet is a class of its own.
    classic_strategies = {n for n, s in methods.SPECS.items() if s.classic and s.single_head}
    assert set(classic.STRATEGIES) == classic_strategies == set(methods.CLASSIC_METHODS)
    assert {n for n, s in methods.SPECS.items() if s.classic} == set(classic.CLASSIC_STATE_DEFINITIONS)
    assert methods.learner_class("avalanche_packnet") is classic.AvalanchePackNet


@pytest.mark.parametrize("bad, message", [
    (lambda: methods.spec("pack_net"), "unknown method 'pack_net'; valid choices: ada_qpacknet, packnet"),
    (lambda: methods.variant("adaqpacknet"), "unknown method 'adaqpacknet'; valid choices: ada_qpacknet, ada_qpacknet_float"),
    (lambda: Config(method="packnet", population=2), "set population=1"),
    (lambda: Config(method="wsn", reuse_frozen=False), r"owner-map methods \(ada_qpacknet, packnet\), not of 'wsn'"),
    (lambda: Config(method="joint", heads="single"), "heads='single' trains one of"),
])
def test_a_method_that_cannot_do_what_is_asked_is_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def _compared_names(tree: ast.AST, names: set[str]) -> list[str]:
    """Method names that appear as string constants in a comparison (==, !=, in, not in)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                constants = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [c.value for c in constants if isinstance(c, ast.Constant) and c.value in names]
    return found


def test_no_method_name_is_compared_outside_the_registry():
    # What a method is (owner maps, frozen tasks, search, quantisation...) is asked of its spec;
    # a comparison with a method's name elsewhere would be a second home for that knowledge.
    names = set(methods.METHODS) | set(methods.VARIANTS)
    offenders = {}
    for path in sorted((ROOT / "adaqpacknet").rglob("*.py")):
        if path.name == "methods.py":
            continue
        found = _compared_names(ast.parse(path.read_text()), names)
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders
    assert _compared_names(ast.parse('x == "ewc" or y in ("wsn", "z")'), names) == ["ewc", "wsn"]  # the check can fail


def test_the_command_line_prints_the_registry(capsys):
    from adaqpacknet.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "ada_qpacknet\tAdaQPacknet\tsubnetwork\towner_maps, frozen_tasks, searches, prunes, quantizes\t" in out
    assert 'ewc_single_head\t{"method": "ewc", "heads": "single"}' in out
    assert len(out.strip().splitlines()) == len(methods.SPECS) + 1 + len(methods.VARIANTS)
