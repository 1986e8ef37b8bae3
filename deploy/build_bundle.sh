#!/bin/sh
# Train and export the small from-scratch tweets bundle into DEST, unless a bundle is already there.
# Used by the training image: docker compose's one-shot `trainer` and the Dockerfile's
# `bundle-trained` stage. Same two steps as `make bundle-small` (`make bundle` is the MiniLM one).
#
#   build-bundle [DEST]                          DEST defaults to /models/bundle
#   TRAIN_DATASET=digits TRAIN_EPOCHS=10 build-bundle /models/bundle
#
# TRAIN_* rather than ATOM_*: ATOM_* variables are the service's settings, and only those.
#
# A half-finished run never looks finished: `atomize export` writes DEST.partial and renames
# it to DEST only when the bundle is complete, and only a manifest counts as "already there".
set -eu

dest="${1:-/models/bundle}"
dataset="${TRAIN_DATASET:-tweets}"
epochs="${TRAIN_EPOCHS:-6}"  # as the Makefile's `bundle` target
runs="${TRAIN_RUNS:-/tmp/atomizer-runs}"

if [ -f "$dest/manifest.json" ]; then
    echo "build-bundle: $dest/manifest.json exists, nothing to do"
    exit 0
fi

mkdir -p "$runs"
echo "build-bundle: training $dataset into $runs/$dataset"
# --no-progress: a progress bar in container logs is one line per refresh.
atomize train --dataset "$dataset" --out "$runs/$dataset" --epochs "$epochs" --no-progress
echo "build-bundle: exporting to $dest"
atomize export "$runs/$dataset" --out "$dest"
echo "build-bundle: done: $dest"
