"""A text-generation model's run, beside the classifiers' (:mod:`trainer.steps`), chosen by the model's task.

1. Pairs: a full run trains a fresh adapter (``fit``) on the corpus's train split and every accepted
   sample; an incremental run continues the champion's adapter (``partial_fit``) on the samples newer
   than the champion plus the ``policy.replay_size`` most recent earlier ones (so it does not forget);
   a bootstrap trains on the corpus it is given.
2. Measure the candidate and the champion on the held-out references (the corpus holdout and the most
   recent reserved samples): weighted BLEU/ROUGE-L-precision score, perplexity; on the fixed probe set:
   toxicity rate and the p95 latency of one generation (:class:`GenerationMetrics`).
3. Gates (:func:`trainer.gates.generation.generation_verdicts`): best-in-history + minimum improvement (the
   registry's ``weighted_score`` tags pick the best version, scored again on the candidate's references;
   the first model deploys), perplexity, toxicity, latency. Every
   verdict goes to the MLflow run; a failed gate refuses the candidate unless the operator forces it
   (``force_deploy``: registered and announced anyway, tagged ``force_deployed``, every verdict kept).
4. Register with the model card (``MODEL_CARD.md`` in the artifact), tag the score, move the aliases and
   announce (a canary at ``promotion.canary_traffic``, 5% by default for this task; a bootstrap promotes).

The same crash order as the classifiers' runs: register (tagged with the run id), aliases, event, run row.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.exceptions import FlywheelError
from curation.pairs import ToxicityScorer
from kinds import catalog
from kinds.base import read_manifest
from kinds.generation import GeneratorKind, GeneratorResources, Pair, Prompt
from registry import ChampionChanged, Lineage, ModelRegistry, ModelVersionInfo, RunHandle
from registry.announce import ModelAnnouncer, model_event
from trainer.config import TrainerConfig
from trainer.exceptions import TrainerError
from trainer.gates import Verdict
from trainer.gates.generation import GenerationMetrics, generation_verdicts
from trainer.gates.generation_metrics import score_parts, weighted_score
from trainer.model_card import CARD_FILE, ModelCard
from trainer.pairs import PairStore
from trainer.policy import Mode
from trainer.runs import RunLog, RunResult
from trainer.tracking import log_verdict

__all__ = ["GenerationSteps", "GeneratorRun", "measure"]

log = logging.getLogger(__name__)
SCORE_TAG = "weighted_score"


def measure(model: GeneratorKind, references: Sequence[Pair], probes: Sequence[str], toxicity: ToxicityScorer, *,
            max_new_tokens: int, weights: dict[str, float], toxicity_threshold: float | None = None
            ) -> GenerationMetrics:
    """One generator on the held-out references and the probe set (greedy decoding: reproducible)."""
    started = time.perf_counter()
    generated = model.generate([p.prompt for p in references], max_new_tokens=max_new_tokens)
    hypotheses, refs = [g.text for g in generated], [p.response for p in references]
    parts = score_parts(hypotheses, refs)
    score = weighted_score(hypotheses, refs, weights)
    perplexity = model.perplexity(references)
    answers = [model.generate([Prompt(p)], max_new_tokens=max_new_tokens)[0] for p in probes]  # one request each
    scores = toxicity.scores([a.text for a in answers], list(probes))  # each answer read as the probe's answer
    cut = toxicity_threshold or toxicity.threshold
    latencies = sorted(a.latency_ms for a in answers)
    toxic = [{"probe": p, "answer": a.text[:200], "score": round(s, 5)}
             for p, a, s in zip(probes, answers, scores, strict=True) if s >= cut]
    return GenerationMetrics(score=score, parts=parts, perplexity=perplexity,
                             toxicity_rate=sum(s >= cut for s in scores) / len(scores),
                             p95_latency_ms=_percentile(latencies, 0.95), references=len(references),
                             probes=len(probes), extra={"measure_seconds": time.perf_counter() - started,
                                                        "toxic_answers": toxic})


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


@dataclass(frozen=True)
class GeneratorRun:
    """What one generation run trains on and against."""

    runs: RunLog
    store: PairStore
    run_id: Any
    mode: Mode
    trigger: str
    reason: str
    watermark: int
    sample_count: int
    champion: ModelVersionInfo | None
    train: Sequence[Pair]
    holdout: Sequence[Pair]
    replayed: int = 0
    source: str = "feedback"


class GenerationSteps:
    """The steps of a started generation run for one model."""

    def __init__(self, *, model_name: str, config: TrainerConfig, registry: ModelRegistry, announcer: ModelAnnouncer,
                 resources: Callable[[str], GeneratorResources], toxicity: Callable[[], ToxicityScorer],
                 scratch: Path, clock: Callable[[], Any], description: str = "") -> None:
        self.model_name = model_name
        self.config = config
        self.gen = config.generation
        self.registry = registry
        self.announcer = announcer
        self.resources = resources
        self._toxicity_factory = toxicity
        self._toxicity: ToxicityScorer | None = None
        self.scratch = scratch
        self.clock = clock
        self.description = description

    @property
    def toxicity(self) -> ToxicityScorer:
        if self._toxicity is None:
            self._toxicity = self._toxicity_factory()
        return self._toxicity

    def kind(self, kinds: Sequence[str] | None) -> str:
        return (list(kinds or []) or list(self.config.policy.kinds))[0]

    def params(self, kind: str) -> dict[str, Any]:
        return {**self.config.policy.kind_params.get(kind, {}), **self.gen.params}

    def load(self, version: str) -> GeneratorKind:
        """A registered generator on the shared base (its artifact verified by the registry)."""
        info = self.registry.get(version)
        directory = self.registry.fetch(info.version)
        base = str(read_manifest(directory)["params"].get("base", ""))
        return catalog.load_model(directory, resources=self.resources(base))

    def pairs(self, store: PairStore, mode: str, watermark: int, champion: ModelVersionInfo | None
              ) -> tuple[list[Pair], int]:
        """The run's training pairs and how many of them are replayed earlier pairs."""
        if mode == "incremental":
            assert champion is not None
            after = champion.watermark or 0
            new = [p for _i, p in store.training(after=after, upto=watermark)]
            replay = [p for _i, p in store.replay(upto=after, limit=self.config.policy.replay_size)]
            return new + replay, len(replay)
        corpus = store.corpus("train")
        return corpus + [p for _i, p in store.training(after=0, upto=watermark)], 0

    def run(self, r: GeneratorRun, kinds: Sequence[str] | None = None, *, force: bool = False) -> RunResult:
        kind = self.kind(kinds)
        if len(r.holdout) < self.gen.min_holdout or not r.train:
            reason = (f"{len(r.train)} training pairs and {len(r.holdout)} held-out references "
                      f"(at least 1 and {self.gen.min_holdout} needed)")
            r.runs.finish(r.run_id, status="refused", reason=reason, trained_count=len(r.train))
            return RunResult("refused", reason, r.run_id, r.mode)
        self.scratch.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"run-{r.run_id}-", dir=self.scratch))
        try:
            with self.registry.run(f"{r.mode}-{r.run_id}", tags={"flywheel_run_id": str(r.run_id), "mode": r.mode,
                                                                 "trigger": r.trigger, "task": "text-generation"}
                                   ) as ml:
                return self._run(r, kind, workdir, ml, force)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, r: GeneratorRun, kind: str, workdir: Path, ml: RunHandle, force: bool) -> RunResult:
        params = self.params(kind)
        ml.log_params({"mode": r.mode, "trigger": r.trigger, "watermark": r.watermark, "kind": kind,
                       "sample_count": r.sample_count, "train_pairs": len(r.train), "replayed": r.replayed,
                       "holdout_references": len(r.holdout), "force_deploy": force, "reason": r.reason[:500],
                       **{f"{kind}.{k}": v for k, v in params.items()}})
        champion = self.load(r.champion.version) if r.champion is not None else None
        started = time.perf_counter()
        if r.mode == "incremental" and r.champion is not None:
            model = self.load(r.champion.version).partial_fit(r.train)
        else:
            if kind not in catalog.GENERATORS:
                raise TrainerError(f"{kind!r} is not a generator kind; known: {sorted(catalog.GENERATORS)}")
            fresh = catalog.GENERATORS[kind](**params)
            model = fresh.bind(self.resources(str(fresh.params["base"]))).fit(r.train)
        train_seconds = time.perf_counter() - started
        measured = self._measure(model, r.holdout)
        baseline = self._measure(champion, r.holdout) if champion is not None else None
        best = self._best_on(r.holdout, r.champion, baseline)
        verdicts = generation_verdicts(measured, baseline, best, self.gen)
        for v in verdicts:
            log_verdict(ml, v)
        ml.log_metrics({**measured.flat(), **(baseline.flat("champion.") if baseline else {}),
                        "train_seconds": train_seconds})
        summary = [{"kind": kind, "train_seconds": train_seconds, "metrics": measured.flat(),
                    "verdicts": [v.to_dict() for v in verdicts]}]
        passed = all(v.passed for v in verdicts)
        failed = "; ".join(f"{v.gate} — {v.reason}" for v in verdicts if not v.passed)
        if not passed and not force:
            r.runs.finish(r.run_id, status="refused", reason=failed, trained_count=len(r.train),
                          candidates=summary, mlflow_run_id=ml.run_id)
            return RunResult("refused", failed, r.run_id, r.mode, candidates=tuple(summary))
        card = ModelCard(
            model=self.model_name, kind=kind, params=model.params, base=str(model.params.get("base")),
            licence=_licence(model), mode=r.mode, parent=r.champion.semver if r.champion else None,
            data={"training pairs": len(r.train), "of which replayed": r.replayed,
                  "held-out references": len(r.holdout), "source": r.source, **r.store.counts()},
            metrics=measured.flat(), champion_metrics=baseline.flat() if baseline else None, verdicts=verdicts,
            forced=force and not passed, description=self.description,
            extra={"Training time": f"{train_seconds:.1f} s", "Probes": f"{len(self.gen.probes)} fixed prompts"})
        artifact = workdir / "model"
        model.save(artifact)
        (artifact / CARD_FILE).write_text(card.render(), encoding="utf-8")
        info = self.registry.register(
            artifact, mode=r.mode,
            metrics=measured.flat(), run_id=ml.run_id,
            lineage=Lineage(data_hash=_digest(r.train), watermark=r.watermark, sample_count=r.sample_count,
                            parent_version=r.champion.version if r.champion else None,
                            training_run_id=str(r.run_id)))
        self.registry.set_tag(info.version, SCORE_TAG, repr(measured.score))
        self.registry.set_tag(info.version, "model_card", CARD_FILE)
        if force and not passed:
            self.registry.set_tag(info.version, "force_deployed", failed[:4000])
        why = (f"{r.reason}; forced past: {failed}" if force and not passed
               else f"{r.reason}; passed every gate ({verdicts[0].reason})")
        return self._announce(r, info, kind, why, summary, ml.run_id, len(r.train))

    def _measure(self, model: GeneratorKind, references: Sequence[Pair]) -> GenerationMetrics:
        """``model`` on at most ``eval_pairs`` held-out references, the most recent (the holdout lists the
        corpus's first, the reserved samples oldest to newest), and the probes."""
        references = list(references)[-self.gen.eval_pairs:]
        return measure(model, references, self.gen.probes, self.toxicity, max_new_tokens=self.gen.max_new_tokens,
                       weights=dict(self.gen.score_weights), toxicity_threshold=self.gen.toxicity_threshold)

    def _best_version(self, excluding: str | None = None) -> ModelVersionInfo | None:
        """The version with the best recorded weighted score (the history kept in the registry)."""
        scored = [v for v in self.registry.versions() if SCORE_TAG in v.tags and v.version != excluding]
        return max(scored, key=lambda v: float(v.tags[SCORE_TAG])) if scored else None

    def _best_on(self, references: Sequence[Pair], champion: ModelVersionInfo | None,
                 champion_metrics: GenerationMetrics | None, excluding: str | None = None) -> float | None:
        """The best version in history scored on ``references``, the ones the candidate is scored on: each
        run's held-out set differs (the recent reserved samples move), so a score recorded on another set is
        not comparable. The champion's is measured anyway; another best version (e.g. after a rollback) is
        measured once more."""
        best = self._best_version(excluding)
        if best is None:
            return None
        if champion is not None and champion_metrics is not None and best.version == champion.version:
            return champion_metrics.score
        return self._measure(self.load(best.version), references).score

    def evaluate(self, version: str, references: Sequence[Pair]) -> list[Verdict]:
        """The gate verdicts of a registered ``version`` on today's held-out references, against the
        champion (or, for the champion itself, the best of the other versions). Changes nothing."""
        info = self.registry.get(version)
        champion = self.registry.champion()
        against = champion if champion is not None and champion.version != info.version else None
        measured = self._measure(self.load(info.version), references)
        baseline = self._measure(self.load(against.version), references) if against is not None else None
        best = self._best_on(references, against, baseline, excluding=info.version)
        return generation_verdicts(measured, baseline, best, self.gen)

    def _announce(self, r: GeneratorRun, info: ModelVersionInfo, kind: str, why: str, summary: list[dict[str, Any]],
                  mlflow_run_id: str, trained: int) -> RunResult:
        promotion = self.config.promotion
        status = "promoted" if promotion.mode == "direct" or r.mode == "bootstrap" else "canary"
        parent = r.champion.version if r.champion else None
        current = self.registry.champion()
        if (current.version if current else None) != parent:
            return self._refuse(r, info, trained, summary, mlflow_run_id)
        if status == "promoted":
            try:  # checked again where the alias moves: an operator's move in between stands
                transition = self.registry.promote(info.version, why, expected=parent)
            except ChampionChanged:
                return self._refuse(r, info, trained, summary, mlflow_run_id)
            event = model_event(transition.info, self.model_name, "promote", 1.0, why, transition.from_version,
                                ts=self.clock())
        else:
            self.registry.mark_challenger(info.version, why)
            event = model_event(info, self.model_name, "canary", promotion.canary_traffic, why, ts=self.clock())
        try:
            self.announcer.publish(event)
        except FlywheelError as exc:  # the alias moved: reconcile re-announces
            why += f"; announcement pending: {exc}"
        r.runs.finish(r.run_id, status=status, reason=why, trained_count=trained, version=info.version, kind=kind,
                      candidates=summary, mlflow_run_id=mlflow_run_id)
        log.info("generation run %s: %s %s (%s)", r.run_id, status, info.semver, why)
        return RunResult(status, why, r.run_id, r.mode, info, event, tuple(summary))

    def _refuse(self, r: GeneratorRun, info: ModelVersionInfo, trained: int, summary: list[dict[str, Any]],
                mlflow_run_id: str) -> RunResult:
        reason = "the champion changed during the run; the candidate was not evaluated against it"
        self.registry.delete_version(info.version)
        r.runs.finish(r.run_id, status="refused", reason=reason, trained_count=trained, candidates=summary,
                      mlflow_run_id=mlflow_run_id)
        return RunResult("refused", reason, r.run_id, r.mode, candidates=tuple(summary))


def _licence(model: GeneratorKind) -> str:
    base = getattr(model, "base", None)
    return str(getattr(base, "licence", "unknown"))


def _digest(pairs: Sequence[Pair]) -> str:
    """The data snapshot hash of a run: sha256 over its pairs in training order."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.prompt.persona}\x1f{p.prompt.context}\x1f{p.prompt.prompt}\x1f{p.response}\x1f{p.weight!r}\x1e"
                 .encode())
    return h.hexdigest()
