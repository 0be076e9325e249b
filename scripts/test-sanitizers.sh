#!/usr/bin/env bash
# npm run test:sanitizers: builds the native addon with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMakeLists.txt, through cmake-js, into build-sanitizers/), then runs the tests that drive the addon
# hardest against that build. See docs/sanitizers.md. Linux with g++ (libasan, libubsan) and cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started=$SECONDS

ADDON=$ROOT/build-sanitizers/Release/farmem_native.node
LOGS=$ROOT/build-sanitizers/reports
TESTS=(test/native.test.ts test/huge-pages.test.ts test/integrity.test.ts test/lifecycle.test.ts test/prefetch.test.ts test/coffers.test.ts)

# cmake-js takes the Node.js headers from npm's nodedir (npm_config_nodedir); without one it would
# download them. Default to the running node's own prefix when it ships include/node/node.h.
nodedir=${npm_config_nodedir:-}
if [[ -z $nodedir ]]; then
  prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [[ -f $prefix/include/node/node.h ]]; then nodedir=$prefix; fi
fi

echo "== building the sanitizer addon (cmake-js, Node.js headers from ${nodedir:-a download})"
npm_config_nodedir=$nodedir npx cmake-js build --out build-sanitizers --log-level warn
[[ -f $ADDON ]] || { echo "test-sanitizers: $ADDON was not built" >&2; exit 1; }

# The unprivileged tests in test/native.test.ts copy the regular build into a world-readable
# directory (the child still loads the sanitizer build, through FARMEM_NATIVE_ADDON): it must exist.
if [[ ! -f build/Release/farmem_native.node ]]; then
  echo "test-sanitizers: build/Release/farmem_native.node is missing; run \`npm run build:native\` once" >&2
  exit 1
fi

echo "== building the TypeScript (dist/cjs)"
npx tsc -p tsconfig.json

# node is not instrumented, so the ASan runtime must be in the process before anything else:
# preload the very libraries the addon was linked against (GCC links libubsan separately).
ASAN_LIB=$(g++ -print-file-name=libasan.so)
UBSAN_LIB=$(g++ -print-file-name=libubsan.so)
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
  [[ -e $lib ]] || { echo "test-sanitizers: $lib not found (install g++'s libasan/libubsan)" >&2; exit 1; }
done

rm -rf "$LOGS" && mkdir -p "$LOGS"
export FARMEM_NATIVE_ADDON=$ADDON
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB${LD_PRELOAD:+ $LD_PRELOAD}"
# detect_leaks=0: Node.js does not free its heap, isolates or static state at exit (by design, exit
# is faster than teardown), so LeakSanitizer would report thousands of leaks that are not ours.
# abort_on_error=1: a report kills the process with SIGABRT, which every test here notices.
# log_path: ASan reports go to files instead of stderr, so one from a child process whose stderr a
# test captures is still shown, and still fails the run (checked below). UBSan, sharing the process
# with ASan, ignores log_path and writes to stderr; halt_on_error + abort_on_error (and the build's
# -fno-sanitize-recover=undefined) make its findings fatal too.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$LOGS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1"
# Everything the tests spawn (vitest's forks, worker threads, the fixtures' child processes)
# inherits these, so it runs against the sanitizer build too.

echo "== checking that node loads the sanitizer build"
node -e '
  const fs = require("node:fs");
  require("./dist/cjs/native.js").loadNative();
  const maps = fs.readFileSync("/proc/self/maps", "utf8");
  const want = [process.env.FARMEM_NATIVE_ADDON, "libasan", "libubsan"];
  const missing = want.filter((name) => !maps.includes(name));
  if (missing.length) { console.error("not mapped: " + missing.join(", ")); process.exit(1); }
  console.log("loaded " + process.env.FARMEM_NATIVE_ADDON + " with libasan and libubsan mapped");
'

echo "== vitest: ${TESTS[*]}"
status=0
"$ROOT/node_modules/.bin/vitest" run "${TESTS[@]}" || status=$?

unset LD_PRELOAD
reports=$(find "$LOGS" -type f -size +0 | sort)
if [[ -n $reports ]]; then
  echo "== sanitizer reports:" >&2
  for file in $reports; do echo "--- $file" >&2; cat "$file" >&2; done
  [[ $status -ne 0 ]] || status=1
fi

echo "== test-sanitizers: $([[ $status -eq 0 ]] && echo passed || echo FAILED) in $((SECONDS - started))s"
exit "$status"
