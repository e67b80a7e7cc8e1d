# The alray job image: the `alray` command and jobs/ entry points, for the CronJob, the KubeRay
# Ray pods and the spark-operator's driver and executors alike.
#
#   docker build -t alray .                                    # CPU (the default)
#   docker build -t alray:cuda --build-arg TORCH_VARIANT=cu126 .   # CUDA: torch's CUDA build
#
# The base is Apache Spark's Python image: the spark-operator starts driver and executor pods
# through its entrypoint, and its Spark must be the version of the pyspark installed here.
ARG SPARK_VERSION=4.3.0
ARG BASE_IMAGE=apache/spark:${SPARK_VERSION}-python3
FROM ${BASE_IMAGE}

ARG SPARK_VERSION
# torch's build: cpu, or a CUDA variant such as cu126 (its wheels bring the CUDA libraries; the
# node brings the driver).
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG ALRAY_UID=10001

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid ${ALRAY_UID} alray \
    && useradd --uid ${ALRAY_UID} --gid ${ALRAY_UID} --home-dir /tmp --no-create-home --shell /usr/sbin/nologin alray \
    && python3 -m venv /opt/alray/venv
ENV PATH=/opt/alray/venv/bin:${PATH} \
    PYSPARK_PYTHON=/opt/alray/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/alray/venv/bin/python \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

WORKDIR /opt/alray
# Dependencies first, so a change to the code does not reinstall torch.
RUN pip install --no-cache-dir --upgrade pip \
    && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
COPY pyproject.toml README.md ./
COPY alray/ alray/
RUN pip install --no-cache-dir "pyspark==${SPARK_VERSION}" . \
    && python -c "import alray, pyspark, ray, torch; assert pyspark.__version__ == '${SPARK_VERSION}'"
COPY jobs/ jobs/
COPY conf/ conf/

# Non-root, by number, so Kubernetes' runAsNonRoot can check it.
USER ${ALRAY_UID}:${ALRAY_UID}
