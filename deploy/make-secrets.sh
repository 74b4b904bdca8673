#!/usr/bin/env bash
# Creates the secrets of the docker-compose deployment, one file each in
# deploy/secrets/ (git- and docker-ignored), with random values; an existing
# file is kept, so the script can run before every `up`.
#
#   deploy/make-secrets.sh            # then: docker compose -p search-pipeline up -d
#
# docker-compose.yml gives each service only the secrets it needs, as files
# under /run/secrets/ (docker-compose secrets), never as environment
# variables. The directory is 0700 (other host users cannot reach it); the
# files are 0444 because the containers read them as their own non-root
# users through a bind mount. To set a value yourself, write it to the file
# (letters, digits, - and _; no trailing spaces) before the first start.
set -euo pipefail

dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets
names=(
    mongo_root_password        # mongo (root user, first start only), mongo-init
    mongo_source_password      # mongo-init sets it on user mongo-source; mongo-source logs in with it
    mongo_source_admin_token   # mongo-source: bearer token of its mutating admin endpoints
    elastic_password           # elasticsearch (user elastic), es-sync logs in with it
    es_sync_admin_token        # es-sync: bearer token of its mutating admin endpoints
    grafana_admin_password     # grafana (user admin)
)

random_secret() {
    if command -v openssl >/dev/null; then
        openssl rand -hex 24
    else
        od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
        echo
    fi
}

mkdir -p "$dir"
chmod 700 "$dir"
for n in "${names[@]}"; do
    f=$dir/$n
    if [[ -s $f ]]; then
        echo "kept    deploy/secrets/$n"
        continue
    fi
    (umask 077 && random_secret >"$f")
    chmod 444 "$f"
    echo "created deploy/secrets/$n"
done
