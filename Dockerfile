# The pg-architect image: one console script, `pg-architect`; docker-compose.yml runs it as the exporter
# (`exporter --listen 0.0.0.0:9188`) and as the auditor (`serve`).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the package needs: never the secrets/ directory or local state.
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
COPY auditor/ auditor/
# pg_architect/exporter and pg_architect/auditor are links to the two folders above.
COPY pg_architect/ pg_architect/
RUN pip install . \
    && useradd --system --uid 10001 --create-home --home-dir /home/pgarch pgarch

USER pgarch
EXPOSE 9188 3001
ENTRYPOINT ["pg-architect"]
CMD ["exporter"]
