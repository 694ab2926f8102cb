# stepflow: one image for the backend (`stepflow serve`) and the workers (`stepflow worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STEPFLOW_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY stepflow ./stepflow
RUN pip install -c constraints.txt ".[postgres]"
COPY examples ./examples

RUN useradd --create-home --uid 10001 stepflow
USER stepflow

ENTRYPOINT ["stepflow"]
CMD ["serve"]
