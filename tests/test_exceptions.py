"""One documented exception tree: every error class Flywheel defines derives from ``FlywheelError``, has a
name no other package uses, and is drawn in :mod:`core.exceptions`' docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import core.exceptions
from core.exceptions import FlywheelError

PACKAGES = ["core", "kinds", "schemas", "tasks", "streams", "curation", "registry", "trainer", "serving", "flywheel"]


def _defined_errors() -> dict[str, list[type[BaseException]]]:
    found: dict[str, list[type[BaseException]]] = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if ".migrations" in info.name or info.name.rsplit(".", 1)[-1] in ("__main__", "_export"):
                continue
            module = importlib.import_module(info.name)
            for cls in vars(module).values():
                if inspect.isclass(cls) and issubclass(cls, FlywheelError) and cls.__module__ == info.name:
                    found.setdefault(cls.__name__, []).append(cls)
    return found


def test_every_error_derives_from_the_root_has_one_name_and_is_in_the_documented_tree() -> None:
    errors = _defined_errors()
    assert len(errors) > 50  # the walk found the packages' errors
    twice = {name: [c.__module__ for c in classes] for name, classes in errors.items() if len(classes) > 1}
    assert not twice, f"one name, two classes: {twice}"
    documented = set(re.findall(r"\b[A-Z]\w+\b", core.exceptions.__doc__ or ""))
    missing = sorted(set(errors) - documented)
    assert not missing, f"not in core.exceptions' tree: {missing}"


def test_every_class_in_an_exceptions_module_is_a_flywheel_error() -> None:
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not info.name.endswith(".exceptions"):
                continue
            module = importlib.import_module(info.name)
            for cls in vars(module).values():
                if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == info.name \
                        and cls is not FlywheelError:
                    assert issubclass(cls, FlywheelError), f"{info.name}.{cls.__name__}"
                    assert len([b for b in cls.__bases__ if issubclass(b, FlywheelError)]) == 1, \
                        f"{info.name}.{cls.__name__} has two Flywheel bases"
