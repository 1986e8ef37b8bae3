# syntax=docker/dockerfile:1.7
#
# Atomizer images, one file, several targets (DESIGN sections 4, 5, 7):
#
#   serve (default)  ONNX Runtime on CUDA, no torch. The bundle is mounted at /models/bundle:
#                      docker build -t atomizer:0.1.0 .
#                      docker run --gpus 1 -p 127.0.0.1:8000:8000 \
#                        -v "$PWD/bundles/tweets:/models/bundle:ro" atomizer:0.1.0
#   serve-bundled    the same image with a bundle copied in, for Kubernetes (no volume to manage).
#                    The bundle comes from the named build context `bundle`:
#                      docker build --target serve-bundled --build-context bundle=bundles/tweets \
#                        -t atomizer:0.1.0-tweets .
#                    Without --build-context, the `bundle` stage below trains the small
#                    tweets bundle inside the build: slow, but needs nothing on the host.
#   train            torch + the training package for `atomize train` and `atomize export`:
#                      docker build --target train -t atomizer-train:0.1.0 .
#
# Settings are ATOM_* environment variables (service.config.Settings); nothing is baked in
# except the bundle path and the listen address.

# CUDA base for serving. The onnxruntime-gpu wheel on PyPI is built against CUDA 13.0 and
# cuDNN 9 (its CUDA provider links libcudart.so.13 / libcublas.so.13 and loads cuDNN 9 at run
# time), and CUDA minor-version compatibility lets it run on any 13.x runtime, so the base must be
# a CUDA 13 + cuDNN 9 *runtime* image. Ubuntu 24.04 because its Python (3.12) satisfies
# requires-python >= 3.11 from the distribution itself; 22.04 ships 3.10. Changing
# ONNXRUNTIME_GPU_VERSION to a release built for another CUDA major means changing this tag too.
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
# The builder and the training image share the runtime's distribution, so a virtual
# environment built here runs unchanged there (same /usr/bin/python${PYTHON_VERSION}, same glibc).
ARG PYTHON_BASE_IMAGE=ubuntu:24.04
# The distribution's own Python, named by version so the builder's venv and the runtime's
# interpreter are the same one (a venv only runs on the Python it was made with). Ubuntu 24.04
# ships 3.12; on another base pass its version, e.g. Debian trixie: --build-arg PYTHON_VERSION=3.13.
ARG PYTHON_VERSION=3.12
ARG ONNXRUNTIME_GPU_VERSION=1.31.1

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_BASE_IMAGE} AS python-base
ARG PYTHON_VERSION
# ARG, not ENV: only apt-get during the build needs it, the running container must not inherit it.
ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------
# Serving dependencies in /opt/venv: the project with its `serve` extra, and no torch.
FROM python-base AS serve-builder
ARG PYTHON_VERSION
ARG ONNXRUNTIME_GPU_VERSION
WORKDIR /src
RUN "python${PYTHON_VERSION}" -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY model ./model
COPY training ./training
COPY service ./service
COPY contract ./contract
COPY indexing ./indexing
# The ORT pin keeps the wheel's CUDA major in step with CUDA_RUNTIME_IMAGE (see above).
RUN /opt/venv/bin/pip install ".[serve]" "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
    && /opt/venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)" \
    && /opt/venv/bin/python -c "import service.app, service.cli"

# ---------------------------------------------------------------------------------------------
# Training image. torch==2.13.0 from PyPI is the CUDA build and carries its own CUDA runtime,
# cuDNN and NCCL as nvidia-* wheels; only the driver's libcuda comes from the host (injected by
# the NVIDIA container toolkit), so no CUDA base image is needed here and CUDA is not installed
# twice. The `serve` extra is included because `atomize export` checks the ONNX file with ONNX
# Runtime exactly as the service will load it.
FROM python-base AS train
ARG PYTHON_VERSION
WORKDIR /work
RUN "python${PYTHON_VERSION}" -m venv /opt/venv \
    && groupadd --system --gid 10001 atom \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/atom atom \
    && mkdir -p /models /work/runs \
    && chown 10001:10001 /models /work/runs
COPY pyproject.toml README.md ./
COPY model ./model
COPY training ./training
COPY service ./service
COPY contract ./contract
COPY indexing ./indexing
RUN /opt/venv/bin/pip install ".[train,serve]" \
    && /opt/venv/bin/python -c "import torch, onnx, training, model"
COPY --chmod=0755 deploy/build_bundle.sh /usr/local/bin/build-bundle
ENV PATH=/opt/venv/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
# `docker run atomizer-train:0.1.0 train --dataset tweets --out runs/tweets`, or the one-shot
# `build-bundle` (what docker compose's trainer runs) to train and export into /models/bundle.
ENTRYPOINT ["atomize"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
# The small tweets bundle (build-bundle) trained inside the build; replaced by
# `--build-context bundle=DIR`.
FROM train AS bundle-trained
RUN build-bundle /tmp/bundle

FROM scratch AS bundle
COPY --from=bundle-trained /tmp/bundle/ /

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_RUNTIME_IMAGE} AS runtime
ARG PYTHON_VERSION
ARG DEBIAN_FRONTEND=noninteractive
# tini is PID 1: it forwards SIGTERM to the Python process and reaps zombies, so
# `docker stop` / a Kubernetes termination reach uvicorn, which stops accepting connections,
# finishes in-flight requests and runs the app's shutdown (queue drain) before exiting.
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 atom \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/atom atom \
    && mkdir -p /models/bundle \
    && chown -R 10001:10001 /models
COPY --from=serve-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ATOM_BUNDLE=/models/bundle \
    ATOM_HOST=0.0.0.0 \
    ATOM_PORT=8000
# The copied venv runs on this stage's Python: a base whose Python differs from the builder's
# fails here, at build time, instead of at the first start.
RUN python -c "import service.app, service.cli"
USER 10001:10001
WORKDIR /home/atom
EXPOSE 8000
# Ready, not just alive: /readyz answers 503 until the bundle is loaded and the session warmed,
# so `docker compose` dependants and `docker ps` see a container that can serve. Python is the
# client because the image has no curl. The start period covers loading and warm-up.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ATOM_PORT', '8000'), timeout=2)"]
# SIGTERM (Docker's default, stated because the shutdown depends on it): uvicorn treats it as
# a graceful shutdown and drains for up to ATOM_REQUEST_TIMEOUT_MS + 1 s. Give it that long:
# `docker stop -t 40`, compose stop_grace_period, Kubernetes terminationGracePeriodSeconds.
# After draining, uvicorn re-raises the SIGTERM it caught, so Python dies of it and tini would
# report 143 (128 + 15), which Docker and Kubernetes record as a failure. `-e 143` maps exactly
# that status to 0: a stop asked for and drained exits 0; any other status passes through.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--"]
CMD ["python", "-m", "service"]

FROM runtime AS serve-bundled
COPY --from=bundle --chown=10001:10001 / /models/bundle/

# The default target: the serving image, bundle mounted at /models/bundle.
FROM runtime AS serve
