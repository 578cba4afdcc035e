#!/usr/bin/env bash
# Screenshot every page of the built documentation (make docs) in headless Chromium, to look at
# before publishing: bash tools/screenshot_docs.sh [docs/_build/html] [/tmp/actdsl-docs-shots]
set -euo pipefail
site=$(realpath "${1:-docs/_build/html}")
out=${2:-/tmp/actdsl-docs-shots}
mkdir -p "$out"
for page in "$site"/*.html; do
    name=$(basename "$page" .html)
    case "$name" in genindex|search) continue ;; esac
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1300,4000 \
        --screenshot="$out/$name.png" "file://$page" 2>/dev/null
    echo "$out/$name.png"
done
