"""The Great Expectations boundary: GE is imported here, lazily (importing it takes seconds), and
its results are turned into plain JSON-safe dicts; GE's own errors become an ``error`` string."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trainer.gates._private import jsonable

SITE = "flywheel"


@dataclass(frozen=True)
class Check:
    """One expectation: a human-readable ``name``, the GE expectation class name and its arguments."""

    name: str
    expectation: str
    kwargs: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Validation:
    """A frame (one GE dataframe asset) and the checks to run on it. ``index_columns`` makes GE name the
    offending rows by those columns (complete result format; meant for small frames)."""

    asset: str
    frame: pd.DataFrame
    checks: Sequence[Check]
    index_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    results: list[dict[str, Any]] = field(default_factory=list)  # per check, in check order
    raw: dict[str, Any] = field(default_factory=dict)  # GE's validation result JSON per asset
    docs_index: Path | None = None
    error: str | None = None
    docs_later: Future[Path | None] | None = None  # data docs rendered by a background thread


def run_validations(validations: Sequence[Validation], docs_dir: Path | None = None, *,
                    background: bool = False) -> Outcome:
    """Validate each frame in one fresh ephemeral context; render data docs into ``docs_dir`` if given (with
    ``background``, in a thread once the results are in: :attr:`Outcome.docs_later` says when they are
    written, None if GE could not render them). The context is the thread's alone from then on."""
    gx = importlib.import_module("great_expectations")
    gxe = importlib.import_module("great_expectations.expectations")
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.exceptions.exceptions import GreatExpectationsError

    results: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    try:
        context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(), data_docs_sites={},
            progress_bars=ProgressBarsConfig(globally=False)))
        source = context.data_sources.add_pandas(SITE)
        for validation in validations:
            batch = source.add_dataframe_asset(validation.asset).add_batch_definition_whole_dataframe("whole")
            suite = context.suites.add(gx.ExpectationSuite(name=validation.asset))
            for check in validation.checks:
                suite.add_expectation(getattr(gxe, check.expectation)(**check.kwargs, meta={"check": check.name}))
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=validation.asset, data=batch, suite=suite))
            result_format: dict[str, Any] = {"result_format": "SUMMARY"}
            if validation.index_columns:
                result_format = {"result_format": "COMPLETE",
                                 "unexpected_index_column_names": list(validation.index_columns)}
            result = definition.run(batch_parameters={"dataframe": validation.frame}, result_format=result_format)
            raw[validation.asset] = result.to_json_dict()
            by_check = {r.expectation_config.meta["check"]: r for r in result.results}
            results.extend(_summary(validation.asset, check, by_check[check.name]) for check in validation.checks)
        if docs_dir is not None and background:
            later: Future[Path | None] = Future()
            threading.Thread(target=_render_later, args=(context, docs_dir, later), name="ge-data-docs",
                             daemon=True).start()
            return Outcome(results=results, raw=raw, docs_later=later)
        docs_index = _render(context, docs_dir) if docs_dir is not None else None
    except (GreatExpectationsError, OSError) as exc:
        return Outcome(error=f"{type(exc).__name__}: {_first_line(str(exc))}")
    return Outcome(results=results, raw=raw, docs_index=docs_index)


def warm() -> None:
    """Import Great Expectations now (seconds, once per process) rather than in the first check."""
    importlib.import_module("great_expectations")
    importlib.import_module("great_expectations.expectations")


def _render(context: Any, docs_dir: Path) -> Path:
    context.add_data_docs_site(site_name=SITE, site_config={
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    context.build_data_docs(site_names=[SITE])
    return docs_dir / "index.html"


def _render_later(context: Any, docs_dir: Path, later: Future[Path | None]) -> None:
    from great_expectations.exceptions.exceptions import GreatExpectationsError

    try:
        later.set_result(_render(context, docs_dir))
    except (GreatExpectationsError, OSError):  # the verdict stands; the docs are missing (the caller says so)
        later.set_result(None)


def _summary(asset: str, check: Check, result: Any) -> dict[str, Any]:
    body: dict[str, Any] = result.result or {}
    observed: dict[str, Any]
    error = _exception_message(result.exception_info)
    if error is not None:
        observed = {"error": error}
    elif "observed_value" in body:
        observed = {"observed_value": body["observed_value"]}
    else:
        observed = {"unexpected_count": body.get("unexpected_count"),
                    "unexpected_percent": body.get("unexpected_percent"),
                    "examples": list(body.get("partial_unexpected_list") or [])[:5]}
        if "unexpected_index_list" in body:
            observed["unexpected_index"] = body["unexpected_index_list"]
    summary: dict[str, Any] = jsonable({
        "check": check.name, "asset": asset, "expectation": result.expectation_config.type, "kwargs": check.kwargs,
        "success": bool(result.success), "observed": observed})
    return summary


def _exception_message(info: Any) -> str | None:
    """GE nests exception info either flat or per metric; find the first raised message."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception") and info.get("exception_message"):
        return _first_line(str(info["exception_message"]))
    for value in info.values():
        if isinstance(value, dict) and value.get("exception_message"):
            return _first_line(str(value["exception_message"]))
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "(no message)"
