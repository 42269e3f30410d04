"""The serving pod's Prometheus metrics, on the app's own CollectorRegistry (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_GENERATE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
_DEPLOY_BUCKETS = (5, 10, 15, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400,
                   259200, 604800)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "flywheel_serving_request_seconds", "HTTP request latency by route and variant",
            ["route", "variant"], buckets=_LATENCY_BUCKETS, registry=r)
        self.predictions = Counter(
            "flywheel_serving_predictions", "Predictions served, by variant and model version",
            ["variant", "version"], registry=r)
        self.load_failures = Counter(
            "flywheel_serving_model_load_failures", "Model loads that failed (the old deployment kept serving)",
            ["reason"], registry=r)
        self.load_seconds = Histogram(
            "flywheel_serving_model_load_seconds", "Fetch + verify + load + warm-up time of one version",
            registry=r)
        self.swaps = Counter("flywheel_serving_swaps", "Deployments swapped in", registry=r)
        self.events_dropped = Counter(
            "flywheel_serving_events_dropped", "Prediction events dropped instead of blocking a request",
            ["reason"], registry=r)
        self.events_published = Counter(
            "flywheel_serving_events_published", "Prediction events acknowledged by the broker", registry=r)
        self.feedback = Counter("flywheel_serving_feedback", "Feedback requests by outcome", ["outcome"],
                                registry=r)
        self.bad_model_events = Counter(
            "flywheel_serving_bad_model_events", "Records on the models topic that were not valid events",
            registry=r)
        self.ready = Gauge("flywheel_serving_ready", "1 when a champion is loaded", registry=r)
        self.champion_fallback = Gauge(
            "flywheel_serving_champion_fallback",
            "1 when the announced champion failed to load or verify and another version answers in its place",
            registry=r)
        self.canary_traffic = Gauge("flywheel_serving_canary_traffic", "Share of requests sent to the canary",
                                    registry=r)
        self.batch_texts = Histogram(
            "flywheel_serving_batch_texts", "Texts per predict_proba call of the micro-batcher (one model each)",
            buckets=_BATCH_BUCKETS, registry=r)
        self.batch_queue_seconds = Histogram(
            "flywheel_serving_batch_queue_seconds", "Wait of a micro-batcher job from submit to its batch's predict",
            buckets=_WAIT_BUCKETS, registry=r)
        self.batch_predict_seconds = Histogram(
            "flywheel_serving_batch_predict_seconds", "Duration of one micro-batch predict_proba call",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.generate_seconds = Histogram(
            "flywheel_serving_generate_seconds", "Generation time of one answer (queue wait excluded), per model, "
            "version and variant", ["model", "version", "variant"], buckets=_GENERATE_BUCKETS, registry=r)
        self.generate_p95 = Gauge(
            "flywheel_serving_generate_p95_seconds", "p95 generation time over the last answers of a model version "
            "(GENERATE_WINDOW of them; queue wait excluded)", ["model", "version"], registry=r)
        self.generate_outcomes = Counter(
            "flywheel_serving_generate_outcomes", "Generation requests by how they ended (finish: stop, length, "
            "timeout, error, overloaded, skipped), per model and variant", ["model", "variant", "finish"], registry=r)
        self.generate_tokens = Counter(
            "flywheel_serving_generate_tokens", "Tokens of served generations", ["model", "part"], registry=r)
        self.generate_threads = Gauge(
            "flywheel_serving_generate_threads", "Intra-op threads the model's last generation ran on "
            "(FLYWHEEL_GENERATE_THREADS; 0 = auto: what it gave)", ["model"], registry=r)
        self.generate_waiting = Gauge(
            "flywheel_serving_generate_waiting", "Generation requests admitted and not finished (running + queued)",
            registry=r)
        self.feedback_to_serving = Histogram(
            "flywheel_feedback_to_serving_seconds",
            "Data-to-deploy: from a feedback event's time to the first prediction served by a version trained on "
            "it; observed once per event, by the pod that served that version first (sum over pods)",
            ["model"], buckets=_DEPLOY_BUCKETS, registry=r)
        self.embedding_cache = Counter(
            "flywheel_serving_embedding_cache", "Embedding cache lookups of the pod's heads (distinct texts)",
            ["result"], registry=r)
