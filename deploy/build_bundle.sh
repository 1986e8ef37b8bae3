#!/bin/sh
# Train and export a bundle into DEST, unless a bundle is already there. Used by the training
# image: docker compose's one-shot `trainer` and the Dockerfile's `bundle-trained` stage.
# Without TRAIN_* settings: the small from-scratch tweets bundle (as `make bundle-small`); with
# TRAIN_BACKBONE=minilm TRAIN_ARGS="--train-layers 0 ..." EXPORT_ARGS="--int8 --fp16": the default
# MiniLM bundle of `make bundle` (what docker-compose.yml's trainer sets).
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
backbone="${TRAIN_BACKBONE:-}"  # e.g. minilm (all-MiniLM-L6-v2, installed with the training image)
train_args="${TRAIN_ARGS:-}"    # more `atomize train` flags, word-split
export_args="${EXPORT_ARGS:-}"  # more `atomize export` flags, e.g. --int8 --fp16

if [ -f "$dest/manifest.json" ]; then
    echo "build-bundle: $dest/manifest.json exists, nothing to do"
    exit 0
fi

mkdir -p "$runs"
echo "build-bundle: training $dataset into $runs/$dataset"
# --no-progress: a progress bar in container logs is one line per refresh.
# shellcheck disable=SC2086 # TRAIN_ARGS and EXPORT_ARGS are lists of flags
atomize train --dataset "$dataset" --out "$runs/$dataset" --epochs "$epochs" --no-progress \
    ${backbone:+--backbone "$backbone"} $train_args
echo "build-bundle: exporting to $dest"
# shellcheck disable=SC2086
atomize export "$runs/$dataset" --out "$dest" $export_args
echo "build-bundle: done: $dest"
