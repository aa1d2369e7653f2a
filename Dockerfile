# The project's image: the `api` service (default command) and the `trainer` service
# (docker-compose.yml overrides the command). See docs/deployment.md.
#
# Same Python as pyproject's requires-python (tests/test_compose.py checks it).
FROM python:3.11-slim

# Where the torch wheel comes from. PyPI's Linux torch wheel is the CUDA build and drags in
# several GB of nvidia-* wheels, so the default is PyTorch's CPU-only index; the GPU override
# (docker-compose.gpu.yml) passes a CUDA index instead. The version is not chosen here: it is
# the pin in constraints.txt (torch==2.13.0), which matches 2.13.0+cpu and 2.13.0+cuXXX alike
# because a pin without a local label ignores the candidate's local label (PEP 440).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid so files the trainer writes into mounted volumes have a predictable owner.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

WORKDIR /app

# torch first and on its own: it is by far the largest layer and changes only with the pin,
# so source edits do not re-download it. --index-url (not --extra-index-url) keeps pip from
# weighing PyPI's CUDA build against the wanted variant.
COPY constraints.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" -c constraints.txt torch

# The source stays in /app after the install: the trainer's command names config files by
# their repository path (pipelines/configs/...), and /app belongs to the app user so the
# pipeline can write its data and run directories next to them.
COPY --chown=app:app . .
# /var/cache/latent-ode: the service's model cache, owned by app so that the named volume
# compose mounts there (initialised from this directory) is writable.
RUN pip install -c constraints.txt . \
    && chown app:app /app \
    && install -d -o app -g app /var/cache/latent-ode

USER app

EXPOSE 8000

# /readyz answers 200 only once a model is loaded; urlopen raises on any other status, which
# makes the check fail. Python's urllib because the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

CMD ["latent-ode", "serve", "--host", "0.0.0.0", "--port", "8000"]
