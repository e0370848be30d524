# hetuflow server image.
#   docker build -t hetuflow-server .
#   docker run -d --name hetuflow -p 8080:8080 \
#     -e DATABASE_URL=postgresql://user:pass@host:5432/hetuflow hetuflow-server
# The server listens on 0.0.0.0, so auth is on: make the first admin token with
#   docker exec hetuflow hetuflow-server create-token --role admin --name ops
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HETUFLOW_SERVER__BIND_ADDRESS=0.0.0.0:8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /app --shell /usr/sbin/nologin hetuflow \
    && mkdir -p /data && chown hetuflow /data

USER hetuflow
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
# Without DATABASE_URL the server uses SQLite in /data/hetuflow.db (mount a volume on /data).
ENTRYPOINT ["hetuflow-server"]
CMD ["start"]
