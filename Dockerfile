# syntax=docker/dockerfile:1
# Flywheel image: `flywheel` is the entrypoint, the subcommand is the container's command, e.g.
#   docker run --rm -e FLYWHEEL_KAFKA_BOOTSTRAP=... -e FLYWHEEL_DATABASE_URL=... flywheel process ingest
# Everything is installed at build time (every dependency ships a manylinux wheel, so no compiler is
# needed); nothing is downloaded when a container starts. Configuration is FLYWHEEL_* variables only.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# README.m[d]: copied when present (pyproject names it as the long description), no error when absent.
COPY pyproject.toml README.m[d] ./
COPY core ./core
COPY kinds ./kinds
COPY tasks ./tasks
COPY flywheel ./flywheel
COPY schemas ./schemas
COPY streams ./streams
COPY trainer ./trainer
COPY registry ./registry
COPY serving ./serving
COPY curation ./curation
# torch first from PyTorch's CPU index: the PyPI wheel of the same version pulls GBs of CUDA libraries
RUN pip install --upgrade pip \
    && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install . \
    && flywheel --help > /dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLYWHEEL_DATA_DIR=/var/lib/flywheel \
    FLYWHEEL_METRICS_HOST=0.0.0.0 \
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=8
# ONEDNN_PRIMITIVE_CACHE_CAPACITY: oneDNN keeps a compiled kernel per input shape (up to 1024); MiniLM
# micro-batches of varying sizes grew a serving pod by ~200 MB, 8 holds it flat at no measured cost
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 flywheel \
    && useradd --system --uid 10001 --gid flywheel --no-create-home --home-dir /var/lib/flywheel \
       --shell /usr/sbin/nologin flywheel \
    && install -d -o flywheel -g flywheel -m 0750 /var/lib/flywheel
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/flywheel
# Prometheus /metrics of `flywheel process ...` (FLYWHEEL_METRICS_PORT); the API of `flywheel serve`
# (FLYWHEEL_SERVING_PORT).
EXPOSE 9400 8000
ENTRYPOINT ["flywheel"]
CMD ["--help"]
