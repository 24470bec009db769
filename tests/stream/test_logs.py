"""Logs never carry a secret, whoever logs it; the Kafka client's debug output is opt-in."""

from __future__ import annotations

import contextlib
import io
import json
import logging

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from stream.logs import setup_logging

SECRET = 's3cr3t-"pass\\word'


def test_secrets_are_redacted_in_text_json_and_tracebacks() -> None:
    for fmt in ("text", "json"):
        out = io.StringIO()
        setup_logging(fmt, secrets=[SECRET], stream=out)
        log = logging.getLogger("lorastream.test")
        log.warning("connecting with %s", SECRET)
        try:
            raise RuntimeError(f"auth failed for {SECRET}")
        except RuntimeError:
            log.exception("boom")
        text = out.getvalue()
        assert SECRET not in text
        assert json.dumps(SECRET)[1:-1] not in text
        assert text.count("***") >= 2


def test_the_kafka_clients_debug_configuration_line_is_redacted_and_opt_in() -> None:
    def client_log(debug_kafka: bool) -> str:
        out = io.StringIO()
        setup_logging("text", verbose=True, secrets=[SECRET], debug_kafka=debug_kafka, stream=out)
        with contextlib.suppress(KafkaError):
            KafkaAdminClient(
                bootstrap_servers="127.0.0.1:1",
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                sasl_plain_username="u",
                sasl_plain_password=SECRET,
                bootstrap_timeout_ms=1000,
            ).close()  # it logs its configuration at DEBUG
        return out.getvalue()

    quiet = client_log(debug_kafka=False)
    assert "sasl_plain_password" not in quiet, "-v alone keeps the client's DEBUG output out"
    loud = client_log(debug_kafka=True)
    assert "sasl_plain_password" in loud
    assert SECRET not in loud


def test_a_network_error_the_kafka_client_logs_is_one_line_and_the_workers_own_keep_traces() -> (
    None
):
    out = io.StringIO()
    setup_logging("text", stream=out)
    for name in ("kafka.net.transport", "kafka.net.selector", "lorastream.test"):
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            logging.getLogger(name).exception("Error receiving %s", "network data")
    transport, client, own = out.getvalue().split(" ERROR ")[1:]
    assert "Traceback" not in transport
    assert "Error receiving network data: ConnectionResetError: [Errno 104]" in transport
    assert "Traceback" in client, "the client's other errors (its I/O loop's) keep their stack"
    assert "Traceback" in own, "lorastream's own errors keep their stack"

    out = io.StringIO()
    setup_logging("text", debug_kafka=True, stream=out)
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        logging.getLogger("kafka.net.transport").exception("Error receiving network data")
    assert "Traceback" in out.getvalue(), "debug_kafka shows the client's stack"

    out = io.StringIO()
    setup_logging("text", stream=out)
    transport = logging.getLogger("kafka.net.transport")
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError as exc:
        transport.exception("Error sending request data: %s", exc)  # the error in the message
        # malformed: the handler reports it on stderr, as it would without the filter;
        # the call, on the client's I/O thread, does not raise
        transport.exception("Error with %s and %s", "one argument")
    (sent,) = out.getvalue().split(" ERROR ")[1:]
    assert sent.count("Connection reset by peer") == 1
    assert "(ConnectionResetError)" in sent
    assert "Traceback" not in sent
