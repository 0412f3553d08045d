#!/usr/bin/env bash
# Builds the project's images with the versions pinned in images/versions.env.
# Usage: images/build.sh [runtime] [trainer]     (both by default)
#        DOCKER=podman images/build.sh            (any docker-compatible CLI)
# The context is the repository root; Dockerfile.<name>.dockerignore keeps it to the sources.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
docker=${DOCKER:-docker}

set -a
# shellcheck source=versions.env
source "$here/versions.env"
set +a
build_args=()
for key in $(sed -n 's/^\([A-Z0-9_]*\)=.*/\1/p' "$here/versions.env"); do
  build_args+=(--build-arg "$key=${!key}")
done

images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(runtime trainer)
for image in "${images[@]}"; do
  tag_variable=${image^^}_IMAGE
  "$docker" build --file "$here/Dockerfile.$image" --tag "${!tag_variable}" "${build_args[@]}" "$(dirname "$here")"
done
