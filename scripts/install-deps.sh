#!/usr/bin/env bash
# Installs what the pipeline needs, when missing.
#
#   scripts/install-deps.sh             # to build and run it (used by setup.sh)
#   scripts/install-deps.sh --cluster   # also ZooKeeper, for the two-replica cluster (setup.sh --cluster)
#   scripts/install-deps.sh --test      # also what the tests need (used by test.sh)
#
# Runtime: the Debian packages to build the executables and run a private ClickHouse.
# Tests, in addition: ZooKeeper (two-replica cluster tests), kcat (reads the dead-letter topic),
# Chromium (dashboard screenshot), and from PyPI pytest and PyYAML (static Docker checks) and
# chdb-core (current ClickHouse in-process); promtool (Prometheus rule checks) is unpacked from
# Debian's `prometheus` package into .test-artifacts/tools without installing the server.
# As root it runs apt-get itself (one `apt-get update`, one `apt-get install -y`); otherwise it
# prints the command to run and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=(librdkafka-dev libcurl4-openssl-dev pkg-config clickhouse-server clickhouse-client curl python3 python3-venv)
test_packages=(zookeeper kcat chromium python3-pip)

tests=0
packages=("${runtime[@]}")
case "${1:-}" in
--test) tests=1; packages+=("${test_packages[@]}") ;;
--cluster) packages+=(zookeeper) ;;
"") ;;
*) echo "usage: $0 [--test | --cluster]" >&2; exit 2 ;;
esac
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
need_promtool=0
if ((tests)) && ! command -v promtool >/dev/null 2>&1 && [[ ! -x .test-artifacts/tools/promtool ]]; then
    need_promtool=1
fi

if ((${#missing[@]} > 0 || need_promtool)); then
    if [[ "$(id -u)" != "0" ]]; then
        if ((${#missing[@]} > 0)); then
            echo "error: missing Debian packages: ${missing[*]}" >&2
            echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        fi
        ((need_promtool)) && echo "error: promtool is missing; run this script as root, or install Debian's prometheus package" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if ((${#missing[@]} > 0)); then
        echo "installing ${missing[*]}" >&2
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

((tests)) || exit 0

# promtool only: the `prometheus` package would also install and start a Prometheus server.
if ((need_promtool)); then
    echo "unpacking promtool from Debian's prometheus package into .test-artifacts/tools" >&2
    scratch="$(mktemp -d)"
    (cd "$scratch" && apt-get -o APT::Sandbox::User=root download -qq prometheus >/dev/null && dpkg-deb -x prometheus_*.deb root)
    mkdir -p .test-artifacts/tools
    cp "$scratch/root/usr/bin/promtool" .test-artifacts/tools/promtool
    rm -rf "$scratch"
fi

pip_install() {
    python3 -m pip install -q "$@" >/dev/null 2>&1 || python3 -m pip install -q --break-system-packages "$@" >/dev/null
}

# pytest and PyYAML run the static checks of the Docker deployment.
if ! python3 -c "import pytest, yaml" >/dev/null 2>&1; then
    echo "installing pytest and PyYAML from PyPI" >&2
    pip_install pytest pyyaml
fi

# chdb-core runs current ClickHouse in-process: the tests check the SQL against it.
if ! python3 -c "import chdb" >/dev/null 2>&1; then
    echo "installing chdb-core (current ClickHouse, in-process) from PyPI" >&2
    pip_install chdb-core
fi
