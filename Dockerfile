# The trainer image for Kubernetes Jobs: the same pinned dependencies as the local venv.
# Build for the nodes' architecture (the lock pins x86_64 manylinux wheels):
#   docker build --platform linux/amd64 -t <account>.dkr.ecr.<region>.amazonaws.com/expagent-trainer:<tag> .
# The Job builder (tools/runtime/job_manifest.py) sets the container command to
#   python -m tools.training.trainer --spec-json '<TrainingSpec JSON>' --job-id <job name>
# which replaces the ENTRYPOINT below; the ENTRYPOINT makes `docker run IMAGE --spec FILE` work too.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    EXPAGENT_HOME=/tmp/expagent

WORKDIR /app

# Dependencies first (cached layer): exactly the hashes in the lock, nothing resolved at build time.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# The package itself, without re-resolving dependencies.
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY tools ./tools
COPY prompts ./prompts
COPY evals ./evals
RUN pip install --no-deps . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin trainer

# Numeric UID so the kubelet can verify runAsNonRoot.
USER 10001

ENTRYPOINT ["python", "-m", "tools.training.trainer"]
