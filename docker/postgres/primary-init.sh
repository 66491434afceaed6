#!/usr/bin/env bash
# Runs once, when the official postgres image initialises the primary's data directory
# (mounted into /docker-entrypoint-initdb.d): a role for streaming replication and the
# pg_hba.conf line that lets the replica use it.
set -euo pipefail

: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"

psql -v ON_ERROR_STOP=1 -v pw="$REPLICATION_PASSWORD" \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';
SQL

echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
