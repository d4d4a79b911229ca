from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.operators.spark_conf import (
    TEMPLATABLE_SPARK_CONF,
    VALUE_KINDS,
    check_conf_syntax,
    check_templated_conf,
    template_problem,
)

pytestmark = pytest.mark.unit

TEMPLATE = "{{ params.spark_conf | tojson }}"
KIND_OF = {key: kind for key, kind, _ in TEMPLATABLE_SPARK_CONF}
# The attack: spark-submit splits '--conf key=value' at the first '=', so this sets the
# driver's Java options and the driver JVM runs the command.
EQUALS_KEY = 'spark.driver.extraJavaOptions=-XX:MaxHeapSize=8m -XX:OnOutOfMemoryError="touch pwned" -Dx'

# Code, hosts, security and the deny-list's old gaps: none of them is on the allow-list.
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
    ("spark.serializer", "org.example.EvilSerializer"),
    ("spark.sql.warehouse.dir", "s3a://elsewhere/warehouse"),
    ("spark.some.future.key", "/tmp/evil.jar"),
    # what the deny-list let through (issue 32)
    ("spark.driver.resource.gpu.discoveryScript", "/opt/discover-gpus"),
    ("spark.executor.resource.gpu.discoveryScript", "/opt/discover-gpus"),
    ("fs.s3a.endpoint", "evil.example.com"),
    ("fs.s3a.proxy.host", "evil.example.com"),
    ("spark.local.dir", "/etc"),
    ("spark.acls.enable", "false"),
    ("spark.serializer", "org.example.lowercase"),
    ("spark.sql.session.timeZone", "Europe/Paris"),
    ("spark.io.compression.codec", "org.example.Codec"),
]
ALLOWED = [
    ("spark.executor.memory", "4g"),
    ("spark.executor.memory", "512MB"),
    ("spark.executor.cores", "2"),
    ("spark.executor.instances", 3),
    ("spark.task.cpus", "1"),
    ("spark.sql.shuffle.partitions", "64"),
    ("spark.sql.shuffle.partitions", 64),
    ("spark.dynamicAllocation.enabled", "true"),
    ("spark.dynamicAllocation.enabled", True),
    ("spark.network.timeout", "300s"),
    ("spark.executor.heartbeatInterval", "10s"),
    ("spark.locality.wait", "0"),
    ("spark.memory.fraction", "0.6"),
    ("spark.memory.fraction", 0.75),
    ("spark.sql.autoBroadcastJoinThreshold", "-1"),
    ("spark.sql.adaptive.skewJoin.skewedPartitionFactor", "5.0"),
    ("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"),
    ("spark.python.worker.reuse", "false"),
]
WRONG_KIND = [
    ("spark.executor.memory", "4g -XX:OnOutOfMemoryError=touch", "a size"),
    ("spark.executor.memory", "/tmp/evil.jar", "a size"),
    ("spark.executor.cores", "2.5", "a whole number"),
    ("spark.network.timeout", "300 s", "a duration"),
    ("spark.dynamicAllocation.enabled", "yes", "true or false"),
    ("spark.memory.fraction", "1.5", "a fraction"),
    ("spark.sql.autoBroadcastJoinThreshold", "-2", "a size or -1"),
    ("spark.sql.shuffle.partitions", "org.example.Evil", "a whole number"),
]


@pytest.mark.parametrize(("key", "value"), REFUSED, ids=[k for k, _ in REFUSED])
def test_conf_off_the_allow_list_from_a_template_is_refused_naming_the_key_why_and_the_fix(
    key: str, value: str
) -> None:
    with pytest.raises(TuningConfigError) as caught:
        check_templated_conf({key: value}, TEMPLATE, None)
    message = str(caught.value)
    assert message == (
        f"spark_conf.{key}: came from a rendered template (run conf, params, XCom or mapped values) and "
        "is not on the list of Spark conf keys a template may set, which holds only data (resources, "
        "shuffle and SQL tuning, timeouts), never code, hosts or security settings; write "
        f"{key!r} with its value in the DAG file, or, if a run conf may choose it, add {key!r} to "
        "allowed_templated_spark_conf"
    )
    assert value not in message  # the value may be a secret: not echoed


@pytest.mark.parametrize(("key", "value"), ALLOWED, ids=[f"{k}={v}" for k, v in ALLOWED])
def test_data_on_the_allow_list_from_a_template_is_used(key: str, value: Any) -> None:
    assert template_problem(key, str(value)) is None
    check_templated_conf({key: value}, TEMPLATE, None)


@pytest.mark.parametrize(("key", "value", "kind"), WRONG_KIND, ids=[f"{k}={v}" for k, v, _ in WRONG_KIND])
def test_a_value_of_the_wrong_kind_is_refused_naming_the_kind_and_an_example(
    key: str, value: str, kind: str
) -> None:
    with pytest.raises(TuningConfigError) as caught:
        check_templated_conf({key: value}, TEMPLATE, None)
    message = str(caught.value)
    assert message.startswith(
        f"spark_conf.{key}: came from a rendered template (run conf, params, XCom or mapped values) "
        f"and is not {kind}"
    )
    example = VALUE_KINDS[KIND_OF[key]][3]
    assert f"a template may set {key!r} only to {kind}" in message and f"such as {example!r}" in message
    assert value not in message


def test_every_allow_list_entry_is_an_exact_key_with_a_kind_and_a_reason() -> None:
    keys = [key for key, _, _ in TEMPLATABLE_SPARK_CONF]
    assert len(keys) == len(set(keys))
    for key, kind, reason in TEMPLATABLE_SPARK_CONF:
        assert not any(ch in key for ch in "*?[]"), key  # no globs: a later Spark key could match one
        assert kind in VALUE_KINDS and reason.strip(), key
        check_conf_syntax({key: VALUE_KINDS[kind][3]})


def test_several_refused_keys_name_the_first_off_the_list_then_the_others() -> None:
    rendered = {"spark.executor.memory": "lots", "spark.master": "spark://x:7077", "spark.jars": "/x.jar"}
    with pytest.raises(TuningConfigError) as caught:
        check_templated_conf(rendered, TEMPLATE, None)
    message = str(caught.value)
    assert message.startswith("spark_conf.spark.master: came from a rendered template")
    assert message.endswith("(also refused: 'spark.jars', 'spark.executor.memory')")


def test_the_equals_key_is_refused_written_or_templated_naming_the_key_the_reason_and_the_fix() -> None:
    expected = (
        f"spark_conf[{EQUALS_KEY!r}]: is not a Spark conf key: it contains '=': pyspark passes "
        "'--conf key=value' to spark-submit, whose launcher splits at the first '=', so the entry "
        "would set 'spark.driver.extraJavaOptions' to the rest; a Spark conf key is names of letters, "
        "digits, '_' and '-' joined by dots, such as 'spark.executor.memory': write the key alone, and "
        "what it is set to as the entry's value"
    )
    for written in (TEMPLATE, {EQUALS_KEY: "1"}):
        for allowed in (None, ["*"]):
            with pytest.raises(TuningConfigError) as caught:
                check_templated_conf({EQUALS_KEY: "1"}, written, allowed)
            assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (" spark.master", "contains whitespace"),
        ("spark.executor.memory ", "contains whitespace"),
        ("spark.executor\n.memory", "contains a newline"),
        ("spark.executor.memory\x00", "contains a NUL"),
        ("spark.\x1bx", "contains a control character"),
        ("spark.'x'", "contains a quote"),
        ('spark."x"', "contains a quote"),
        ("spark..master", "has an empty name between dots"),
        (".spark.master", "has an empty name between dots"),
        ("spark.master.", "has an empty name between dots"),
        ("", "is empty"),
        ("spark.m@ster", "contains '@', which no Spark conf key has"),
        ("spark.mäster", "contains 'ä', which no Spark conf key has"),
        ("spark.x;y", "contains ';', which no Spark conf key has"),
    ],
)
def test_a_key_that_is_not_a_spark_key_is_refused_even_when_written(key: str, why: str) -> None:
    with pytest.raises(TuningConfigError) as caught:
        check_templated_conf({key: "1"}, {key: "1"}, ["*"])
    assert str(caught.value).startswith(f"spark_conf[{key!r}]: is not a Spark conf key: it {why}; ")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("4g\n-Dx=1", "a newline"),
        ("4g\r", "a carriage return"),
        ("4g\x00x", "a NUL"),
        ("a\x85b", "a control character"),
    ],
)
def test_a_value_with_a_line_break_or_nul_is_refused_even_when_written(value: str, why: str) -> None:
    key = "spark.driver.extraJavaOptions"
    with pytest.raises(TuningConfigError) as caught:
        check_templated_conf({key: value}, {key: value}, None)
    assert str(caught.value) == (
        f"spark_conf.{key}: the value contains {why}, which would cut the option where Spark's launcher "
        "reads it; write the value on one line, without control characters"
    )


@pytest.mark.parametrize(
    "key",
    [
        "spark.kubernetes.driver.label.app.kubernetes.io/name",
        "spark.metrics.conf.*.sink.console.class",
        "spark.hadoop.fs.s3a.bucket.my-bucket.endpoint",
        "spark.executorEnv.PYTHON_PATH",
        "spark.kubernetes.executor.secrets.spark-secret",
    ],
)
def test_real_spark_keys_with_dashes_slashes_and_stars_are_keys(key: str) -> None:
    check_conf_syntax({key: "x"})


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
    # the template text itself, sent back by a run conf, is not the author's value either
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.master: came from a rendered template"):
        check_templated_conf({"spark.master": "{{ params.master }}"}, written, None)


def test_a_written_value_that_is_not_plain_data_is_not_the_authors() -> None:
    class Resolved:  # stands for an XComArg: what it resolves to is not in the DAG file
        def __str__(self) -> str:
            return "spark://elsewhere:7077"

    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.master: came from a rendered template"):
        check_templated_conf({"spark.master": "spark://elsewhere:7077"}, {"spark.master": Resolved()}, None)


def test_a_mapped_tasks_values_are_not_the_authors() -> None:
    """``written`` is None for a mapped task: every entry is checked as templated."""
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.jars: came from a rendered template"):
        check_templated_conf({"spark.jars": "/tmp/evil.jar"}, None, None)


def test_the_dag_author_can_allow_a_key_or_a_pattern_with_any_value() -> None:
    rendered = {"spark.master": "spark://other:7077", "spark.hadoop.fs.s3a.endpoint": "http://minio:9000"}
    check_templated_conf(rendered, TEMPLATE, ["spark.master", "spark.hadoop.fs.s3a.*"])
    check_templated_conf({"spark.master": "local[1]"}, TEMPLATE, "spark.master")
    check_templated_conf({"spark.executor.memory": "whatever"}, TEMPLATE, ["spark.executor.memory"])
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.hadoop\.fs\.s3a\.endpoint: "):
        check_templated_conf(rendered, TEMPLATE, ["spark.master"])


@pytest.mark.parametrize("allowed", [[1], [""], 42, {"spark.master": True}])
def test_a_bad_allow_list_names_the_argument(allowed: Any) -> None:
    with pytest.raises(TuningConfigError, match="^allowed_templated_spark_conf: "):
        check_templated_conf({"spark.master": "local[1]"}, "{{ x }}", allowed)


# -- generated keys and values ----------------------------------------------------------------------

# Keys near the allow-list (its keys, cut, extended, re-cased, with a suffix) and keys from an
# alphabet with what attacks use: '=', quotes, whitespace, '@', controls, unicode, dots.
ATTACK_CHARS = "=\"' \t\n\r\x00@:/\\;$`{}[]*?.-_é\u2028ſK"
_ATTACK_ALPHABET = st.sampled_from(list(ATTACK_CHARS)) | st.characters(
    codec="utf-8", exclude_categories=("Cs",)
)
_KNOWN = st.sampled_from([key for key, _, _ in TEMPLATABLE_SPARK_CONF])
keys = st.one_of(
    _KNOWN,
    st.builds(lambda k, s: k + s, _KNOWN, st.text(_ATTACK_ALPHABET, min_size=1, max_size=12)),
    st.builds(lambda s, k: s + k, st.text(_ATTACK_ALPHABET, min_size=1, max_size=4), _KNOWN),
    st.builds(lambda k, i: k[:i], _KNOWN, st.integers(0, 40)),
    _KNOWN.map(str.lower),
    _KNOWN.map(str.upper),
    st.text(_ATTACK_ALPHABET, max_size=30),
    st.from_regex(r"spark(\.[a-zA-Z]{1,8}){1,4}", fullmatch=True),
)
_KIND_EXAMPLES = st.sampled_from([example for _, _, _, example in VALUE_KINDS.values()])
values = st.one_of(
    _KIND_EXAMPLES,
    st.builds(lambda v, s: v + s, _KIND_EXAMPLES, st.text(_ATTACK_ALPHABET, min_size=1, max_size=12)),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(_ATTACK_ALPHABET, max_size=30),
    st.from_regex(r"-?[0-9]{1,5}(\.[0-9]{1,3})?([a-zA-Z]{1,3})?", fullmatch=True),
)
author_lists = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from(["spark.master", "spark.hadoop.*", "spark.executor.*", "*", "fs.s3a.*"]), max_size=3
    ),
)
PROPERTY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def author_allows(key: str, allowed: list[str] | None) -> bool:
    return any(fnmatch.fnmatchcase(key.lower(), pattern.lower()) for pattern in allowed or ())


def spark_key(key: str) -> bool:
    """Dot-separated names: the first of ASCII letters, digits, '_', '-' starting with a letter;
    the others may also hold '*' and '/'."""
    first, *rest = key.split(".")
    name = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    return (
        first[:1].isascii()
        and first[:1].isalpha()
        and set(first) <= name
        and all(part and set(part) <= name | {"*", "/"} for part in rest)
    )


def plain(text: str) -> bool:
    """What a value may hold at all: no line break, NUL or other control character."""
    return not any(
        ord(ch) < 32 and ch != "\t" or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in text
    )


@PROPERTY
@given(key=keys, value=values, allowed=author_lists)
def test_a_templated_entry_passes_only_if_an_allow_list_has_its_key_and_its_value_is_of_its_kind(
    key: str, value: Any, allowed: list[str] | None
) -> None:
    try:
        check_templated_conf({key: value}, TEMPLATE, allowed)
    except TuningConfigError as err:
        passed, message = False, str(err)
    else:
        passed, message = True, ""
    text = str(value)
    on_list = key in KIND_OF and VALUE_KINDS[KIND_OF[key]][0].fullmatch(text) is not None
    assert passed == (spark_key(key) and plain(text) and (on_list or author_allows(key, allowed))), message
    if passed:
        assert "=" not in key and not any(ch.isspace() for ch in key) and plain(text)
    else:
        assert message.startswith((f"spark_conf.{key}: ", f"spark_conf[{key!r}]: "))


@PROPERTY
@given(
    key=st.builds(
        lambda head, bad, tail: head + bad + tail,
        st.text(_ATTACK_ALPHABET, max_size=10),
        st.sampled_from(list("= \t\n\r\x00\x0b\x1f\x7f\u2028\"'`")),
        st.text(_ATTACK_ALPHABET, max_size=10),
    ),
    value=values,
)
def test_a_key_with_equals_whitespace_quotes_or_controls_is_refused_even_when_written_and_allowed(
    key: str, value: Any
) -> None:
    with pytest.raises(TuningConfigError, match=r"^spark_conf\[.*\]: is not a Spark conf key: it "):
        check_templated_conf({key: value}, {key: value}, ["*"])


@PROPERTY
@given(
    key=_KNOWN,
    head=st.text(_ATTACK_ALPHABET, max_size=10),
    bad=st.sampled_from(["\n", "\r", "\x00", "\r\n"]),
    tail=st.text(_ATTACK_ALPHABET, max_size=10),
)
def test_a_value_with_a_line_break_or_nul_never_passes(key: str, head: str, bad: str, tail: str) -> None:
    value = head + bad + tail
    for written, allowed in ((TEMPLATE, None), ({key: value}, None), (TEMPLATE, ["*"])):
        with pytest.raises(
            TuningConfigError, match=rf"^spark_conf\.{key.replace('.', '[.]')}: the value contains "
        ):
            check_templated_conf({key: value}, written, allowed)
