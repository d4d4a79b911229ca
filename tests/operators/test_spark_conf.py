from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.operators.spark_conf import check_templated_conf, why_refused

pytestmark = pytest.mark.unit

# Every Spark conf entry a template may not set, as the bad-input table of docs/security.md lists them.
REFUSED = [
    ("spark.master", "spark://elsewhere:7077"),
    ("spark.remote", "sc://elsewhere:15002"),
    ("spark.submit.deployMode", "cluster"),
    ("spark.submit.pyFiles", "/tmp/evil.py"),
    ("spark.jars", "/tmp/evil.jar"),
    ("spark.jars.packages", "org.example:evil:1.0"),
    ("spark.files", "/tmp/anything"),
    ("spark.archives", "/tmp/anything"),
    ("spark.driver.extraClassPath", "/tmp/evil"),
    ("spark.executor.extraLibraryPath", "/tmp/evil"),
    ("spark.driver.extraJavaOptions", "-javaagent:/tmp/evil"),
    ("spark.executor.defaultJavaOptions", "-Dx=1"),
    ("spark.extraListeners", "Evil"),
    ("spark.sql.queryExecutionListeners", "Evil"),
    ("spark.plugins", "Evil"),
    ("spark.sql.extensions", "Evil"),
    ("spark.sql.catalog.evil", "Evil"),
    ("spark.sql.hive.metastore.jars", "path"),
    ("spark.python.daemon.module", "evil"),
    ("spark.python.worker.module", "evil"),
    ("spark.pyspark.python", "/tmp/evil"),
    ("spark.executorEnv.PYTHONPATH", "/tmp/evil"),
    ("spark.yarn.dist.files", "/tmp/evil"),
    ("spark.kubernetes.container.image", "evil:latest"),
    ("spark.hadoop.fs.s3a.endpoint", "evil"),
    ("spark.driver.host", "10.0.0.66"),
    ("spark.driver.bindAddress", "0.0.0.0"),
    ("spark.driver.port", "4040"),
    ("spark.sparktune.callbackHost", "10.0.0.66"),
    ("spark.eventLog.dir", "/tmp/elsewhere"),
    ("spark.metrics.conf.*.sink.graphite.host", "evil"),
    ("spark.ui.filters", "Evil"),
    ("spark.authenticate", "false"),
    ("spark.network.crypto.enabled", "false"),
    ("spark.io.encryption.enabled", "false"),
    ("spark.ssl.enabled", "false"),
    ("spark.redaction.regex", "nothing"),
    # any other key, when its value names a class, a URL or a file of code
    ("spark.serializer", "org.example.EvilSerializer"),
    ("spark.sql.warehouse.dir", "s3a://elsewhere/warehouse"),
    ("spark.some.future.key", "/tmp/evil.jar"),
    (" spark.master", "local[1]"),
]
ALLOWED = [
    ("spark.executor.memory", "4g"),
    ("spark.executor.cores", "2"),
    ("spark.task.cpus", "1"),
    ("spark.sql.shuffle.partitions", "64"),
    ("spark.dynamicAllocation.enabled", "true"),
    ("spark.sql.session.timeZone", "Europe/Paris"),
    ("spark.network.timeout", "300s"),
]


@pytest.mark.parametrize(("key", "value"), REFUSED, ids=[k for k, _ in REFUSED])
def test_code_host_and_security_conf_from_a_template_is_refused_naming_the_key_and_the_fix(
    key: str, value: str
) -> None:
    with pytest.raises(TuningConfigError) as caught:
        check_templated_conf({key: value}, "{{ params.spark_conf | tojson }}", None)
    message = str(caught.value)
    assert message.startswith(f"spark_conf.{key}: came from a rendered template")
    assert "allowed_templated_spark_conf" in message and "DAG file" in message
    assert value not in message or value in key  # the value may be a secret: not echoed


@pytest.mark.parametrize(("key", "value"), ALLOWED, ids=[k for k, _ in ALLOWED])
def test_resource_settings_from_a_template_are_data(key: str, value: str) -> None:
    assert why_refused(key, value) is None
    check_templated_conf({key: value}, "{{ params.spark_conf | tojson }}", None)


def test_keys_the_dag_file_writes_out_are_the_authors() -> None:
    written = {"spark.jars": "/opt/jobs/udfs.jar", "spark.master": "local[2]"}
    check_templated_conf(dict(written), written, None)
    check_templated_conf(
        dict(written), '{"spark.jars": "/opt/jobs/udfs.jar", "spark.master": "local[2]"}', None
    )


def test_a_templated_value_under_a_written_key_is_not_the_authors() -> None:
    written = {"spark.master": "{{ params.master }}", "spark.executor.memory": "{{ params.memory }}"}
    check_templated_conf({"spark.executor.memory": "8g"}, written, None)
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.master: came from a rendered template"):
        check_templated_conf({"spark.master": "spark://elsewhere:7077"}, written, None)


def test_the_dag_author_can_allow_a_key_or_a_pattern() -> None:
    rendered = {"spark.master": "spark://other:7077", "spark.hadoop.fs.s3a.endpoint": "http://minio:9000"}
    check_templated_conf(rendered, "{{ params.c | tojson }}", ["spark.master", "spark.hadoop.fs.s3a.*"])
    check_templated_conf({"spark.master": "local[1]"}, "{{ params.c | tojson }}", "spark.master")
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.hadoop\.fs\.s3a\.endpoint: "):
        check_templated_conf(rendered, "{{ params.c | tojson }}", ["spark.master"])


@pytest.mark.parametrize("allowed", [[1], [""], 42, {"spark.master": True}])
def test_a_bad_allow_list_names_the_argument(allowed: Any) -> None:
    with pytest.raises(TuningConfigError, match="^allowed_templated_spark_conf: "):
        check_templated_conf({"spark.master": "local[1]"}, "{{ x }}", allowed)
