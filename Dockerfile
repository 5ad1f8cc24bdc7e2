# The harness in a CUDA devel image: Python + torch + the harness, kernels built at image build.
#
#   GPU image (default):  docker build -t decode-attn-harness .
#   CPU smoke image:      nox -s container_smoke  (BASE_IMAGE=localbase:bookworm, CPU torch)
#
# Written for the classic builder (the docker SDK cannot drive BuildKit): no RUN --mount,
# no COPY --chmod. Two stages so that the CA bundle and wheels handed in through
# ci/image-extra/ and pip's build-time config never reach the final image.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04

# ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Python, venv, a host compiler for nvcc and git (for --baseline-rev) -- from apt only when
# the base lacks them (CUDA images have g++ but no Python; the local smoke base has all).
# Versions follow the base image's distribution, so they are not pinned here.
# hadolint ignore=DL3008
RUN if command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null \
        && command -v g++ >/dev/null && command -v git >/dev/null; then \
        echo "python3, venv, g++ and git come with the base image"; \
    else \
        apt-get update \
        && apt-get install -y --no-install-recommends \
            ca-certificates g++ git python3 python3-pip python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# ---------------------------------------------------------------------------------------
FROM base AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/opt/venv/cuda/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/tmp/image-extra/wheels
# Optional CA bundle and wheels (see ci/image-extra/README.md); builder stage only.
COPY ci/image-extra/ /tmp/image-extra/
RUN mkdir -p /tmp/image-extra/wheels \
    && if [ -s /tmp/image-extra/ca-certificates.crt ]; then \
        printf '[global]\ncert = /tmp/image-extra/ca-certificates.crt\n' > /etc/pip.conf; \
    fi \
    && python3 -m venv /opt/venv

# torch: the CUDA build from the image's CUDA wheel index on GPU images; the smoke build
# passes TORCH_INDEX_URL= (PyPI + ci/image-extra/wheels) and TORCH_SPEC=torch==2.13.0+cpu.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
# The pin is the build argument (hadolint cannot see through it).
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC" \
    && python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

# nvcc from PyPI's wheels only when the base has no CUDA toolkit (the smoke base); the
# wheel's nvcc.profile looks for lib64, the wheels ship lib.
ARG NVCC_SPEC="nvidia-cuda-nvcc==13.0.* nvidia-cuda-crt==13.0.* nvidia-nvvm==13.0.* nvidia-cuda-runtime==13.0.* nvidia-cuda-cccl==13.0.*"
# NVCC_SPEC is split into words on purpose; its pins are the build argument.
# hadolint ignore=SC2086,DL3013
RUN if command -v nvcc >/dev/null; then \
        echo "nvcc from the base image: $(command -v nvcc)"; \
    else \
        pip install $NVCC_SPEC \
        && cu="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13" \
        && ln -s lib "$cu/lib64" && ln -s "$cu" /opt/venv/cuda; \
    fi \
    && nvcc --version | tail -n 2

# The harness's dependencies (+ nox), keyed on pyproject.toml only; `report` adds the PNG chart.
ARG HARNESS_EXTRAS="gpu report"
COPY pyproject.toml ci/pyproject_deps.py /tmp/deps/
# hadolint ignore=SC2086
RUN python /tmp/deps/pyproject_deps.py /tmp/deps/pyproject.toml $HARNESS_EXTRAS > /tmp/deps/requirements.txt \
    && echo "nox>=2024.4.15" >> /tmp/deps/requirements.txt \
    && pip install -r /tmp/deps/requirements.txt

# The kernels, in a layer keyed on kernels/ and the archs: a harness-only change reuses it.
# The runtime build call (python -m harness run) finds this cache because HARNESS_CUDA_ARCHS
# is kept in the final image's environment.
ARG HARNESS_CUDA_ARCHS=80,89,90a,100a
WORKDIR /workspace
COPY kernels/ kernels/
RUN if [ -f kernels/build.py ]; then \
        HARNESS_CUDA_ARCHS="$HARNESS_CUDA_ARCHS" python -m kernels.build \
        && chmod -R a+rwX kernels/_build; \
    else \
        echo "kernels/build.py not found: no kernels built"; \
    fi

# ---------------------------------------------------------------------------------------
FROM base AS final
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG HARNESS_CUDA_ARCHS=80,89,90a,100a
ARG HARNESS_UID=10001
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/opt/venv/cuda/bin:$PATH \
    PYTHONPATH=/workspace \
    HARNESS_SYSTEM_PYTHON=1 \
    HARNESS_CUDA_ARCHS=${HARNESS_CUDA_ARCHS}
# A fixed non-root user; /workspace and reports/ are writable by any uid so that
# `docker run --user $(id -u):$(id -g)` (what harness/container.py does) works too.
RUN useradd --create-home --no-log-init --uid "$HARNESS_UID" --shell /bin/bash harness \
    && mkdir -p /workspace/reports \
    && chmod 1777 /workspace /workspace/reports
COPY --from=builder /opt/venv /opt/venv
WORKDIR /workspace
COPY --from=builder /workspace/kernels/ kernels/
COPY noxfile.py pyproject.toml ./
COPY matrices/ matrices/
COPY harness/ harness/
USER ${HARNESS_UID}
CMD ["nox", "-s", "gpu_matrix"]
