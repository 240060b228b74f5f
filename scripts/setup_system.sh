#!/usr/bin/env bash
# System (apt) packages the test suite needs, from one place. Idempotent: installs only what is missing.
# Needs root and apt-get (CI and the project's build machines have both); .ci/run calls it before the tests.
#   slurm-wlm, munge  -> tests/test_slurm.py (a real one-node SLURM cluster, started by scripts/setup_slurm.sh)
#   chromium, chromium-driver -> tests/test_report_browser.py (the HTML report in headless Chromium via Selenium;
#                        Debian's packages, so no browser is downloaded at run time)
# Add a package here (one word per line in PACKAGES) rather than installing it from a test or another script.
set -euo pipefail
PACKAGES=(
  slurm-wlm
  munge
  chromium
  chromium-driver
)

if [ "$(id -u)" -ne 0 ]; then
  echo "[setup_system] not root: skipping apt packages (${PACKAGES[*]}); tests that need them will skip" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[setup_system] apt-get not found: skipping apt packages (${PACKAGES[*]}); tests that need them will skip" >&2
  exit 0
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "[setup_system] apt packages present: ${PACKAGES[*]}"
  exit 0
fi
echo "[setup_system] installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[setup_system] installed ${missing[*]}"
