# syntax=docker/dockerfile:1
# GPU image: Ray 2.60.0 + vLLM 0.32.0 + r1-platform, for the KubeRay head and GPU worker groups.
#
# Base: Ray's own CUDA image, tag scheme {ray}-py{python}-cu{cuda}. CUDA 13.0 because
# vllm==0.32.0 pins torch==2.13.0, whose PyPI wheels are built against CUDA 13.0 (cu130
# Ray images are published since mid-2026). The image runs Python 3.11 from
# /home/ray/anaconda3 as user "ray", uid 1000, gid 100.
#
# DIGEST NOT YET RESOLVED: the machine that wrote this file reaches no container registry,
# and no published digest of this tag could be found. The all-zero default below is a
# deliberate fail-closed placeholder: a build with it stops at the pull instead of running an
# unverified base. Resolve the digest once, review it and commit it here:
#   docker buildx imagetools inspect rayproject/ray:2.60.0-py311-cu130 \
#     --format '{{.Manifest.Digest}}'
# or pass it for one build: --build-arg RAY_BASE_DIGEST=sha256:<digest>.
ARG RAY_BASE_DIGEST=sha256:0000000000000000000000000000000000000000000000000000000000000000
FROM rayproject/ray:2.60.0-py311-cu130@${RAY_BASE_DIGEST}

USER 1000:100
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Every distribution pinned; the lock is resolved for this exact target by docker/lock.py.
# Wheels only, so no sdist runs arbitrary build code here.
# /tmp/src is made here, by the build user: pip builds the project inside its source tree,
# and a directory that COPY creates may be root's.
COPY docker/requirements-gpu.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements.lock \
    && mkdir /tmp/src

# The project itself: its dependencies are all in the lock, and its build backend
# (setuptools) is pinned there too, hence no build isolation (which would fetch an unpinned
# setuptools). The source tree is removed once installed.
COPY --chown=1000:100 pyproject.toml README.md /tmp/src/
COPY --chown=1000:100 platform /tmp/src/platform
COPY --chown=1000:100 serve_apps /tmp/src/serve_apps
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/src \
    && rm -rf /tmp/src \
    && python -c "import vllm, ray, transformers, r1platform, serve_apps"

# Job scripts and example configs are run by relative path (`python jobs/grpo.py`); they stay
# root-owned, read-only to the runtime user.
WORKDIR /app
COPY jobs /app/jobs
COPY configs /app/configs
