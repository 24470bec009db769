#!/usr/bin/env bash
# Installs Debian's prometheus package (prometheus and promtool) when they are missing.
# The tests start their own Prometheus on loopback; nothing is enabled as a service.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "prometheus/promtool are missing and installing them needs root:" \
            "apt-get install prometheus" >&2; exit 1
  fi
}
as_root apt-get update -q
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
# Debian starts the service where it can; the tests want no stray server.
(as_root service prometheus stop || true) >/dev/null 2>&1
