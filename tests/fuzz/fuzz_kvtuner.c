/*
 * fuzz_kvtuner.c - libFuzzer harness for KVTuner layer configs (search/kv_export.c): the input
 * is the JSON given to mpq_kvsearch_kvtuner_parse for a model of 5 blocks (stories260K) and of
 * 1..8 blocks (from the input length); pairs that parse are written back
 * (mpq_kvsearch_kvtuner_json) and must parse to the same pairs.
 * Seeds: tests/fixtures/export/mixed.kvtuner.json and generated documents.
 */
#include "fuzz_util.h"
#include "mpq/mpq_kvsearch.h"

static void parse_for(const char *json, int n_blocks) {
    mpq_kv_pair pairs[8], again[8];
    mpq_err err = {0};
    if (mpq_kvsearch_kvtuner_parse(json, "kvtuner.json", n_blocks, pairs, &err) != MPQ_OK) return;
    char *out = mpq_kvsearch_kvtuner_json(pairs, n_blocks);
    if (!out) return;
    if (mpq_kvsearch_kvtuner_parse(out, "written", n_blocks, again, &err) != MPQ_OK) {
        fprintf(stderr, "written KVTuner config refused: %s\n%s\n", err.msg, out);
        abort();
    }
    for (int b = 0; b < n_blocks; b++)
        if (pairs[b].k_bits != again[b].k_bits || pairs[b].v_bits != again[b].v_bits) {
            fprintf(stderr, "written KVTuner config differs at block %d\n%s\n", b, out);
            abort();
        }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstr(data, size);
    parse_for(json, 5);
    parse_for(json, 1 + (int)(size % 8));
    free(json);
    return 0;
}
