# syntax=docker/dockerfile:1
# The Airflow image of docker-compose.yaml: the official Airflow 3 image plus this package, installed
# once, as a wheel, into site-packages.
#
#   docker build -t video-aesthetics-airflow .
#
# The image holds the only copy of the package: no source tree stays behind, and docker-compose.yaml
# mounts no code but dags/. A change to the package reaches the containers by rebuilding the image
# (`docker compose build && docker compose up -d`).
#
# On Linux x86_64 the default torch wheel from PyPI is the CUDA build, so the same image serves
# the CPU workers and the GPU worker (which gets the GPU from the NVIDIA Container Toolkit).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11

# Stage 1: the package's wheel, built from the sources in the build context (.dockerignore keeps
# caches and egg-info out). tests/test_compose.py builds the same wheel from the same files.
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS wheel
USER root
COPY pyproject.toml README.md /opt/video-aesthetics/
COPY plugins/video_aesthetics /opt/video-aesthetics/plugins/video_aesthetics
# The image's pip refuses to run as root; setuptools writes its build folders into the source tree.
RUN chown -R airflow:0 /opt/video-aesthetics
USER airflow
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels /opt/video-aesthetics

# Stage 2: the image the services run.
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
# An ARG before FROM is out of scope after it: declared again to use it below.
ARG AIRFLOW_VERSION

USER root
# The weights cache is a named volume mounted at /opt/airflow/cache: Docker copies this folder's
# ownership into a new volume; group 0 may write, as containers run as ${AIRFLOW_UID}:0.
RUN mkdir -p /opt/airflow/cache/video-aesthetics /opt/airflow/cache/huggingface /opt/airflow/cache/torch \
    && chown -R airflow:0 /opt/airflow/cache && chmod -R g+rwX /opt/airflow/cache

USER airflow
# The wheel is bind-mounted from stage 1 for this step only, so not even the wheel stays in a layer.
# Pinning apache-airflow to the image's own version keeps pip from up- or downgrading Airflow
# while it resolves our dependencies (the official image's advice for extending it).
RUN --mount=type=bind,from=wheel,source=/tmp/wheels,target=/tmp/wheels \
    pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "$(echo /tmp/wheels/video_aesthetics-*.whl)[airflow]" \
    && python -c "import video_aesthetics, av, open_clip, torch; print('video_aesthetics', video_aesthetics.__version__, 'from', video_aesthetics.__file__, 'torch', torch.__version__)"
