#!/usr/bin/env bash
# System packages the tests use (a real OpenSSH server, unixODBC, the PostgreSQL ODBC driver, and
# Redis, the Celery broker of the celery executor and of `crm-pipelines deploy-local`).
# Installed through apt when missing and we are allowed to; tests that need a missing one skip with
# the reason, so a machine without root still runs everything else.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v odbcinst >/dev/null 2>&1 || need+=(unixodbc)
[ -e /usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so ] || ls /usr/lib/*/odbc/psqlodbcw.so >/dev/null 2>&1 || need+=(odbc-postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "note: missing system packages (${need[*]}); tests that need them will be skipped" >&2
fi
