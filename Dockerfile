# The one image that runs preprocessing and every training phase on a CUDA GPU.
#   make image                      # docker build -t suara:<git sha> .
#   make push REGISTRY=ghcr.io/you  # then set image_id in sky/*.yaml
# Python 3.11 and Montreal Forced Aligner come from conda-forge (MFA is not installable from
# PyPI); Suara installs from the same requirements/lock.txt as `make setup`, plus the GPU extras.
# torch 2.14.1 from PyPI bundles its CUDA 13 libraries (NVIDIA driver >= 580 on the host).

FROM mambaorg/micromamba:2.0.5 AS micromamba

FROM nvidia/cuda:13.1.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAMBA_ROOT_PREFIX=/opt/conda \
    SKYPILOT_DISABLE_USAGE_COLLECTION=1 \
    WANDB_MODE=offline \
    PATH=/opt/conda/envs/suara/bin:/opt/conda/envs/mfa/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What SkyPilot needs inside a runtime container (ssh, rsync, sudo, curl); espeak-ng comes with
# the lock (espeakng-loader). Ubuntu's package versions move with security updates, so they are not pinned;
# the base image tag is.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl rsync openssh-client openssh-server sudo git patch netcat-openbsd \
        libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=micromamba /bin/micromamba /usr/local/bin/micromamba

# Two conda environments: `suara` (Python 3.11, pip packages from the lock) and `mfa` (the aligner
# with its own pinned dependencies), so neither resolver can break the other.
RUN micromamba create -y -n suara -c conda-forge python=3.11.10 \
    && micromamba create -y -n mfa -c conda-forge montreal-forced-aligner=3.3.8 \
    && micromamba clean --all --yes

WORKDIR /app
COPY requirements/ requirements/
RUN pip install -r requirements/lock.txt \
    && pip install -r requirements/gpu.txt

COPY pyproject.toml README.md ./
COPY infra/ infra/
COPY preprocess/ preprocess/
COPY trainer/ trainer/
COPY configs/ configs/
COPY sky/ sky/
COPY data/sample/ data/sample/
RUN pip install --no-deps --no-build-isolation -e . \
    && python -m trainer --help > /dev/null

# Non-root by default, with passwordless sudo because SkyPilot's runtime setup inside the
# container needs it. RunPod's SSH only works as root: there, launch with the container user
# overridden to root (README.md, "Cloud").
RUN useradd --create-home --shell /bin/bash --uid 1001 suara \
    && echo "suara ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/suara \
    && chmod 0440 /etc/sudoers.d/suara \
    && chown -R suara:suara /app
USER 1001:1001
ENV HOME=/home/suara
