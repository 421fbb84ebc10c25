#!/usr/bin/env bash
# The PostgreSQL anchor of WORKLOAD.md, on this machine: PostgreSQL 15 with a synchronous
# streaming standby on the same box, ACCOUNTS accounts, CLIENTS pgbench clients for DURATION
# seconds (ports 25432 and 25433, outside the ephemeral range), mix charge 60% / top-up 25% / balance query 15%, each one statement. Prints the
# transactions a second, p99, and the box's busy CPU microseconds and context switches per
# transaction, the figures `yinyi-loadtest --mix anchor` prints for yinyi. Run them one after
# the other on an otherwise idle machine and compare the ratios, never figures of other days.
#
#   ACCOUNTS=1000000 CLIENTS=32 DURATION=60 scripts/pg-anchor.sh      (make pg-anchor)
#   KEEP=1 keeps the servers' directory (logs, pgbench output) for a look afterwards.
set -euo pipefail

ACCOUNTS=${ACCOUNTS:-1000000}
CLIENTS=${CLIENTS:-32}
DURATION=${DURATION:-60}
PGBIN=/usr/lib/postgresql/15/bin

if [ ! -x "$PGBIN/initdb" ] || ! command -v pgbench >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 postgresql-client-15
    else
        echo "pg-anchor: needs PostgreSQL 15 and pgbench: apt-get install postgresql-15" >&2
        exit 2
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "pg-anchor: run as root (the servers run as the postgres user)" >&2
    exit 2
fi

DIR=$(mktemp -d /tmp/yinyi-pg-anchor-XXXXXX)
chown postgres: "$DIR"
as_pg() { runuser -u postgres -- "$@"; }
stop() {
    as_pg "$PGBIN/pg_ctl" -D "$DIR/standby" -m immediate stop >/dev/null 2>&1 || true
    as_pg "$PGBIN/pg_ctl" -D "$DIR/primary" -m immediate stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap stop EXIT

echo "PostgreSQL 15, primary and synchronous standby in $DIR …"
as_pg "$PGBIN/initdb" -D "$DIR/primary" -A trust -U postgres >/dev/null
cat >>"$DIR/primary/postgresql.conf" <<EOF
port = 25432
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_buffers = 512MB
max_connections = 100
wal_level = replica
max_wal_senders = 4
synchronous_commit = on
synchronous_standby_names = 'standby'
EOF
echo "host replication all 127.0.0.1/32 trust" >>"$DIR/primary/pg_hba.conf"
as_pg "$PGBIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w start >/dev/null
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p 25432 -U postgres -D "$DIR/standby" -X stream -R
echo "port = 25433" >>"$DIR/standby/postgresql.conf"
# After the primary_conninfo that -R wrote (the last one wins): named, so it is synchronous.
echo "primary_conninfo = 'host=127.0.0.1 port=25432 user=postgres application_name=standby'" \
    >>"$DIR/standby/postgresql.auto.conf"
as_pg "$PGBIN/pg_ctl" -D "$DIR/standby" -l "$DIR/standby.log" -w start >/dev/null
psql_p() { as_pg psql -h "$DIR" -p 25432 -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 1 100); do
    [ "$(psql_p -c "select sync_state from pg_stat_replication")" = sync ] && break
    sleep 0.1
done
[ "$(psql_p -c "select sync_state from pg_stat_replication")" = sync ] || {
    echo "pg-anchor: the standby never became synchronous" >&2
    exit 1
}

echo "loading $ACCOUNTS accounts with 300.00 each …"
psql_p -c "create table accounts (id int primary key, balance numeric(14,2) not null)"
psql_p -c "insert into accounts select g, 300.00 from generate_series(1, $ACCOUNTS) g"
psql_p -c "vacuum analyze accounts"

# One statement each, as WORKLOAD.md's anchor: a charge of 10.00–320.00 (refused, and nothing
# changed, when the balance is short), a top-up of 100.00, a balance query.
cat >"$DIR/charge.sql" <<'EOF'
\set aid random(1, :accounts)
\set cents random(1000, 32000)
UPDATE accounts SET balance = balance - :cents / 100.0 WHERE id = :aid AND balance >= :cents / 100.0;
EOF
cat >"$DIR/topup.sql" <<'EOF'
\set aid random(1, :accounts)
UPDATE accounts SET balance = balance + 100.00 WHERE id = :aid;
EOF
cat >"$DIR/query.sql" <<'EOF'
\set aid random(1, :accounts)
SELECT balance FROM accounts WHERE id = :aid;
EOF
chown postgres: "$DIR"/*.sql

busy() { awk '/^cpu /{print ($2+$3+$4+$7+$8+$9)}' /proc/stat; }
system() { awk '/^cpu /{print $4}' /proc/stat; }
switches() { awk '/^ctxt/{print $2}' /proc/stat; }
ticks=$(getconf CLK_TCK)
b0=$(busy); s0=$(system); c0=$(switches)
echo "pgbench: $CLIENTS clients for ${DURATION}s …"
(cd "$DIR" && as_pg pgbench -h "$DIR" -p 25432 -U postgres -n -c "$CLIENTS" -j 2 \
    -T "$DURATION" -D accounts="$ACCOUNTS" -l --log-prefix="$DIR/tx" \
    -f "$DIR/charge.sql@60" -f "$DIR/topup.sql@25" -f "$DIR/query.sql@15" postgres) \
    >"$DIR/pgbench.out" 2>&1 || { cat "$DIR/pgbench.out"; exit 1; }
b1=$(busy); s1=$(system); c1=$(switches)

grep -E "^(tps|number of transactions actually processed|latency average)" "$DIR/pgbench.out"
cat "$DIR"/tx.* | awk '{print $3}' | sort -n >"$DIR/latencies"
n=$(wc -l <"$DIR/latencies")
p99=$(awk -v n="$n" 'NR == int(n * 0.99) + 1 {printf "%.2f", $1 / 1000; exit}' "$DIR/latencies")
p50=$(awk -v n="$n" 'NR == int(n * 0.5) + 1 {printf "%.2f", $1 / 1000; exit}' "$DIR/latencies")
awk -v n="$n" -v d="$DURATION" -v b="$((b1 - b0))" -v s="$((s1 - s0))" -v c="$((c1 - c0))" \
    -v t="$ticks" -v p50="$p50" -v p99="$p99" 'BEGIN {
    printf "PostgreSQL-sync anchor: %d transactions, %.0f/s, p50 %s ms, p99 %s ms\n", n, n / d, p50, p99
    printf "the box: %.0f µs busy per transaction (%.0f%% of it in the kernel), %.1f context switches per transaction\n",
        b * 1e6 / t / n, 100 * s / (b > 0 ? b : 1), c / n
}'
