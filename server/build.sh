#!/usr/bin/env bash
# Build the openenv-gym server image where no registry is reachable (air-gapped clusters, CI):
#   1. a wheelhouse of openenv-gym, its dependencies and your env packages, built on this host;
#   2. a Debian bookworm base image from debootstrap + `docker import` (once; reused after);
#   3. the image from server/Dockerfile, built with the network off.
# Usage: server/build.sh [--tag openenv-gym:latest] [--requirements my-envs.txt] [--rebuild-base]
# Needs root, debootstrap and a Docker engine (Debian: apt-get install docker.io debootstrap).
# With registry access, `openenv-gym docker build` (no --offline) starts from python:3.11-slim.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m openenv_gym docker build --offline "$@"
