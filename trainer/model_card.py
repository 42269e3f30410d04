"""The model card of a generator version (markdown): what it is built on and under which licence, what it
learnt from (counts and sources), every metric of it and of the champion it was compared with, every gate
verdict (and whether an operator forced the deployment past a failed one), and its intended use. Written
into the version's artifact directory as ``MODEL_CARD.md``, so MLflow stores it with the version and
``flywheel models show`` prints it; the manifest does not pin it (documentation, not weights)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer.gates import Verdict

__all__ = ["CARD_FILE", "ModelCard"]

CARD_FILE = "MODEL_CARD.md"
DEFAULT_USE = ("Short in-character replies of a game NPC or a chatbot to a player's or user's prompt, in the domain "
               "it was trained on. Not for facts, advice or decisions: it is a 135M-parameter model with a LoRA "
               "adapter trained on player feedback, and repeats what it was rated well for.")


@dataclass(frozen=True)
class ModelCard:
    model: str
    kind: str
    params: Mapping[str, Any]
    base: str
    licence: str
    mode: str
    parent: str | None
    data: Mapping[str, Any]  # counts: training pairs, replay, references, samples by status, corpus
    metrics: Mapping[str, float]
    champion_metrics: Mapping[str, float] | None
    verdicts: Sequence[Verdict]
    forced: bool = False
    description: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def render(self) -> str:
        lines = [f"# Model card: {self.model} ({self.kind})", ""]
        deployed = "passed every gate" if self.passed else (
            "**force-deployed** by an operator past a failed gate" if self.forced else "refused")
        lines += [f"- Training: {self.mode}" + (f", continuing version {self.parent}" if self.parent else ""),
                  f"- Gates: {deployed}",
                  f"- Base model: {self.base} — licence {self.licence}",
                  f"- Adapter parameters: {', '.join(f'{k}={v}' for k, v in sorted(self.params.items()))}",
                  *[f"- {k}: {v}" for k, v in self.extra.items()], "", "## Intended use", "",
                  self.description or DEFAULT_USE, "", "## Data", ""]
        lines += [f"- {k}: {_value(v)}" for k, v in self.data.items()]
        lines += ["", "## Metrics", "", "| metric | this version | champion |", "|---|---|---|"]
        for name, value in self.metrics.items():
            other = self.champion_metrics.get(name) if self.champion_metrics else None
            lines.append(f"| {name} | {value:.4f} | {'' if other is None else f'{other:.4f}'} |")
        lines += ["", "## Gate verdicts", "", "| gate | verdict | reason |", "|---|---|---|"]
        lines += [f"| {v.gate} | {'pass' if v.passed else 'FAIL'} | {v.reason.replace('|', '/')} |"
                  for v in self.verdicts]
        return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value)
