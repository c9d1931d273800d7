#!/usr/bin/env bash
# The production-stack services the integration tests (and a local "production-like" setup) need:
#   * a private PostgreSQL cluster (MLflow backend store + Optuna storage) on 127.0.0.1:<free port>;
#   * a moto S3 server (MLflow artifact store) on 127.0.0.1:<free port>;
#   * headless Chromium + chromedriver for the registry UI test.
#
#   eval "$(bash scripts/services.sh start)"   # install what is missing, start (or reuse), export the URLs
#   bash scripts/services.sh env               # print the export lines of the running services
#   bash scripts/services.sh status
#   bash scripts/services.sh running           # exit status 0 when both servers are up
#   bash scripts/services.sh stop              # stop both servers (the data folder is kept)
#   bash scripts/services.sh purge             # stop and delete the data folder
#
# Idempotent: a second `start` reuses running services. Only the `export ...` lines go to stdout, all
# logging to stderr, and the servers never hold this script's stdout (so `$(...)` returns).
# State lives in $VOLTMODELS_SERVICES_DIR (default: /tmp/voltmodels-services-<uid>); logs are there.
# Packages come from apt (root only): postgresql, chromium, chromium-driver, openjdk-17-jre-headless. Set
# VOLTMODELS_SERVICES_NO_INSTALL=1 to never install.
#
# Exported variables:
#   VOLTMODELS_TEST_PG_URL        postgresql+psycopg://voltmodels:voltmodels@127.0.0.1:<port>/voltmodels
#                                 (role voltmodels may CREATEDB: tests make one database per run)
#   VOLTMODELS_TEST_S3_ENDPOINT   http://127.0.0.1:<port>  (any AWS key id / secret is accepted)
#   VOLTMODELS_TEST_CHROMIUM      /usr/bin/chromium
#   VOLTMODELS_TEST_CHROMEDRIVER  /usr/bin/chromedriver
set -euo pipefail

STATE="${VOLTMODELS_SERVICES_DIR:-${TMPDIR:-/tmp}/voltmodels-services-$(id -u)}"
PGDATA_DIR="$STATE/pgdata"
PGSOCK="$STATE/pgsock"
PGLOG="$STATE/postgres.log"
MOTOLOG="$STATE/moto.log"
PG_ROLE=voltmodels
PG_PASSWORD=voltmodels
PG_DB=voltmodels
PYTHON="${PYTHON:-python}"

log() { echo "[services] $*" >&2; }
die() { echo "[services] error: $*" >&2; exit 1; }

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------------------------------------- install
apt_install() {
  if [ "${VOLTMODELS_SERVICES_NO_INSTALL:-0}" = 1 ]; then
    log "missing $*, and VOLTMODELS_SERVICES_NO_INSTALL=1: not installing"
    return 1
  fi
  if [ "$(id -u)" != 0 ]; then
    log "missing $*; install them (apt-get install -y $*) or run as root"
    return 1
  fi
  log "installing $* (apt)"
  if [ -z "${_APT_UPDATED:-}" ]; then
    apt-get update -q >&2
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

pg_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -n -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return 0; fi
  return 1
}

install_missing() {
  pg_bindir >/dev/null || apt_install postgresql || die "PostgreSQL is not installed"
  local want=()
  command -v chromium >/dev/null 2>&1 || want+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
  if [ ${#want[@]} -gt 0 ]; then
    apt_install "${want[@]}" fonts-liberation || log "warning: Chromium not available; the registry UI test will fail"
  fi
  # Spark (the screening engine) needs a Java runtime.
  command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless || log "warning: no Java runtime; the Spark screening test will fail"
  "$PYTHON" -c 'import moto.server, psycopg, boto3' 2>/dev/null \
    || "$PYTHON" -m pip install -q "moto[server]>=5" "psycopg[binary]>=3.1" boto3 >&2
}

# ---------------------------------------------------------------------------------------------- postgres
# initdb/postgres refuse to run as root: as root, the cluster belongs to the `postgres` user (created
# by the Debian package; created here if absent).
PG_USER=""
as_pg() {
  if [ -n "$PG_USER" ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

pg_setup_user() {
  if [ "$(id -u)" = 0 ]; then
    PG_USER=postgres
    id -u "$PG_USER" >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin "$PG_USER"
  fi
}

pg_port() { [ -f "$STATE/pg.port" ] && cat "$STATE/pg.port"; }

pg_running() {
  local bin="$1" port
  port="$(pg_port)" || return 1
  [ -d "$PGDATA_DIR" ] && as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1 \
    && "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" >/dev/null 2>&1
}

pg_start() {
  local bin port
  bin="$(pg_bindir)" || die "PostgreSQL binaries not found"
  pg_setup_user
  mkdir -p "$STATE"
  chmod 755 "$STATE"
  if pg_running "$bin"; then
    log "PostgreSQL already running on 127.0.0.1:$(pg_port) ($PGDATA_DIR)"
    return 0
  fi
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    log "initdb $PGDATA_DIR"
    rm -rf "$PGDATA_DIR"
    mkdir -p "$PGDATA_DIR"
    [ -n "$PG_USER" ] && chown "$PG_USER" "$PGDATA_DIR"
    chmod 700 "$PGDATA_DIR"
    local pwfile="$STATE/.pgpass-init"
    echo "$PG_PASSWORD" >"$pwfile"
    [ -n "$PG_USER" ] && chown "$PG_USER" "$pwfile"
    # Local socket: trust (only this user can reach the private socket dir); TCP: password.
    as_pg "$bin/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
  else
    # Stale pid file from an unclean stop.
    as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1 || rm -f "$PGDATA_DIR/postmaster.pid"
  fi
  mkdir -p "$PGSOCK"
  [ -n "$PG_USER" ] && chown "$PG_USER" "$PGSOCK"
  chmod 700 "$PGSOCK"
  touch "$PGLOG"
  [ -n "$PG_USER" ] && chown "$PG_USER" "$PGLOG"
  port="$(free_port)"
  log "starting PostgreSQL on 127.0.0.1:$port"
  # Small, test-sized server: fsync off (disposable data), enough connections for MLflow + Optuna workers.
  as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $PGSOCK -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start </dev/null >/dev/null 2>&1 || { tail -n 30 "$PGLOG" >&2; die "PostgreSQL did not start"; }
  echo "$port" >"$STATE/pg.port"
  # Role and database (idempotent).
  local psql=(as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$port" -U postgres -d postgres)
  if [ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'")" != 1 ]; then
    "${psql[@]}" -c "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >&2
  fi
  if [ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    "${psql[@]}" -c "CREATE DATABASE $PG_DB OWNER $PG_ROLE" >&2
  fi
}

pg_stop() {
  local bin
  bin="$(pg_bindir)" || return 0
  pg_setup_user
  if [ -d "$PGDATA_DIR" ] && as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
    log "stopping PostgreSQL"
    as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop </dev/null >/dev/null 2>&1 || true
  fi
  rm -f "$STATE/pg.port"
}

# ---------------------------------------------------------------------------------------------- moto (S3)
moto_port() { [ -f "$STATE/moto.port" ] && cat "$STATE/moto.port"; }

moto_running() {
  local port pid
  port="$(moto_port)" || return 1
  pid="$(cat "$STATE/moto.pid" 2>/dev/null)" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=3)" >/dev/null 2>&1
}

moto_start() {
  mkdir -p "$STATE"
  if moto_running; then
    log "moto S3 already running on 127.0.0.1:$(moto_port)"
    return 0
  fi
  local port pid
  port="$(free_port)"
  log "starting moto S3 on 127.0.0.1:$port"
  # setsid + redirections: the server outlives this script and never holds its stdout.
  setsid "$PYTHON" -m moto.server -H 127.0.0.1 -p "$port" </dev/null >"$MOTOLOG" 2>&1 &
  pid=$!
  echo "$pid" >"$STATE/moto.pid"
  echo "$port" >"$STATE/moto.port"
  for _ in $(seq 1 120); do
    if moto_running; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 30 "$MOTOLOG" >&2
  die "moto S3 server did not start"
}

moto_stop() {
  local pid
  pid="$(cat "$STATE/moto.pid" 2>/dev/null)" || true
  if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
    log "stopping moto S3 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/moto.pid" "$STATE/moto.port"
}

# ---------------------------------------------------------------------------------------------- commands
print_env() {
  local pg s3
  pg="$(pg_port)" || die "PostgreSQL is not running (run: bash scripts/services.sh start)"
  s3="$(moto_port)" || die "moto S3 is not running (run: bash scripts/services.sh start)"
  echo "export VOLTMODELS_TEST_PG_URL=postgresql+psycopg://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$pg/$PG_DB"
  echo "export VOLTMODELS_TEST_S3_ENDPOINT=http://127.0.0.1:$s3"
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "export VOLTMODELS_TEST_CHROMIUM=$(command -v chromium)"
    echo "export VOLTMODELS_TEST_CHROMEDRIVER=$(command -v chromedriver)"
  fi
}

case "${1:-start}" in
  start)
    install_missing
    pg_start
    moto_start
    print_env
    log "ready (state and logs in $STATE)"
    ;;
  env) print_env ;;
  status)
    bin="$(pg_bindir)" || bin=""
    pg_setup_user
    if [ -n "$bin" ] && pg_running "$bin"; then log "PostgreSQL: running on 127.0.0.1:$(pg_port)"; else log "PostgreSQL: stopped"; fi
    if moto_running; then log "moto S3: running on 127.0.0.1:$(moto_port)"; else log "moto S3: stopped"; fi
    ;;
  running)
    bin="$(pg_bindir)" || exit 1
    pg_setup_user
    pg_running "$bin" && moto_running
    ;;
  stop)
    moto_stop
    pg_stop
    ;;
  purge)
    moto_stop
    pg_stop
    rm -rf "$STATE"
    ;;
  *)
    echo "usage: $0 [start|env|status|running|stop|purge]" >&2
    exit 2
    ;;
esac
