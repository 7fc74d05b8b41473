#!/usr/bin/env bash
# What `make test` needs besides Python, installed and running:
#   - PostgreSQL on 127.0.0.1:5432, user postgres without a password, database `test`
#     (or CONVEYOR_TEST_POSTGRES_URL pointing at one you run: then it is left alone);
#   - Redis on 127.0.0.1:6379 (or CONVEYOR_TEST_REDIS_URL), and redis-cli and
#     redis-sentinel for the Cluster and Sentinel the tests start on free ports;
#   - Chromium at /usr/bin/chromium for the dashboard's browser tests (or
#     CONVEYOR_TEST_CHROMIUM); Playwright never downloads a browser.
# Missing packages are installed with apt-get on Debian/Ubuntu, as root or through
# `sudo -n`; elsewhere the script says what to install. It exits 1 when PostgreSQL or
# Redis stays unreachable (the tests would fail on them with CI=true).
set -u

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    return 1
  fi
}

# apt_install PACKAGE...: install with apt-get (refreshing the package lists once if needed).
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $* here (no apt-get): install it with your package manager (see README.md)" >&2
    return 1
  fi
  echo "installing $* with apt-get..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  as_root apt-get update -q >/dev/null 2>&1 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  echo "could not install $* with apt-get (needs root or password-less sudo)" >&2
  return 1
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }

# -- PostgreSQL ---------------------------------------------------------------------------
if [ -z "${CONVEYOR_TEST_POSTGRES_URL:-}" ]; then
  fresh_pg=false
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_up; then
    apt_install postgresql postgresql-client && fresh_pg=true
  fi
  if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "starting PostgreSQL..."
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
    if [ -n "$version" ]; then
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null ||
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  if pg_up && $fresh_pg; then
    # A fresh Debian cluster asks for a password over TCP: let the local test user in
    # without one (only on a cluster this script just installed).
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba" &&
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  fi
  if pg_up; then
    if ! psql -h 127.0.0.1 -U postgres -w -d postgres -tAc "select 1" >/dev/null 2>&1; then
      echo "PostgreSQL on 127.0.0.1:5432 refuses user postgres without a password:" \
        "allow it (pg_hba.conf trust for 127.0.0.1) or set CONVEYOR_TEST_POSTGRES_URL" >&2
    elif [ -z "$(psql -h 127.0.0.1 -U postgres -w -d postgres -tAc "select 1 from pg_database where datname = 'test'")" ]; then
      echo "creating the PostgreSQL database test..."
      psql -h 127.0.0.1 -U postgres -w -d postgres -qc "create database test" || true
    fi
  fi
  pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
fi

# -- Redis --------------------------------------------------------------------------------
if [ -z "${CONVEYOR_TEST_REDIS_URL:-}" ]; then
  if ! command -v redis-server >/dev/null 2>&1 && ! redis_up; then
    apt_install redis-server || true
  fi
  if ! redis_up && command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis..."
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
  fi
  redis_up || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
fi

# -- Redis Cluster and Sentinel (the tests start their own servers on free ports) ---------
if ! command -v redis-sentinel >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  apt_install redis-sentinel redis-tools || echo "no redis-sentinel: the Sentinel tests will fail" >&2
fi

# -- PgBouncer (the tests start their own, in transaction pooling mode, on a free port) ----
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  apt_install pgbouncer || echo "no pgbouncer: the PgBouncer tests will fail" >&2
fi

# -- Chromium (the dashboard's browser tests drive Debian's package) ------------------------
chromium="${CONVEYOR_TEST_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  apt_install chromium || echo "no Chromium at $chromium: the browser tests will fail" \
    "(install Chromium, or point CONVEYOR_TEST_CHROMIUM at a Chromium or Chrome binary)" >&2
fi
exit 0
