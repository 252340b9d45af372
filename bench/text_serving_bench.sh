#!/usr/bin/env bash
# A text model through a real strata-server (docs/text-encoder.md, "In the server"): writes 2,048
# Debian package short descriptions labelled by their Section (apt-cache dumpavail, picked by a
# hash of the package name, so the same apt lists give the same texts), fits a text bundle
# (all-MiniLM-L6-v2 + a 2048-unit random ReLU expansion) on the first 512 with strata-train, and
# runs strata-bench-text-serving on it: Predict at batch 1 and 32, an Update of every text, and
# the head's absorb rate without the encoder. Builds nothing: run
#   scripts/build.sh strata-server strata-train strata-bench-text-serving
# first. Extra arguments go to strata-bench-text-serving (e.g. --device=float --requests=100).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${STRATA_BUILD_DIR:-build}"
out="${TMPDIR:-/tmp}/strata-text-serving"
mkdir -p "$out"
scripts/fetch-minilm.sh > /dev/null
/usr/bin/python3 - "$out/texts.tsv" <<'PY'
import hashlib, subprocess, sys
dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True).stdout
packages = {}
for stanza in dump.split("\n\n"):
    fields = {}
    for line in stanza.splitlines():
        if line[:1] not in (" ", "\t") and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    if fields.get("Package") and fields.get("Section") and fields.get("Description"):
        packages[fields["Package"]] = (fields["Section"].split("/")[-1], fields["Description"])
names = sorted(packages, key=lambda n: hashlib.sha1(n.encode()).hexdigest())[:2048]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for name in names:
        section, text = packages[name]
        f.write(f"{section}\t{text}\n")
print(f"text_serving_bench: {len(names)} descriptions of {len(packages)} packages", file=sys.stderr)
PY
# STRATA_TEXT_EXPAND: the expansion's units (default 2048: 384 + 2048 features); 0: no stage (the
# head reads the 384-value embedding itself).
expand="${STRATA_TEXT_EXPAND:-2048}"
printf 'text encoder=.tools/models/all-minilm-l6-v2 max_tokens=128 max_bytes=4096\n' > "$out/text.spec"
if [ "$expand" -gt 0 ]; then printf 'expand units=%d\n' "$expand" >> "$out/text.spec"; fi
head -n 512 "$out/texts.tsv" > "$out/train.tsv"
"$build/bin/strata-train" --spec="$out/text.spec" --train="$out/train.tsv" --test= --lambda=1 \
  --out="$out/text.bundle"
"$build/bin/strata-bench-text-serving" --bundle="$out/text.bundle" --texts="$out/texts.tsv" "$@"
