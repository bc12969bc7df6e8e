#!/usr/bin/env bash
# Runs every fuzz target for a while; exits non-zero on a finding (a crash, a sanitizer report, an exception
# other than FormatError, a difference between the native and the reference pickle interpreter).
#   fuzz/run.sh --short        ~40 s per target (CI)
#   fuzz/run.sh --seconds 1800 the long run (30 min per target)
# Installs what it needs: clang + libFuzzer (apt-get) when missing, atheris (pip) when missing.
# Findings go to fuzz/findings/; keep each as a regression file under tests/adversarial/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seconds=1800
case "${1:-}" in
  --short) seconds="${FUZZ_SHORT_SECONDS:-40}" ;;
  --seconds) seconds="$2" ;;
  "") ;;
  *) echo "usage: $0 [--short | --seconds N]" >&2; exit 2 ;;
esac
python="${PYTHON:-python}"
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq clang libclang-rt-14-dev) >/dev/null || \
    (apt-get install -y -qq clang) >/dev/null
fi
"$python" -c "import atheris" 2>/dev/null || "$python" -m pip install -q atheris
"$here/build.sh" >/dev/null
corpus="$here/corpus"
"$python" "$here/make_seeds.py" "$corpus" >/dev/null
findings="$here/findings"
mkdir -p "$findings"
status=0
native() {  # name binary corpus
  echo "== $1 (libFuzzer, ASan+UBSan, ${seconds}s)"
  set +e
  reg="$here/../tests/adversarial/$1"
  if compgen -G "$reg/*" >/dev/null; then  # the kept findings first, under the sanitizers
    "$here/build/$2" "$reg"/* > "$findings/$1-regressions.log" 2>&1 || \
      { tail -20 "$findings/$1-regressions.log"; echo "REGRESSION in $1"; status=1; }
  fi
  "$here/build/$2" "$corpus/$3" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -max_total_time="$seconds" \
    -artifact_prefix="$findings/$1-" -print_final_stats=1 > "$findings/$1.log" 2>&1
  rc=$?
  set -e
  grep -E "^stat::number_of_executed_units|Done" "$findings/$1.log" || true
  [ "$rc" -eq 0 ] || { tail -30 "$findings/$1.log"; echo "FINDING in $1 (see $findings)"; status=1; }
}
python_target() {  # name script corpus
  echo "== $1 (atheris, ${seconds}s)"
  set +e
  "$python" "$here/$2" "$corpus/$3" -max_len=8192 -timeout=20 -rss_limit_mb=3072 -max_total_time="$seconds" \
    -artifact_prefix="$findings/$1-" -print_final_stats=1 > "$findings/$1.log" 2>&1
  rc=$?
  set -e
  grep -E "^stat::number_of_executed_units|Done" "$findings/$1.log" || true
  [ "$rc" -eq 0 ] || { tail -30 "$findings/$1.log"; echo "FINDING in $1 (see $findings)"; status=1; }
}
native pickle_vm fuzz_pickle_vm pickle_vm
native zip fuzz_zip zip
native darknet_cpp fuzz_darknet darknet_cpp
python_target pickle atheris_pickle.py pickle
python_target pt atheris_pt.py pt
python_target darknet atheris_darknet.py darknet
exit $status
