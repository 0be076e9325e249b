#!/bin/sh
# Builds the reference C pager. OUT overrides where the binary goes (default: bench/reference/c-pager).
set -eu
DIR="$(dirname "$0")"
OUT="${OUT:-$DIR/c-pager}"
cc -O2 -Wall -pthread -o "$OUT" "$DIR/c-pager.c"
