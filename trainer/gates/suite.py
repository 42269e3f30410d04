"""The versioned behavioural test file (``trainer/behaviour/v<N>.yaml``, shipped as package data):
CheckList-style invariance, directional and minimum-functionality cases, validated on load."""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer.gates.exceptions import BehaviourSuiteError

CaseType = Literal["invariance", "directional", "mft"]
CASE_TYPES: tuple[CaseType, ...] = ("invariance", "directional", "mft")
Text = Annotated[str, Field(min_length=1)]


class _Case(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Text
    domain: str | None = None


class InvarianceCase(_Case):
    """The predicted label of every variant must equal the base text's."""

    type: Literal["invariance"]
    perturbation: Text
    base: Text
    variants: list[Text] = Field(min_length=1)


class DirectionalCase(_Case):
    """Going from ``base`` to ``variant``, the probability of ``label`` must move in ``direction``."""

    type: Literal["directional"]
    perturbation: Text
    base: Text
    variant: Text
    label: Text
    direction: Literal["increase", "decrease"]


class MftCase(_Case):
    """Minimum functionality: a simple, unambiguous text gets the ``expected`` label."""

    type: Literal["mft"]
    text: Text
    expected: Text


Case = Annotated[InvarianceCase | DirectionalCase | MftCase, Field(discriminator="type")]


class BehaviourSuite(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1)
    labels: list[Text] = Field(min_length=2)
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        repeated = sorted(i for i, n in Counter(c.id for c in self.cases).items() if n > 1)
        if repeated:
            raise ValueError(f"case ids must be unique; repeated: {repeated}")
        named = {c.label for c in self.cases if isinstance(c, DirectionalCase)}
        named |= {c.expected for c in self.cases if isinstance(c, MftCase)}
        unknown = sorted(named - set(self.labels))
        if unknown:
            raise ValueError(f"cases name labels {unknown} that are not in labels {self.labels}")
        return self

    def texts(self) -> list[str]:
        """Every distinct text of the suite, in first-seen order."""
        seen: dict[str, None] = {}
        for case in self.cases:
            if isinstance(case, InvarianceCase):
                seen.update(dict.fromkeys([case.base, *case.variants]))
            elif isinstance(case, DirectionalCase):
                seen.update(dict.fromkeys([case.base, case.variant]))
            else:
                seen[case.text] = None
        return list(seen)


def load_suite(path: Path | None = None, version: str = "v1") -> BehaviourSuite:
    """Load and validate ``path``, or the packaged ``trainer/behaviour/<version>.yaml``."""
    if path is None:
        resource = resources.files("trainer").joinpath("behaviour").joinpath(f"{version}.yaml")
        source, reader = Path(str(resource)), resource.read_text
    else:
        source, reader = path, path.read_text
    try:
        raw = yaml.safe_load(reader(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BehaviourSuiteError(source, f"cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise BehaviourSuiteError(source, f"is not valid YAML: {exc}") from exc
    try:
        return BehaviourSuite.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise BehaviourSuiteError(source, f"does not validate: {problems}{more}") from exc
