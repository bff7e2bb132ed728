#!/usr/bin/env bash
# Runs the soak test (bins/tests/soak.rs) for a given time and writes its
# figures into docs/reliability.md.
#
#   scripts/soak.sh [SECONDS]      default 300
#
# Needs the zlib tarball from scripts/setup.d/real-projects.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-300}"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
HG_SOAK_SECS="$secs" HG_SOAK_REPORT="$report" \
    cargo test --release -p hybridgrid --test soak -- --nocapture
doc=docs/reliability.md
begin='<!-- soak:begin -->'
end='<!-- soak:end -->'
{
    echo "$begin"
    echo
    echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, \`scripts/soak.sh $secs\` (release build), $(sed -n 1p "$report")."
    echo
    sed -n '3,$p' "$report"
    echo
    echo "$end"
} > "$report.section"
python3 - "$doc" "$report.section" "$begin" "$end" <<'PY'
import sys
doc, section, begin, end = sys.argv[1:]
text = open(doc).read()
new = open(section).read().rstrip("\n")
a, b = text.index(begin), text.index(end) + len(end)
open(doc, "w").write(text[:a] + new + text[b:])
PY
rm -f "$report.section"
echo "updated $doc"
