"""The distribution ships every package: a folder with an ``__init__.py`` under a mapped
subsystem must be in pyproject's package list, or a non-editable install (a wheel, the Beam
worker image) lacks it while an editable one hides the gap."""

from __future__ import annotations

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_folder_is_listed_in_pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setup = tomllib.load(f)["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = set()
    for package, folder in setup["package-dir"].items():
        for d, dirs, names in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            if "__init__.py" in names:
                rel = os.path.relpath(d, os.path.join(ROOT, folder))
                found.add(package if rel == "." else f"{package}.{rel.replace(os.sep, '.')}")
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
