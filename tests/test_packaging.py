"""The conda environment pins exactly what pyproject.toml pins."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins |= set(extra)
    assert all("==" in pin for pin in pins), "every dependency is pinned exactly"
    conda = set(re.findall(r"^\s+- ([A-Za-z0-9_.-]+==[^\s]+)$", (ROOT / "environment.yml").read_text(), re.M))
    assert conda == pins
