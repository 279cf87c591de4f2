#!/usr/bin/env bash
# Regenerate the hashed lock files from pyproject.toml's open ranges (after changing a
# dependency, or to take upgrades). The image installs requirements/runtime.lock, CI and the
# README's test command requirements/test.lock, the static checks requirements/dev.lock.
# Needs uv (pip install uv). --universal: one lock for every platform and Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
for lock in runtime test dev; do
    extra=()
    [ "$lock" != runtime ] && extra=(--extra "$lock")
    uv pip compile pyproject.toml "${extra[@]}" --universal --python-version 3.11 \
        --generate-hashes --no-header --quiet --upgrade -o "requirements/$lock.lock"
done
