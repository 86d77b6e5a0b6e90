# The image the production work pools run (prefect.yaml: OPSBOOK_IMAGE). Not built here (no Docker engine):
#   docker build -t <registry>/opsbook:<git sha> . && docker push <registry>/opsbook:<git sha>
FROM python:3.11-slim
WORKDIR /opt/opsbook
COPY pyproject.toml requirements.lock ./
COPY opsbook ./opsbook
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
COPY sandbox ./sandbox
COPY systems ./systems
RUN pip install --no-cache-dir -c requirements.lock . prefect-aws prefect-kubernetes
# No credentials in the image: the ECS task role or the Kubernetes service account's IAM role supplies them.
USER 65534
