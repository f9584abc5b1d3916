#!/bin/sh
# A stand-in deployment for the README walkthrough: says what it deploys where, then takes
# DEPLOY_SECONDS (default 1) to do it.
set -eu
target=${1:?usage: deploy.sh TARGET}
echo "deploying to $target"
sleep "${DEPLOY_SECONDS:-1}"
echo "deployed to $target"
