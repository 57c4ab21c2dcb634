#!/usr/bin/env bash
# Installs the Debian packages (and the PyPI package chdb-core) the build and the tests need,
# when missing.
# As root it runs apt-get itself; otherwise it prints the command to run and fails.
set -euo pipefail

packages=(librdkafka-dev libcurl4-openssl-dev pkg-config clickhouse-server clickhouse-client zookeeper kcat curl python3 python3-venv chromium)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
    if [[ "$(id -u)" != "0" ]]; then
        echo "error: missing Debian packages: ${missing[*]}" >&2
        echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# pytest and PyYAML run the static checks of the Docker deployment.
if ! python3 -c "import pytest, yaml" >/dev/null 2>&1; then
    python3 -m pip install -q pytest pyyaml >/dev/null 2>&1 || python3 -m pip install -q --break-system-packages pytest pyyaml >/dev/null
fi

# chdb-core runs current ClickHouse in-process: the tests check the SQL against it.
if ! python3 -c "import chdb" >/dev/null 2>&1; then
    echo "installing chdb-core (current ClickHouse, in-process) from PyPI" >&2
    python3 -m pip install -q chdb-core >/dev/null 2>&1 ||
        python3 -m pip install -q --break-system-packages chdb-core >/dev/null
fi
