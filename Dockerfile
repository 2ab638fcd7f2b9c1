# contract-gateway: `docker build -t contract-gateway .` then
#   docker run -p 8080:8080 -v $PWD/contracts:/app/contracts:ro -v $PWD/gateway.yaml:/app/gateway.yaml:ro \
#     -e STRIPE_SECRET_KEY=... contract-gateway
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_CONFIG=/app/gateway.yaml

WORKDIR /app
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin gateway

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip install --no-cache-dir --no-deps .

# Contracts and configuration are meant to be mounted over these defaults.
COPY contracts ./contracts
COPY reconcile ./reconcile
COPY synthetic ./synthetic
COPY gateway.yaml ./gateway.yaml

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["gateway", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
