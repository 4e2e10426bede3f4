#!/usr/bin/env bash
# bad_inputs.sh - the bad-input corpus: broken models, Hugging Face folders, tokenizers, token
# data, job specs, configs, budgets, metric expressions, latency tables, databases, a locked
# database and paths of the wrong kind, each derived at test time from ../shared copies
# (tests/e2e/lib/bad_inputs_gen.bash). Every case asserts the exit code, a message naming the
# file or key, and that the results database of a job run at the start is byte-for-byte
# unchanged (sha256 before/after; with a damaged copy of it, that copy too).
# Not here (covered elsewhere): cli_inputs.sh and hostile_specs.sh cases; a database held by a
# job lease of another runner (the lease feature's own tests). As root, chmod does not stop
# reads or writes, so "permissions" are exercised with what does: a folder where a file is
# expected, a path under a regular file and a database held by another process's lock.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
source "${BASH_SOURCE[0]%/*}/lib/bad_inputs_gen.bash"
G=$T/gen
bad_inputs_gen "$G" "$MPQ_SHARED"
M=$MODEL
TOK=$MPQ_SHARED/models/stories260K/tok512.bin
U16=$MPQ_SHARED/data/tinystories-calib.tok512.u16
EVAL=$MPQ_SHARED/data/tinystories-eval.tok512.u16
DB=$T/r.db

# spec FILE NAME MODEL DATA [EXTRA]: a small job spec (EXTRA: more top-level keys, ", ...")
spec() {
  printf '{"name": "%s", "model": "%s", "calibration": {"data": "%s", "seq_len": 32, "n_seqs": 2},
 "candidates": ["int4g32", "int8c"], "metrics": ["weight_error", "layer_sensitivity"]%s}\n' \
    "$2" "$3" "$4" "${5:-}" >"$1"
}
spec "$T/good.json" good "$M" "$U16"
"$MPQ" run "$T/good.json" --db "$DB" -q >/dev/null 2>"$T/err" || fail "good job: $(cat "$T/err")"
sqlite3 "$DB" 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null
"$MPQ" solve good --db "$DB" --budget avg-bits=6 >/dev/null 2>&1 || fail "good solve"
sqlite3 "$DB" 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null

n_cases=0
# t NAME CODE NEEDLE -- CMD...: CMD exits CODE, prints NEEDLE, leaves $DB (and $ALSO) unchanged
ALSO=
t() {
  local name=$1 want=$2 needle=$3 got=0 b1 b2 a1 a2
  shift 4
  n_cases=$((n_cases + 1))
  b1=$(sha256sum "$DB" | cut -d' ' -f1); b2=${ALSO:+$(sha256sum "$ALSO" | cut -d' ' -f1)}
  "$@" >"$T/out" 2>"$T/err" </dev/null || got=$?
  a1=$(sha256sum "$DB" | cut -d' ' -f1); a2=${ALSO:+$(sha256sum "$ALSO" | cut -d' ' -f1)}
  if [ "$got" != "$want" ] || ! grep -qF -- "$needle" "$T/err" "$T/out"; then
    bad "$name: exit $got (want $want), output lacks '$needle': $(head -c 600 "$T/err" "$T/out")"
  elif [ "$b1" != "$a1" ] || [ "$b2" != "$a2" ]; then
    bad "$name: the database changed"
  else
    echo "ok   $name: $(head -n 1 "$T/err")"
  fi
}
# r NAME CODE NEEDLE MODEL [DATA [EXTRA]]: `mpq run` of a spec naming these inputs, on $DB
r() {
  local name=$1 code=$2 needle=$3
  spec "$T/$name.json" "$name" "$4" "${5:-$U16}" "${6:-}"
  t "$name" "$code" "$needle" -- "$MPQ" run "$T/$name.json" --db "$DB" -q
}

# ---- llama2.c checkpoints
t model-empty 4 "empty.bin" -- "$MPQ" inspect "$G/empty.bin"
r model-short-header 4 "short-header.bin" "$G/short-header.bin"
t model-header-only 4 "header-only.bin" -- "$MPQ" inspect "$G/header-only.bin"
r model-neg-dim 4 "neg-dim.bin" "$G/neg-dim.bin"
r model-zero-heads 4 "zero-heads.bin" "$G/zero-heads.bin"
t model-kv-heads 4 "kv-heads-3.bin" -- "$MPQ" inspect "$G/kv-heads-3.bin"
r model-vocab-min 4 "vocab-min.bin" "$G/vocab-min.bin"
t model-zero-seq 4 "zero-seq.bin" -- "$MPQ" inspect "$G/zero-seq.bin"
r model-huge-dim 4 "huge-dim.bin" "$G/huge-dim.bin"
t model-zero-layers 4 "zero-layers.bin" -- "$MPQ" inspect "$G/zero-layers.bin"
r model-trailing 4 "trailing.bin" "$G/trailing.bin"
t model-ak42-v2 6 "ak42-v2.bin" -- "$MPQ" inspect "$G/ak42-v2.bin"
t model-ak42-short 4 "ak42-short.bin" -- "$MPQ" inspect "$G/ak42-short.bin"
r model-ak42-flag 4 "ak42-flag.bin" "$G/ak42-flag.bin"
t model-eval-bad 4 "neg-dim.bin" -- "$MPQ" eval -m "$G/neg-dim.bin" -d "$EVAL" -L 16 -n 1

# ---- Hugging Face folders
r hf-no-config 3 "config.json" "$G/hf-noconfig"
t hf-no-safetensors 3 "model.safetensors" -- "$MPQ" inspect "$G/hf-nost"
r hf-config-not-json 4 "config.json" "$G/hf-cfgjson"
t hf-config-no-hidden 4 "hidden_size" -- "$MPQ" inspect "$G/hf-nohidden"
t hf-config-hidden-string 4 "hidden_size" -- "$MPQ" inspect "$G/hf-hiddenstr"
r hf-config-arch 6 "GPT2LMHeadModel" "$G/hf-arch"
t hf-config-heads-zero 4 "config.json" -- "$MPQ" inspect "$G/hf-heads0"
t hf-config-wider 4 "model.embed_tokens.weight" -- "$MPQ" inspect "$G/hf-wide"
t hf-header-zero 4 "model.safetensors" -- "$MPQ" inspect "$G/hf-hdr0"
r hf-header-junk 4 "model.safetensors" "$G/hf-hdrjunk"
t hf-truncated 4 "model.safetensors" -- "$MPQ" inspect "$G/hf-trunc"
t hf-dtype-i8 6 "model.norm.weight" -- "$MPQ" inspect "$G/hf-i8"
r hf-missing-tensor 4 "model.norm.weight" "$G/hf-notensor"
t hf-offsets-reversed 4 "model.embed_tokens.weight" -- "$MPQ" inspect "$G/hf-offsets"
t hf-shape 4 "model.embed_tokens.weight" -- "$MPQ" inspect "$G/hf-shape"
t hf-index-missing-shard 3 "model-00001-of-00002.safetensors" -- "$MPQ" inspect "$G/hf-index"

# ---- tokenizers
t tok-empty 4 "tok-empty.bin" -- "$MPQ" inspect --tokenizer "$G/tok-empty.bin"
t tok-truncated 4 "tok-trunc.bin" -- "$MPQ" eval -m "$M" -t "$G/tok-trunc.bin" -d "$G/story.txt" -L 8
t tok-negative-length 4 "tok-neglen.bin" -- "$MPQ" inspect --tokenizer "$G/tok-neglen.bin"
t tok-huge-length 4 "tok-hugelen.bin" -- "$MPQ" inspect --tokenizer "$G/tok-hugelen.bin" --encode "Once"
r tok-extra-piece 4 "tok-extra.bin" "$M" "$G/story.txt" ', "tokenizer": "'"$G/tok-extra.bin"'"'
t tok-wrong-vocab 4 "tok2048.bin" -- "$MPQ" eval -m "$M" -t "$MPQ_SHARED/models/sotu-2.7M/tok2048.bin" -d "$G/story.txt" -L 8

# ---- token data and text
t data-empty 5 "empty.u16" -- "$MPQ" eval -m "$M" -d "$G/empty.u16" -L 8
t data-odd-u32 4 "odd.u32" -- "$MPQ" inspect --data "$G/odd.u32"
t data-u32-past-vocab 4 "vocab.u32" -- "$MPQ" eval -m "$M" -d "$G/vocab.u32" -L 2
t data-text-no-tokenizer 5 "tokenizer" -- "$MPQ" eval -m "$M" -d "$G/story.txt" -L 8
t data-directory 3 "adir.u16" -- "$MPQ" eval -m "$M" -d "$G/adir.u16" -L 8
r data-spec-late-id 4 "late.u16" "$M" "$G/late.u16"
r data-spec-short 5 "short.u16" "$M" "$G/short.u16"
r data-spec-eval-odd 4 "odd.u32" "$M" "$U16" ', "evaluation": {"data": "'"$G/odd.u32"'"}'

# ---- job specs (other than hostile_specs.sh's)
: >"$T/empty.json"
t spec-empty 4 "empty.json" -- "$MPQ" run "$T/empty.json" --db "$DB"
printf '[1, 2]' >"$T/array.json"
t spec-array 5 "array.json" -- "$MPQ" run "$T/array.json" --db "$DB"
spec "$T/noname.json" x "$M" "$U16"; sed -i 's/"name": "x", //' "$T/noname.json"
t spec-no-name 5 "name" -- "$MPQ" run "$T/noname.json" --db "$DB"
spec "$T/emptyname.json" "" "$M" "$U16"
t spec-empty-name 5 "name" -- "$MPQ" run "$T/emptyname.json" --db "$DB"
spec "$T/numname.json" x "$M" "$U16"; sed -i 's/"name": "x"/"name": 7/' "$T/numname.json"
t spec-number-name 5 "name" -- "$MPQ" run "$T/numname.json" --db "$DB"
printf '{"name": "x", "model": "%s", "candidates": ["int4g32"]}' "$M" >"$T/nocalib.json"
t spec-no-calibration 5 "calibration" -- "$MPQ" run "$T/nocalib.json" --db "$DB"
r spec-missing-data 3 "no-such.u16" "$M" "$T/no-such.u16"
spec "$T/nocand.json" x "$M" "$U16"; sed -i 's/\["int4g32", "int8c"\]/[]/' "$T/nocand.json"
t spec-no-candidates 5 "candidates" -- "$MPQ" run "$T/nocand.json" --db "$DB"
spec "$T/dupcand.json" x "$M" "$U16"; sed -i 's/"int8c"\]/"int4g32"]/' "$T/dupcand.json"
t spec-duplicate-candidates 5 "candidates" -- "$MPQ" run "$T/dupcand.json" --db "$DB"
r spec-kv-pair 5 "kv.pairs[0]" "$M" "$U16" ', "kv": {"pairs": ["k5v4"]}'
r spec-kv-mode 5 "kv.scheme.mode" "$M" "$U16" ', "kv": {"scheme": {"mode": "foo"}, "pairs": ["k4v4"]}'
r spec-kv-group 5 "kv.scheme.group_size" "$M" "$U16" ', "kv": {"scheme": {"group_size": 0}, "pairs": ["k4v4"]}'
r spec-seed-string 5 "seed" "$M" "$U16" ', "seed": "one"'
r spec-eval-seq-len 5 "evaluation.seq_len" "$M" "$U16" ', "evaluation": {"data": "'"$EVAL"'", "seq_len": 0}'
spec "$T/metricsobj.json" x "$M" "$U16"; sed -i 's/"metrics": \[[^]]*\]/"metrics": {"a": 1}/' "$T/metricsobj.json"
t spec-metrics-object 5 "metrics" -- "$MPQ" run "$T/metricsobj.json" --db "$DB"
mkdir -p "$T/specdir.json"
t spec-directory 3 "specdir.json" -- "$MPQ" run "$T/specdir.json" --db "$DB"
{ printf '{"name": "deep", "x": '; printf '[%.0s' $(seq 3000); } >"$T/deep.json"
t spec-deep-nesting 4 "deep.json" -- "$MPQ" run "$T/deep.json" --db "$DB"
r spec-missing-tokenizer 3 "no-tok.bin" "$M" "$U16" ', "tokenizer": "'"$T/no-tok.bin"'"'
t spec-under-file 3 "good.json/x.json" -- "$MPQ" run "$T/good.json/x.json" --db "$DB"

# ---- configs
cfg() { printf '%s' "$2" >"$T/$1"; }
cfg c-notjson.json '{"mpq_config_version": 1, "weights": '
t config-not-json 4 "c-notjson.json" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -c "$T/c-notjson.json"
cfg c-v2.json '{"mpq_config_version": 2}'
t config-newer 6 "c-v2.json" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -c "$T/c-v2.json"
cfg c-nov.json '{"weights": {"default": "int4g32"}}'
t config-no-version 4 "mpq_config_version" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -c "$T/c-nov.json"
cfg c-cand.json '{"mpq_config_version": 1, "weights": {"default": "int9g7"}}'
t config-bad-candidate 4 "int9g7" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -c "$T/c-cand.json"
cfg c-kvblk.json '{"mpq_config_version": 1, "kv": {"layers": {"blk.7": "k4v4"}}}'
t config-kv-block 4 "blk.7" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -c "$T/c-kvblk.json"
cfg c-kvpair.json '{"mpq_config_version": 1, "kv": {"default": "k7v4"}}'
t config-kv-pair 4 "k7v4" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -c "$T/c-kvpair.json"
cfg c-kvmode.json '{"mpq_config_version": 1, "kv": {"scheme": {"mode": "zip"}}}'
t config-kv-mode 4 "mode" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -c "$T/c-kvmode.json"
cfg c-layers.json '{"mpq_config_version": 1, "weights": {"layers": ["int4g32"]}}'
t config-layers-array 4 "weights.layers" -- "$MPQ" export --config "$T/c-layers.json" --model "$M" --format mpq -o "$T/x.json"
: >"$T/c-empty.json"
t config-empty 4 "c-empty.json" -- "$MPQ" export --config "$T/c-empty.json" --model "$M" --format hawq -o "$T/x.json"

# ---- budgets, metric expressions, ties, pins (solve on the stored job)
s() { local name=$1 code=$2 needle=$3; shift 3; t "$name" "$code" "$needle" -- "$MPQ" solve good --db "$DB" "$@"; }
s budget-zero 2 "avg-bits=0" --budget avg-bits=0
s budget-over-64 2 "avg-bits=65" --budget avg-bits=65
s budget-bits-fraction 2 "bits=1.5" --budget bits=1.5
s budget-seven-digits 2 "avg-bits=3.1234567" --budget avg-bits=3.1234567
s budget-unknown-kind 2 "watts=3" --budget watts=3
s budget-duplicate 5 "avg-bits" --budget avg-bits=4 --budget avg-bits=5
s budget-latency-no-table 5 "latency table" --budget latency=100
s metric-trailing-plus 5 "kl+" --budget avg-bits=4 --metric "kl+"
s metric-weight-range 5 "1e400*kl" --budget avg-bits=4 --metric "1e400*kl"
s metric-missing 5 "nosuch" --budget avg-bits=4 --metric "kl+nosuch"
s ties-unknown 2 "foo" --budget avg-bits=4 --ties qkv,foo
s pin-unknown-candidate 5 "int9g9" --budget avg-bits=4 --pin "blk.0.attn_q=int9g9"
s pin-no-layer 5 "blk.99.*" --budget avg-bits=4 --pin "blk.99.*=int8c"

# ---- latency tables
printf '{"int4g32": ' >"$T/lat-notjson.json"
s latency-not-json 5 "latency table" --budget latency=1000 --latency-table "$T/lat-notjson.json"
printf '[1, 2]' >"$T/lat-array.json"
s latency-array 5 "latency table" --budget latency=1000 --latency-table "$T/lat-array.json"
printf '{"int4g32": {"*": 1}}' >"$T/lat-nocand.json"
s latency-no-candidate 5 "int8c" --budget latency=1000 --latency-table "$T/lat-nocand.json"
printf '{"int4g32": {"*": 1}, "int8c": {"attn_q": -3, "*": 2}}' >"$T/lat-neg.json"
s latency-negative 5 "attn_q" --budget latency=1000 --latency-table "$T/lat-neg.json"
printf '{"int4g32": {"*": "fast"}, "int8c": {"*": 2}}' >"$T/lat-str.json"
s latency-string 5 "int4g32" --budget latency=1000 --latency-table "$T/lat-str.json"
s latency-missing-file 3 "no-lat.json" --budget latency=1000 --latency-table "$T/no-lat.json"
printf '{"int4g32": {"attn_q": 1}, "int8c": {"*": 2}}' >"$T/lat-nolayer.json"
s latency-no-layer 5 "blk.0.attn_k" --budget latency=1000 --latency-table "$T/lat-nolayer.json"

# ---- databases (damaged copies: the copy must stay as it was, too)
mkdir -p "$T/dbdir"
t db-directory 3 "dbdir" -- "$MPQ" run "$T/good.json" --db "$T/dbdir" -q
t db-under-file 3 "r.db/x.db" -- "$MPQ" run "$T/good.json" --db "$DB/x.db" -q
t db-status-missing 3 "none.db" -- "$MPQ" status --db "$T/none.db"
[ ! -e "$T/none.db" ] && ok "db-status-missing creates nothing" || bad "db-status-missing created $T/none.db"
head -c 8192 "$DB" >"$T/trunc.db"
ALSO=$T/trunc.db t db-truncated 7 "trunc.db" -- "$MPQ" status good --db "$T/trunc.db"
printf 'hello, not a database\n' >"$T/text.db"
ALSO=$T/text.db t db-text 7 "text.db" -- "$MPQ" solve good --db "$T/text.db" --budget avg-bits=4
cp "$DB" "$T/nover.db"; sqlite3 "$T/nover.db" 'DROP TABLE schema_version'
ALSO=$T/nover.db t db-no-schema-version 7 "nover.db" -- "$MPQ" run "$T/good.json" --db "$T/nover.db" -q
cp "$DB" "$T/spec.db"; sqlite3 "$T/spec.db" "UPDATE jobs SET spec_json = '{\"name\": ' WHERE name = 'good'"
ALSO=$T/spec.db t db-stored-spec-not-json 4 "good" -- "$MPQ" resume good --db "$T/spec.db" -q
cp "$DB" "$T/moved.db"; sqlite3 "$T/moved.db" "UPDATE jobs SET spec_json = json_set(spec_json, '\$.model', '$T/gone.bin') WHERE name = 'good'"
ALSO=$T/moved.db t db-model-moved 3 "gone.bin" -- "$MPQ" evaluate good --all --db "$T/moved.db"
cp "$DB" "$T/arch.db"; sqlite3 "$T/arch.db" "UPDATE models SET arch = 'gpt-j'"
ALSO=$T/arch.db t db-unknown-arch 4 "unknown arch 'gpt-j'" -- "$MPQ" solve good --db "$T/arch.db" --budget avg-bits=4
cp "$DB" "$T/fmt.db"; sqlite3 "$T/fmt.db" "UPDATE models SET format = 'onnx'"
ALSO=$T/fmt.db t db-unknown-format 4 "unknown format 'onnx'" -- "$MPQ" export good --db "$T/fmt.db" --format mpq -o -

# ---- a database locked by another process (BEGIN EXCLUSIVE held by the sqlite3 shell)
mkfifo "$T/lock.in"
sqlite3 "$DB" <"$T/lock.in" >/dev/null 2>&1 &
lock_pid=$!
exec 9>"$T/lock.in"
echo "BEGIN EXCLUSIVE; INSERT INTO schema_version SELECT * FROM schema_version WHERE 0;" >&9
for i in $(seq 50); do
  sqlite3 "$DB" 'BEGIN IMMEDIATE; ROLLBACK;' >/dev/null 2>&1 || break
  sleep 0.1
done
t db-locked-run 7 "r.db" -- "$MPQ" run "$T/good.json" --db "$DB" -q
t db-locked-solve 7 "r.db" -- "$MPQ" solve good --db "$DB" --budget avg-bits=6
echo "ROLLBACK;" >&9
exec 9>&-
wait "$lock_pid" 2>/dev/null

# ---- outputs of the wrong kind (a folder where a file is expected, a path under a file)
t out-export-directory 3 "dbdir" -- "$MPQ" export good --db "$DB" --format mpq -o "$T/dbdir"
t out-report-under-file 3 "good.json/r.md" -- "$MPQ" report good --db "$DB" -o "$T/good.json/r.md"
t out-plot-under-file 3 "good.json/p.svg" -- "$MPQ" plot good --db "$DB" --what sensitivity -o "$T/good.json/p.svg"
t out-logits-directory 3 "dbdir" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 --logits-out "$T/dbdir"
t out-json-under-file 3 "good.json/e.json" -- "$MPQ" eval -m "$M" -d "$EVAL" -L 16 -n 1 -o "$T/good.json/e.json"
t out-kvtuner-directory 3 "dbdir" -- "$MPQ" export good --db "$DB" --format kvtuner -o "$T/dbdir"

[ "$(sqlite3 "$DB" 'PRAGMA integrity_check')" = ok ] && ok "r.db integrity" || bad "r.db integrity"
echo "bad_inputs: $n_cases cases, $fails failed"
[ "$fails" -eq 0 ]
