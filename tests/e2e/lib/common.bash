# common.bash - the prologue shared by the tests/e2e/*.sh scripts; sourced, never run as a test
# (CMakeLists.txt makes a test of tests/e2e/*.sh only, not of this sub-folder).
# Needs MPQ (the mpq binary) and MPQ_SHARED (shared models/data). Gives:
#   $T (also $tmp)  a temporary directory, removed on exit
#   $MODEL          the stories260K checkpoint in MPQ_SHARED
#   fail MSG        print "FAIL: MSG" and exit 1 (scripts that stop at the first failure)
#   fails, ok, bad  a failure counter and "ok   NAME" / "FAIL NAME" lines (scripts that go on)
#   check NAME CODE NEEDLE -- CMD...   run CMD, want exit CODE and NEEDLE in its output (counts)
#   dump DB         every stored metric of DB, values printed exactly (for bit-identity checks)
: "${MPQ:?path of the mpq binary}" "${MPQ_SHARED:?path of ../shared}"
T=$(mktemp -d)
tmp=$T
trap 'rm -rf "$T"' EXIT
MODEL=$MPQ_SHARED/models/stories260K/stories260K.bin
fails=0

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

check() { # name expected_code needle -- command...
  local name=$1 want=$2 needle=$3
  shift 4
  local got=0
  "$@" >"$T/out" 2>"$T/err" || got=$?
  if [ "$got" != "$want" ] || ! grep -qF -- "$needle" "$T/err" "$T/out"; then
    echo "FAIL $name: exit $got (want $want), output lacks '$needle':"; cat "$T/err" "$T/out"; fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}

expect_rc() { # expected-code description command... : stdout in $T/out.txt, stderr in $T/err.txt
  local want=$1 what=$2; shift 2
  set +e; "$@" > "$T/out.txt" 2> "$T/err.txt"; local rc=$?; set -e
  [ "$rc" -eq "$want" ] || fail "$what: exit $rc, expected $want: $(cat "$T/err.txt")"
}

dump() { # every stored metric, values printed exactly (%!.17g: SQLite's %.17g stops at 16 digits)
  sqlite3 -separator '|' "$1" "SELECT l.name, m.candidate, m.metric, printf('%!.17g', m.value),
    COALESCE(printf('%!.17g', m.stderr), 'NULL'), m.n, m.provenance_json FROM metrics m
    LEFT JOIN layers l ON l.id = m.layer_id ORDER BY l.name, m.candidate, m.metric"
}
