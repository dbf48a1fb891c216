# The one image that runs preprocessing and every training phase on a CUDA GPU.
#   make image                      # docker build -t suara:<git sha> .
#   make push REGISTRY=ghcr.io/you  # prints: export SUARA_IMAGE=ghcr.io/you/suara:<git sha>
# Base: plain Debian with Python 3.11. torch 2.14.1 from PyPI ships its own CUDA 13 libraries
# (nvidia-* wheels), so a CUDA base image would only add a second copy; the host needs an NVIDIA
# driver >= 580, which `python -m infra preflight` checks at the start of every task.
# Python packages: requirements/gpu-lock.txt (the runtime part of lock.txt plus the GPU extras of
# requirements/gpu.txt: Unsloth, which train.backend=auto uses on CUDA, and bitsandbytes; resolved
# with lock.txt as constraints, so no locked version moves; no test or lint tools), installed with
# the lock as constraints. Montreal Forced Aligner comes from conda-forge (not installable from
# PyPI) in its own environment, so neither resolver can break the other.
# Expected size: ~9.8 GB unpacked (~4.6 GB compressed pull): python:3.11-slim 0.13, apt 0.06, MFA
# env ~1.3 (estimated), Python packages 8.2 (measured: the runtime set as installed 7.9, of which
# torch 1.2, its CUDA 13 wheels 3.4, triton 0.9; Unsloth's stack with bitsandbytes, xformers,
# torchao and trl 0.3 from their wheels). The old CUDA-runtime base with two conda Pythons and the
# dev tools was est. 12-15 GB. Layers go from rarely to often changed, so a code change re-pulls
# only the last small layers.

FROM mambaorg/micromamba:2.0.5 AS micromamba

FROM python:3.11.10-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAMBA_ROOT_PREFIX=/opt/conda \
    SKYPILOT_DISABLE_USAGE_COLLECTION=1 \
    PATH=$PATH:/opt/conda/envs/mfa/bin

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What SkyPilot needs inside a runtime container (ssh server for RunPod, rsync, sudo, curl, patch,
# netcat); it would otherwise apt-install them at every container start. Debian's versions move
# with security updates, so they are not pinned; the base image tag is.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl rsync openssh-client openssh-server sudo patch netcat-openbsd \
    && rm -rf /var/lib/apt/lists/*

COPY --from=micromamba /bin/micromamba /usr/local/bin/micromamba
RUN micromamba create -y -n mfa -c conda-forge montreal-forced-aligner=3.3.8 \
    && micromamba clean --all --yes

WORKDIR /app
COPY requirements/lock.txt requirements/gpu-lock.txt requirements/
RUN pip install -r requirements/gpu-lock.txt -c requirements/lock.txt

COPY pyproject.toml README.md ./
COPY infra/ infra/
COPY preprocess/ preprocess/
COPY trainer/ trainer/
COPY configs/ configs/
COPY sky/ sky/
COPY data/sample/ data/sample/
RUN pip install --no-deps --no-build-isolation -e . \
    && python -m trainer --help > /dev/null

# Non-root by default, with passwordless sudo because SkyPilot's runtime setup inside the container
# needs it. RunPod logs in as this user (SKYPILOT_RUNPOD_DOCKER_USERNAME=suara in the task files);
# Vast can only log in as root, so the task files run the container as root there.
RUN useradd --create-home --shell /bin/bash --uid 1001 suara \
    && echo "suara ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/suara \
    && chmod 0440 /etc/sudoers.d/suara \
    && chown -R suara:suara /app
USER 1001:1001
ENV HOME=/home/suara
