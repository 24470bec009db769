"""``python -m deploy.kafka fetch`` fetches the broker jars; ``... run`` runs a broker
in the foreground until Ctrl-C and prints its bootstrap address."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from deploy.kafka.broker import KafkaSetupError, LocalKafka, fetch_jars


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    try:
        if command == "fetch":
            print(fetch_jars())
            return 0
        if command == "run":
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with LocalKafka() as kafka:
                print(f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    stop.wait()
            return 0
    except KafkaSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m deploy.kafka [fetch|run]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
