#!/usr/bin/env bash
# Regenerates the committed seed corpora fuzz/corpus/<target>/ from real components: a tiny model
# bundle written by strata-train on 300 Fashion-MNIST images, and the request / update-log seeds
# written by strata-fuzz-corpus (fuzz/corpus_generator.cc) with the real protobuf messages,
# UpdateRecordBuilder and UpdateLog.
#
#   fuzz/make_corpus.sh [BUILD_DIR]     (default build-fuzz; strata-train and strata-fuzz-corpus
#                                        must be built there)
#
# Run it when a format changes (docs/bundle-format.md, docs/update-log-format.md, the proto), then
# commit fuzz/corpus/. Each corpus stays well under 1 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-make-corpus.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 2 conv filters, split ReLU, 8x8 pooling (3x3x4 = 36) + 16 random units: 52 features, so the
# upper tier's statistics (52 x 52) keep the bundle at a few tens of KB.
cat > "$work/tiny.spec" <<'SPEC'
input 28 28 1
conv patch=5 filters=2 pca_images=300
split_relu
pool size=8
standardise
expand units=16 bias_scale=0.3
SPEC
export OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0
"$build/bin/strata-train" --train=fashion-mnist:train --train_limit=300 --test= \
  --spec="$work/tiny.spec" --out="$work/tiny.bundle" > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; exit 1; }

rm -rf fuzz/corpus
"$build/bin/strata-fuzz-corpus" --out=fuzz/corpus --bundle="$work/tiny.bundle"
du -sh fuzz/corpus/*
