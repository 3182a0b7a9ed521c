# Production image: gunicorn for the web, the same image for the Celery worker and beat.
# Build: docker build -t recsys-platform .     Run: see docker-compose.yml and docs/operations.md.

# --- build stage: compile wheels (lightfm-next builds a C extension with gcc) -------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# torch from PyTorch's CPU index: PyPI's Linux torch wheel depends on several GB of CUDA libraries
# this CPU-only image never uses. Its 2.13.0+cpu satisfies pyproject's torch==2.13.0 (a pin without
# a local label ignores the candidate's "+cpu") and sorts above PyPI's 2.13.0, so pip takes it;
# every other package still comes from PyPI.
RUN pip wheel --wheel-dir /wheels --extra-index-url https://download.pytorch.org/whl/cpu .

# --- runtime stage: no compiler, non-root -------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    MODEL_ARTIFACT_DIR=/app/var/models \
    PYTHONPATH=/app
# libgomp1: OpenMP runtime that a compiled LightFM may link against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group app
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# The source tree, not the installed wheel, is what runs: settings derive BASE_DIR from their own
# location, and templates/ and static/ live beside the packages, not inside them (PYTHONPATH=/app).
COPY --chown=app:app . .
# Static files are collected at build time so the container starts fast and read-only.
# Settings need a DATABASE_URL to load (without one they would start the embedded PostgreSQL);
# nothing connects to it during collectstatic, and the throwaway SECRET_KEY never leaves this layer.
RUN DATABASE_URL=postgresql://build@localhost/build SECRET_KEY=collectstatic-only \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/var/models /app/var/metrics && chown -R app:app /app/var
USER app
EXPOSE 8000
CMD ["gunicorn", "-c", "python:config.gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
