#!/bin/sh
# Builds the reference C pager and the page-cycle, first-touch and scattered-drop microbenchmarks. OUT overrides where
# the pager goes (default: bench/reference/c-pager); the others go beside it.
set -eu
DIR="$(dirname "$0")"
OUT="${OUT:-$DIR/c-pager}"
cc -O2 -Wall -pthread -o "$OUT" "$DIR/c-pager.c"
cc -O2 -Wall -pthread -o "$(dirname "$OUT")/page-cycle" "$DIR/page-cycle.c" || echo "page-cycle not built; the C pager is" >&2
cc -O2 -Wall -pthread -o "$(dirname "$OUT")/first-touch" "$DIR/first-touch.c" || echo "first-touch not built; the C pager is" >&2
cc -O2 -Wall -pthread -o "$(dirname "$OUT")/scattered-drop" "$DIR/scattered-drop.c" || echo "scattered-drop not built; the C pager is" >&2
