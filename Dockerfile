# The Airflow image of docker-compose.yaml: the official Airflow 3 image plus this package.
#
#   docker build -t video-aesthetics-airflow .
#
# On Linux x86_64 the default torch wheel from PyPI is the CUDA build, so the same image serves
# the CPU workers and the GPU worker (which gets the GPU from the NVIDIA Container Toolkit).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
# An ARG before FROM is out of scope after it: declared again to use it below.
ARG AIRFLOW_VERSION

USER root
COPY pyproject.toml README.md /opt/video-aesthetics/
COPY plugins/video_aesthetics /opt/video-aesthetics/plugins/video_aesthetics
# pip builds in the source tree, as the airflow user. The weights cache is a named volume mounted
# at /opt/airflow/cache: Docker copies this folder's ownership into a new volume; group 0 may write,
# as containers run as ${AIRFLOW_UID}:0.
RUN chown -R airflow:0 /opt/video-aesthetics \
    && mkdir -p /opt/airflow/cache/video-aesthetics /opt/airflow/cache/huggingface /opt/airflow/cache/torch \
    && chown -R airflow:0 /opt/airflow/cache && chmod -R g+rwX /opt/airflow/cache

USER airflow
WORKDIR /opt/video-aesthetics
# Pinning apache-airflow to the image's own version keeps pip from up- or downgrading Airflow
# while it resolves our dependencies (the official image's advice for extending it).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" ".[airflow]" \
    && python -c "import video_aesthetics, av, open_clip, torch; print('video_aesthetics', video_aesthetics.__version__, 'torch', torch.__version__)"
WORKDIR /opt/airflow
