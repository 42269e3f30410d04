"""The review queue (active learning): served predictions nobody has judged yet, least sure first.

``margin`` = top-class probability minus the runner-up's, from the probabilities the prediction event
carried: a small margin is a text the model cannot decide, where one human label teaches it most. Only
the latest ``scan`` predictions of the model are considered (a bounded, BRIN-served read), shadow
predictions never (nobody saw them). Handing an item out claims it for ``claim_s`` so two reviewers do not
label the same text; a label is ordinary feedback (``FeedbackEvent`` on the feedback topic, source
``review``), so it is validated, deduplicated, joined and curated like any other.

A generator's predictions (task ``text-generation``) have no probabilities: each comes with its prompt,
context and persona and the response it was given (``text`` is the prompt), margin 1.0 (nothing says
which is least sure), and is answered with a rating or a corrected response (``POST /feedback``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

CLAIMS = "review_claims"


@dataclass(frozen=True)
class ReviewItem:
    prediction_id: str
    text: str
    label: str  # what the model answered
    margin: float
    probabilities: dict[str, float]
    model_version: str
    variant: str
    # a generator's prediction: what it was asked and what it answered (None for a classifier's)
    prompt: str | None = None
    context: str | None = None
    persona: str | None = None
    response: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"prediction_id": self.prediction_id, "text": self.text, "label": self.label,
                "margin": self.margin, "probabilities": self.probabilities,
                "model_version": self.model_version, "variant": self.variant, "prompt": self.prompt,
                "context": self.context, "persona": self.persona, "response": self.response}


def _item(prediction_id: Any, text: Any, label: Any, margin: float | None, probabilities: Any, model_version: Any,
          variant: Any, asked: Any, answered: Any) -> ReviewItem:
    """A row of ``predictions`` as an item: a classifier's text and label, or a generator's prompt and
    response (from its ``input`` and ``output`` jsonb)."""
    proba = {str(k): float(v) for k, v in (probabilities or {}).items()}
    if answered is None:
        return ReviewItem(str(prediction_id), str(text or ""), str(label or ""), 1.0 if margin is None else margin,
                          proba, str(model_version), str(variant))
    asked = asked or {}
    prompt = str(asked.get("prompt", ""))
    return ReviewItem(str(prediction_id), prompt, str(label or ""), 1.0, proba, str(model_version), str(variant),
                      prompt=prompt, context=asked.get("context"), persona=asked.get("persona"),
                      response=str(answered.get("text", "")))


class ReviewQueue:
    """Reads and claims on one connection (autocommit or not: each call is one statement)."""

    def __init__(self, conn: Any, model: str, *, scan: int = 5000, claim_s: float = 600.0) -> None:
        self.conn, self.model, self.scan, self.claim_s = conn, model, scan, claim_s

    def next(self, n: int = 10, reviewer: str = "reviewer") -> list[ReviewItem]:
        """Up to ``n`` unjudged, unclaimed predictions with the smallest margins, claimed for ``reviewer``."""
        query = sql.SQL("""
            WITH recent AS (
                SELECT p.prediction_id, p.text, p.label, p.probabilities, p.model_version, p.variant, p.input,
                       p.output
                  FROM predictions p
                 WHERE p.model = %(model)s AND p.variant <> 'shadow'
                   AND p.id > (SELECT COALESCE(max(id), 0) FROM predictions) - %(scan)s
            ), judged AS (
                SELECT f.prediction_id FROM feedback f
                 WHERE f.id > (SELECT COALESCE(max(id), 0) FROM feedback) - 4 * %(scan)s
            ), scored AS (
                SELECT r.*, (SELECT COALESCE(a[1] - COALESCE(a[2], 0), 1.0)
                               FROM (SELECT array_agg(v::float8 ORDER BY v::float8 DESC) AS a
                                       FROM jsonb_each_text(r.probabilities) AS e(k, v)) s) AS margin
                  FROM recent r
                 WHERE NOT EXISTS (SELECT 1 FROM judged j WHERE j.prediction_id = r.prediction_id)
                   AND NOT EXISTS (SELECT 1 FROM {claims} c WHERE c.prediction_id = r.prediction_id
                                      AND c.claimed_at > now() - make_interval(secs => %(claim_s)s))
                 ORDER BY margin ASC, r.prediction_id
                 LIMIT %(n)s
            ), claimed AS (
                INSERT INTO {claims} (prediction_id, reviewer, claimed_at)
                SELECT prediction_id, %(reviewer)s, now() FROM scored
                ON CONFLICT (prediction_id) DO UPDATE SET reviewer = EXCLUDED.reviewer, claimed_at = now()
            )
            SELECT prediction_id, text, label, margin, probabilities, model_version, variant, input, output
              FROM scored ORDER BY margin ASC, prediction_id
        """).format(claims=sql.Identifier(CLAIMS))
        rows = self.conn.execute(query, {"model": self.model, "scan": self.scan, "claim_s": self.claim_s,
                                         "n": n, "reviewer": reviewer}).fetchall()
        return [_item(r[0], r[1], r[2], float(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows]

    def find(self, prediction_id: str) -> ReviewItem | None:
        """A prediction of this model by id (what ``label`` checks before publishing feedback)."""
        row = self.conn.execute(
            "SELECT prediction_id, text, label, probabilities, model_version, variant, input, output FROM predictions "
            "WHERE prediction_id = %s AND model = %s", (prediction_id, self.model)).fetchone()
        if row is None:
            return None
        top = [*sorted((float(v) for v in (row[3] or {}).values()), reverse=True), 0.0, 0.0]
        return _item(row[0], row[1], row[2], top[0] - top[1] if row[3] else None, row[3], row[4], row[5], row[6],
                     row[7])
