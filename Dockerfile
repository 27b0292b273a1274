# dpsynth batch image: `dpsynth release` as a Kubernetes Job (see docs/deploy.md).
#
#   podman build -t dpsynth:0.1.0 .                      # or: docker build (BuildKit)
#
# Build arguments
#   BASE_IMAGE   any Debian-like image with python3.11 + venv. Pin it by digest for a
#                release build (see below). CI passes the digest of a base it builds from the
#                Debian mirror with mmdebstrap, because no registry is reachable there.
#   EXTRAS       pip extras of dpsynth; the default "postgres" adds psycopg[binary] for a
#                postgresql:// ledger and is what requirements.lock covers: any other value
#                installs its extras unlocked (no hash check). Never add torch/CUDA.
#   SMARTNOISE   "true" adds the optional smartnoise-synth engines (MST/AIM/MWEM adapters)
#                the torch-free way (design.md §4): about +1 GB (jax). Default "false".
#                Not covered by requirements.lock (installed by range, without hashes).
#   VERSION, SOURCE   go into the OCI labels.
# Optional build secret `extra_ca`: a full PEM CA bundle pip should trust, for build
# machines behind a TLS-intercepting proxy:
#   --secret id=extra_ca,src=/etc/ssl/certs/ca-certificates.crt
# Without it, pip uses its own CA bundle. Nothing from the secret stays in the image.
#
# Base image: tag python:3.11-slim-bookworm (Debian 12, as CI's stand-in base built with
# mmdebstrap). It should be pinned by digest, python:3.11-slim-bookworm@sha256:<digest>, so that a
# rebuild gets the same bytes and a re-pushed tag cannot change the image. The digest is not
# written here because it could not be resolved or verified: the machines this repository is
# built and tested on reach PyPI, Debian's apt mirror and npm only, no container registry
# (docker.io, ghcr.io, quay.io, public.ecr.aws and mirror.gcr.io do not resolve), and a digest
# copied from elsewhere unverified would be a guess. Resolve it where the registry is reachable
# and pass it (docs/deploy.md, section 1):
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest}}'
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest> ...
# What is pinned here: the Debian release (bookworm, not the moving 3.11-slim, which is now
# trixie) and every Python package (requirements.lock, by version and SHA-256).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# marks the build stage's intermediate images, so CI can prune them (ci/container_e2e.sh)
LABEL org.dpsynth.stage=build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# binutils (build stage only) to strip debug symbols from the wheels' shared libraries
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY dpsynth ./dpsynth
ARG EXTRAS=postgres
ARG SMARTNOISE=false
# Install: every package from requirements.lock, pinned and hash-checked (pip refuses a file
# whose SHA-256 is not in the lock, and a dependency missing from it), wheels only, so no
# sdist's build step runs unpinned code; then dpsynth itself, built offline with the locked
# setuptools. `pip check` fails the build on an inconsistent set (before the optional
# smartnoise packages, which are installed --no-deps on purpose).
# Size (the runtime deps are ~1 GB unpacked: opendp, polars, pyarrow, scipy, pandas): drop
# the packages' own test suites (-100 MB), C/Cython sources and headers, pip/setuptools
# (-23 MB), and strip debug symbols from the big Rust extensions (opendp, polars: -90 MB).
# Libraries with an RPATH (auditwheel/patchelf output, e.g. numpy/scipy's openblas) are left
# alone: strip corrupts them. The import check below catches any other breakage.
# No .pyc files are baked in (-150 MB): a job compiles what it imports in memory at start-up,
# a few seconds against a release's minutes.
RUN --mount=type=secret,id=extra_ca,target=/run/secrets/extra_ca \
    set -eu; \
    if [ -s /run/secrets/extra_ca ]; then export PIP_CERT=/run/secrets/extra_ca; fi; \
    /opt/venv/bin/pip install --no-compile --require-hashes --only-binary=:all: \
      -r requirements.lock; \
    /opt/venv/bin/pip install --no-compile --no-deps --no-build-isolation --no-index .; \
    /opt/venv/bin/pip check; \
    if [ "${EXTRAS}" != "postgres" ]; then \
      echo "EXTRAS=${EXTRAS}: not covered by requirements.lock, installed without hashes" >&2; \
      /opt/venv/bin/pip install --no-compile ".[${EXTRAS}]"; \
    fi; \
    if [ "${SMARTNOISE}" = "true" ]; then \
      /opt/venv/bin/pip install --no-compile --no-deps smartnoise-synth==1.0.8 smartnoise-sql==1.0.10 \
      && /opt/venv/bin/pip install --no-compile 'opendp>=0.14.1,<0.15' mbi==1.1.0 \
           'disjoint-set>=0.9,<0.10' 'networkx>=3,<4' 'pandas>=2,<3' 'sqlalchemy>=2,<3' \
           antlr4-python3-runtime==4.9.3 'graphviz>=0.20,<1' 'Faker>=20'; \
    fi; \
    /opt/venv/bin/pip uninstall -q -y pip setuptools; \
    find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +; \
    find /opt/venv -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.c' -o -name '*.cc' \
      -o -name '*.h' -o -name '*.hpp' \) -delete; \
    find /opt/venv -type f -name '*.so*' ! -path '*.libs/*' -exec sh -c \
      'for f; do readelf -d "$f" 2>/dev/null | grep -q "R.*PATH" || strip --strip-unneeded "$f"; done' \
      sh {} +; \
    /opt/venv/bin/python -c 'import numpy, scipy.optimize, scipy.sparse, scipy.special, pandas, \
polars, pyarrow.parquet, opendp.prelude, matplotlib.pyplot, great_expectations, dpsynth.cli, \
dpsynth.signing'; \
    case ",${EXTRAS}," in *,postgres,*) /opt/venv/bin/python -c 'import psycopg';; esac; \
    /opt/venv/bin/dpsynth --version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=https://example.org/dpsynth
LABEL org.opencontainers.image.title="dpsynth" \
      org.opencontainers.image.description="Differentially private synthetic copies of patient tables" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOME, MPLCONFIGDIR and XDG_CACHE_HOME point into /tmp so the container runs with a read-only
# root filesystem plus a writable /tmp (emptyDir in Kubernetes, --tmpfs /tmp with podman).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    GX_ANALYTICS_ENABLED=false
RUN groupadd --gid 10001 dpsynth \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin dpsynth
COPY --from=build /opt/venv /opt/venv
# Public example schemas (no data): handy for `dpsynth schema check` and demos.
COPY schemas/diabetes130.yaml schemas/nist_excerpts.yaml /opt/dpsynth/schemas/
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["dpsynth"]
CMD ["--help"]
