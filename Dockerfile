# The image the production work pools run (prefect.yaml: OPSBOOK_IMAGE). Not built here (no Docker engine):
#   docker build -t <registry>/opsbook:<git sha> . && docker push <registry>/opsbook:<git sha>
# The runtime only: the packages pyproject.toml lists, the inventories (systems/, shipped as package data) and the
# production extra (the prefect-aws / prefect-kubernetes workers), all pinned by requirements.lock. No moto, no
# sandbox/ or bench/ (development: the `sandbox` extra and a checkout). tests/test_packaging.py checks this file.
FROM python:3.11-slim
WORKDIR /opt/opsbook
COPY pyproject.toml requirements.lock ./
COPY opsbook ./opsbook
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
COPY systems ./systems
# Non-editable; the sources stay in /opt/opsbook because prefect.yaml's entrypoints (flows/NAME.py:flow) are paths there.
RUN pip install --no-cache-dir -c requirements.lock '.[production]' && rm -rf build opsbook.egg-info
# No credentials in the image: the ECS task role or the Kubernetes service account's IAM role supplies them.
USER 65534
