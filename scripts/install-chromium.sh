#!/usr/bin/env bash
# Installs Chromium from the distribution's packages (Debian: chromium) when it is missing; the
# report's browser test renders report.html with it, headless.
#
# Usage: scripts/install-chromium.sh      (needs root, or chromium already installed)
# The last line printed is the path of the chromium executable. The tests call it (the fixture in
# tests/fixtures/browser.py), so `make test` needs no manual step.
set -euo pipefail

for name in chromium chromium-browser; do
  if path=$(command -v "$name"); then
    echo "$path"
    exit 0
  fi
done
exec 9>/tmp/selflengthen-install-chromium.lock
flock 9   # concurrent test sessions install once
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v chromium
