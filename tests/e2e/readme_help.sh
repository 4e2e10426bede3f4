#!/usr/bin/env bash
# The README's "CLI reference" holds every command's --help text verbatim between
# <!-- help:CMD --> and <!-- /help:CMD --> markers; this test fails when one differs from
# what the binary prints, or when a command is missing. MPQ_UPDATE_README=1 rewrites the
# section from the binary instead.
set -u
: "${MPQ:?path of the mpq binary}" "${MPQ_ROOT:?project root}"
readme=$MPQ_ROOT/README.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmds=$("$MPQ" --help | awk '/^commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{exit}')
[ -n "$cmds" ] || { echo "FAIL: no commands in mpq --help"; exit 1; }

if [ "${MPQ_UPDATE_README:-0}" = 1 ]; then
  {
    echo "<!-- help:mpq -->"; echo '```'; "$MPQ" --help; echo '```'; echo "<!-- /help:mpq -->"
    for c in $cmds; do
      echo; echo "### mpq $c"; echo
      echo "<!-- help:$c -->"; echo '```'; "$MPQ" "$c" --help; echo '```'; echo "<!-- /help:$c -->"
    done
  } >"$tmp/section"
  awk -v f="$tmp/section" '
    /^<!-- cli-reference -->$/ {print; while ((getline l < f) > 0) print l; skip=1; next}
    /^<!-- \/cli-reference -->$/ {skip=0}
    !skip {print}' "$readme" >"$tmp/readme" && cp "$tmp/readme" "$readme"
  echo "README CLI reference rewritten"
  exit 0
fi

fails=0
for c in mpq $cmds; do
  if [ "$c" = mpq ]; then "$MPQ" --help >"$tmp/want"; else "$MPQ" "$c" --help >"$tmp/want"; fi
  awk -v c="$c" '$0 == "<!-- help:" c " -->" {on=1; next} $0 == "<!-- /help:" c " -->" {on=0} on' "$readme" |
    sed '1{/^```$/d};${/^```$/d}' >"$tmp/have"
  if ! diff -u "$tmp/have" "$tmp/want" >"$tmp/diff"; then
    echo "FAIL: README help of '$c' differs from 'mpq $c --help' (MPQ_UPDATE_README=1 to rewrite):"
    head -20 "$tmp/diff"
    fails=$((fails + 1))
  else
    echo "ok   $c"
  fi
done
echo "readme_help: $fails failed"
[ "$fails" -eq 0 ]
