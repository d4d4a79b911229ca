# One image for every service of docker-compose.yaml: the Airflow components (whose tasks are the
# Spark drivers), the Spark master and workers, and the MLflow server. Driver and executors must run
# the identical Python and packages, or cloudpickled objectives fail on the executors.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/default-jre \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/default-jre
# Mount points of the compose file's named volumes, writable by the airflow user (uid 50000).
RUN mkdir -p /mlflow /opt/spark-work && chown 50000:0 /mlflow /opt/spark-work

USER airflow
ARG AIRFLOW_VERSION
COPY --chown=airflow:root pyproject.toml README.md /opt/sparktune/
COPY --chown=airflow:root airflow_provider_sparktune /opt/sparktune/airflow_provider_sparktune
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "/opt/sparktune[sklearn,plot]"

# Executors start this interpreter for every trial; spark-class comes from the installed pyspark.
ENV PYSPARK_PYTHON=/usr/local/bin/python
COPY --chown=airflow:root docker/spark-class /opt/sparktune/bin/spark-class
ENV PATH="/opt/sparktune/bin:${PATH}"
