"""FastAPI dependencies as ``Annotated`` aliases: routes declare what they use, tests inject it. They only
read ``app.state``, so they are ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a
thread hop on every request."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from core.settings import FlywheelSettings
from registry import ModelRegistry
from serving.control import Admin
from serving.exceptions import AdminDisabled, NotReady
from serving.metrics import ServingMetrics
from serving.publisher import FeedbackPublisher, PredictionPublisher
from serving.runtime import Runtime
from serving.services import Services


async def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("the app is starting")
    return cast(Services, services)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(request: Request) -> FlywheelSettings:
    return cast(FlywheelSettings, request.app.state.settings)


async def get_metrics(request: Request) -> ServingMetrics:
    return cast(ServingMetrics, request.app.state.metrics)


async def get_runtime(services: ServicesDep) -> Runtime:
    return services.runtime


async def get_registry(services: ServicesDep) -> ModelRegistry:
    return services.registry


async def get_publisher(services: ServicesDep) -> PredictionPublisher:
    return services.publisher


async def get_feedback(services: ServicesDep) -> FeedbackPublisher:
    return services.feedback


async def get_admin(request: Request) -> Admin:
    admin = getattr(request.app.state, "admin", None)
    if admin is None:
        raise AdminDisabled("admin routes are off on this pod: no FLYWHEEL_ADMIN_TOKEN, or no database")
    return cast(Admin, admin)


SettingsDep = Annotated[FlywheelSettings, Depends(get_settings)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
PublisherDep = Annotated[PredictionPublisher, Depends(get_publisher)]
FeedbackDep = Annotated[FeedbackPublisher, Depends(get_feedback)]
AdminDep = Annotated[Admin, Depends(get_admin)]
