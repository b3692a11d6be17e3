# One image for every hookhub function: the Knative Service picks the function with
# FUNCTION_TARGET (webhook | <provider> | events | fanout | admin | pull) and, for webhook,
# HOOKHUB_PROVIDER; the archiver Deployment runs `hookhub archiver` from the same image.
# Build from the repository root:  make image   (or: docker build -t ghcr.io/hookhub/hookhub:latest .)
ARG PYTHON_IMAGE=python:3.11-slim

# Builder: installs hookhub and its dependencies into a virtualenv. Every dependency ships wheels
# for amd64 and arm64, so no compiler is needed here either; if one ever is, it goes in this stage.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md main.py ./
COPY functions/ functions/
COPY shared/ shared/
# A regular (not editable) install: the venv alone then holds hookhub, functions and main.
# pip itself is then removed: nothing installs at run time.
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip uninstall --yes pip

# Final: the same base (so the venv's interpreter symlinks resolve), the venv and main.py only.
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOOKHUB_CONFIG=/etc/hookhub/hookhub.yaml
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# functions-framework loads ./main.py (its default source) from the working directory.
COPY main.py ./

# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080

# functions-framework reads --target from FUNCTION_TARGET and --port from PORT (Knative sets it);
# the exec form keeps it PID 1, so it receives SIGTERM directly and stops gracefully.
CMD ["functions-framework", "--asgi"]
