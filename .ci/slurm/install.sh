#!/usr/bin/env bash
# Install the packages for the throw-away single-node Slurm test cluster
# (slurmctld, slurmd, the client tools and munge). Idempotent: does nothing
# when every package is already installed. Needs root (re-runs itself via sudo
# when that is available). See .ci/slurm/README.md.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "install.sh: must run as root (no sudo found)" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install.sh: already installed: ${PACKAGES[*]}"
else
    echo "install.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The packages enable (and, where allowed, start) their own services; start.sh
# runs the daemons itself, so keep those out of the way.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now slurmctld slurmd munge >/dev/null 2>&1 || true
elif [[ " ${missing[*]} " == *" munge "* && -x /etc/init.d/munge ]]; then
    # no systemd: the munge init script may just have started munged
    /etc/init.d/munge stop >/dev/null 2>&1 || true
fi

command -v slurmctld slurmd munged sbatch >/dev/null
echo "install.sh: $(slurmctld -V)"
