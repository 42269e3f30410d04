"""Data-quality gate: Great Expectations 1.x on the training frame (columns ``text``, ``label``,
``weight``; ``domain``/``segment`` may ride along and are not checked). For a tabular model
(:attr:`GateInput.features`) the ``text`` checks are replaced by the feature schema's, one column per
feature: required features not null, numbers of a number type within their range, categories within
their set, booleans of the boolean type. (Ingest already refuses rows that break the schema; this
checks what a training batch holds, corpus rows included, against the schema as it is now.)

Each check runs in a fresh *ephemeral* GE context with a pandas data source: building the context and
suites costs ~35 ms, a fraction of one validation, and a fresh context keeps GE's in-memory result
store from growing over a long-lived trainer and keeps each data-docs site to the one run it documents.
The expensive part is importing GE (~5 s), done lazily on the first check, once per process.

Two batches are validated: the training frame itself, and a small derived frame with one row per label
and its share of all rows, because GE has no expectation on per-value proportions. Duplicates use
``expect_column_proportion_of_unique_values_to_be_between`` on ``text``: distinct/non-null =
1 - (share of rows that repeat an earlier row), so ``min_value = 1 - max_duplicate_share``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks import FeatureSchema
from trainer.gates._ge import Check, Validation, run_validations, warm
from trainer.gates.base import Clock, Gate, GateInput, Verdict
from trainer.gates.exceptions import ArtifactWriteError

REQUIRED_COLUMNS = ("text", "label", "weight")


class QualityConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_text_length: int = Field(default=1, ge=0)
    max_text_length: int = Field(default=5000, ge=1)
    max_duplicate_share: float = Field(default=0.05, ge=0.0, le=1.0)
    min_label_share: float = Field(default=0.02, ge=0.0, le=1.0)
    max_label_share: float = Field(default=0.95, ge=0.0, le=1.0)
    data_docs: bool = True  # render GE data docs HTML next to the validation JSON
    # render them in a background thread after the verdict (~2/3 of a check's time: off the run's critical
    # path; the trainer logs them to MLflow before the run ends, see Gate.later_artifacts)
    data_docs_in_background: bool = True

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> Self:
        if self.min_text_length > self.max_text_length:
            raise ValueError("min_text_length must not exceed max_text_length")
        if self.min_label_share > self.max_label_share:
            raise ValueError("min_label_share must not exceed max_label_share")
        return self


class QualityGate(Gate[QualityConfig]):
    name = "quality"

    def __init__(self, config: QualityConfig | None = None, *, clock: Clock = time.perf_counter) -> None:
        super().__init__(config or QualityConfig(), clock=clock)
        self._later: dict[Path, Future[Path | None]] = {}  # data docs being rendered, by validation file

    def later_artifacts(self, verdict: Verdict) -> dict[str, Path]:
        """The data docs rendered in the background for ``verdict`` (``data_docs``), once written."""
        later = self._later.pop(verdict.artifacts.get("validation", Path()), None)
        index = later.result() if later is not None else None
        return {"data_docs": index} if index is not None else {}

    @staticmethod
    def warm() -> None:
        """Import Great Expectations now (seconds, once per process) instead of in the first check."""
        warm()

    def check(self, inputs: GateInput) -> Verdict:
        frame = inputs.training
        if frame is None:
            return self.fail("no training frame was given")
        features = inputs.features
        required = REQUIRED_COLUMNS if features is None else (*features.names, "label", "weight")
        missing = [c for c in required if c not in frame.columns]
        if missing:
            return self.fail(f"training frame lacks required column(s) {missing}; has {list(map(str, frame.columns))}",
                             rows=len(frame), missing_columns=missing)
        if frame.empty:
            return self.fail("training frame is empty (0 rows)", rows=0)
        started = self.clock()
        labels = inputs.labels
        # object dtype makes GE check each value's type (pandas 3 would otherwise report the column dtype)
        training = frame[list(required)].astype({c: object for c in required if c != "weight"}).reset_index(drop=True)
        shares = training["label"].dropna().astype(str).value_counts(sort=False).sort_index() / len(training)
        share_frame = pd.DataFrame({"label": shares.index.astype(object), "share": shares.to_numpy(dtype=float)})
        out = self.artifact_dir(inputs)
        outcome = run_validations(
            [Validation("training", training, self._training_checks(labels) if features is None
                        else self._feature_checks(features, labels)),
             Validation("label_shares", share_frame, [self._share_check()], index_columns=("label",))],
            docs_dir=out / "data_docs" if out is not None and self.config.data_docs else None,
            background=self.config.data_docs_in_background)
        if outcome.error is not None:
            return self.fail(f"Great Expectations could not validate the training frame: {outcome.error}",
                             rows=len(training))
        artifacts = self._write(out, outcome.raw) if out is not None else {}
        if outcome.docs_index is not None:
            artifacts["data_docs"] = outcome.docs_index
        if outcome.docs_later is not None and "validation" in artifacts:
            self._later[artifacts["validation"]] = outcome.docs_later
        failed = [r for r in outcome.results if not r["success"]]
        details: dict[str, Any] = {
            "rows": len(training), "label_set": None if labels is None else list(labels),
            "label_shares": {str(k): round(float(v), 6) for k, v in shares.items()},
            "expectations": outcome.results, "failed": [r["check"] for r in failed],
            "elapsed_ms": round((self.clock() - started) * 1000, 3)}
        unchecked = "" if labels is not None else "; label set unknown, labels not checked against it"
        if failed:
            reason = (f"{len(failed)} of {len(outcome.results)} expectations failed on {len(training)} rows: "
                      + "; ".join(_describe(r) for r in failed) + unchecked)
            return self.verdict(False, reason, details, artifacts)
        return self.verdict(True, f"all {len(outcome.results)} expectations met on {len(training)} rows"
                            + unchecked, details, artifacts)

    def _training_checks(self, labels: tuple[str, ...] | None) -> list[Check]:
        cfg = self.config
        checks = [
            Check("text not null", "ExpectColumnValuesToNotBeNull", {"column": "text"}),
            Check("text is a string", "ExpectColumnValuesToBeInTypeList", {"column": "text", "type_list": ["str"]}),
            Check(f"text length in [{cfg.min_text_length}, {cfg.max_text_length}]",
                  "ExpectColumnValueLengthsToBeBetween",
                  {"column": "text", "min_value": cfg.min_text_length, "max_value": cfg.max_text_length}),
            Check(f"duplicate text share <= {cfg.max_duplicate_share:g}",
                  "ExpectColumnProportionOfUniqueValuesToBeBetween",
                  {"column": "text", "min_value": 1.0 - cfg.max_duplicate_share}),
            Check("label not null", "ExpectColumnValuesToNotBeNull", {"column": "label"}),
            Check("weight not null", "ExpectColumnValuesToNotBeNull", {"column": "weight"}),
            Check("weight >= 0", "ExpectColumnValuesToBeBetween", {"column": "weight", "min_value": 0}),
        ]
        if labels is not None:
            checks.append(Check(f"label in {list(labels)}", "ExpectColumnValuesToBeInSet",
                                {"column": "label", "value_set": list(labels)}))
        return checks

    def _feature_checks(self, features: FeatureSchema, labels: tuple[str, ...] | None) -> list[Check]:
        checks = []
        for f in features.features:
            if f.required:
                checks.append(Check(f"{f.name} not null", "ExpectColumnValuesToNotBeNull", {"column": f.name}))
            if f.type == "numeric":
                checks.append(Check(f"{f.name} is a number", "ExpectColumnValuesToBeInTypeList",
                                    {"column": f.name, "type_list": ["int", "float"]}))
                if f.min is not None or f.max is not None:
                    checks.append(Check(f"{f.name} in [{f.min}, {f.max}]", "ExpectColumnValuesToBeBetween",
                                        {"column": f.name, "min_value": f.min, "max_value": f.max}))
            elif f.type == "boolean":
                checks.append(Check(f"{f.name} is a boolean", "ExpectColumnValuesToBeInTypeList",
                                    {"column": f.name, "type_list": ["bool"]}))
            else:
                checks.append(Check(f"{f.name} in {list(f.categories or ())}", "ExpectColumnValuesToBeInSet",
                                    {"column": f.name, "value_set": list(f.categories or ())}))
        return [*checks, *(c for c in self._training_checks(labels) if "text" not in c.name)]

    def _share_check(self) -> Check:
        cfg = self.config
        return Check(f"label share in [{cfg.min_label_share:g}, {cfg.max_label_share:g}]",
                     "ExpectColumnValuesToBeBetween",
                     {"column": "share", "min_value": cfg.min_label_share, "max_value": cfg.max_label_share})

    def _write(self, out: Path, raw: dict[str, Any]) -> dict[str, Path]:
        path = out / "validation.json"
        try:
            path.write_text(json.dumps(raw, indent=2, sort_keys=True, default=str))
        except OSError as exc:
            raise ArtifactWriteError(out, str(exc)) from exc
        return {"validation": path}


def _describe(result: dict[str, Any]) -> str:
    """``check (what was seen)`` for a failed expectation, short enough for a one-line reason."""
    observed = result.get("observed", {})
    if "error" in observed:
        return f"{result['check']} (raised: {observed['error']})"
    if "observed_value" in observed:
        value = observed["observed_value"]
        if result["expectation"] == "expect_column_proportion_of_unique_values_to_be_between":
            return f"{result['check']} (observed {1.0 - float(value):.4f})"
        return f"{result['check']} (observed {value})"
    if "unexpected_index" in observed:
        shown = ", ".join(f"{row['label']}={float(row['share']):.3f}" for row in observed["unexpected_index"])
        return f"{result['check']} ({shown})"
    examples = [repr(v) for v in observed.get("examples", [])[:3] if v is not None]
    shown = f", e.g. {', '.join(examples)}" if examples else ""
    return f"{result['check']} ({observed.get('unexpected_count')} row(s){shown})"
