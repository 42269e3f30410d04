"""Serving pods: the predict and feedback API, live model swaps, canary and shadow traffic.

``create_app(settings)`` builds the FastAPI app; ``serve(settings, stop_event)`` runs it with uvicorn."""

from serving.app import create_app, serve
from serving.exceptions import (
    ChecksumMismatch,
    InvalidInput,
    ModelLoadError,
    NotReady,
    QueueFull,
    ServingError,
)
from serving.metrics import ServingMetrics
from serving.publisher import FeedbackPublisher, PredictionPublisher
from serving.router import Route, bucket, route
from serving.runtime import Deployment, Desired, LoadedModel, LoadFailure, ModelLoader, Runtime
from serving.services import Services
from serving.watcher import ModelWatcher

__all__ = [
    "ChecksumMismatch",
    "Deployment",
    "Desired",
    "FeedbackPublisher",
    "InvalidInput",
    "LoadFailure",
    "LoadedModel",
    "ModelLoadError",
    "ModelLoader",
    "ModelWatcher",
    "NotReady",
    "PredictionPublisher",
    "QueueFull",
    "Route",
    "Runtime",
    "Services",
    "ServingError",
    "ServingMetrics",
    "bucket",
    "create_app",
    "route",
    "serve",
]
