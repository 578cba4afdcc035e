#!/usr/bin/env bash
# Render the reference page in headless Chromium (Debian: apt-get install chromium) and save a
# screenshot, to look at: bash tools/render_html.sh [docs/activations.html] [shot.png]
set -euo pipefail
page=$(realpath "${1:-docs/activations.html}")
shot=${2:-/tmp/actdsl-activations.png}
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1500,2200 \
    --screenshot="$shot" "file://$page" 2>/dev/null
echo "$shot"
