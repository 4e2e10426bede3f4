/*
 * fuzz_config.c - libFuzzer harness for mpq config files (src/quant/config.c): the input is the
 * JSON text given to mpq_config_parse for the stories260K model; a config that parses is
 * written back (mpq_config_to_json), must parse again, and its statistics are computed.
 * Seeds: tests/fixtures/export/mixed.mpq.json and generated configs (tests/fuzz/seeds.sh).
 */
#include "fuzz_util.h"
#include "mpq/mpq_config.h"
#include "mpq/mpq_model.h"

static mpq_model *model;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    mpq_err err = {0};
    if (mpq_model_load(fuzz_shared_path("models/stories260K/stories260K.bin"), &model, &err) != MPQ_OK)
        fuzz_die("model", &err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstr(data, size);
    mpq_config *cfg = NULL, *again = NULL;
    mpq_err err = {0};
    if (mpq_config_parse(json, "cfg.json", model, &cfg, &err) == MPQ_OK) {
        char *out = mpq_config_to_json(cfg, model);
        if (out && mpq_config_parse(out, "written", model, &again, &err) != MPQ_OK) {
            fprintf(stderr, "written config refused: %s\n%s\n", err.msg, out);
            abort();
        }
        free(out);
        mpq_config_stats st;
        mpq_config_get_stats(cfg, model, 512, &st, &err);
    }
    mpq_config_free(again);
    mpq_config_free(cfg);
    free(json);
    return 0;
}
