/*
 * fuzz_llama2c.c - libFuzzer harness for the llama2.c checkpoint loader (src/model/llama2c.c):
 * the input is written as a file and loaded through mpq_model_load (legacy 7-int header and
 * the versioned "ak42" v1 format). A loaded model's layer table is walked.
 * Seeds: ../shared llama2.c checkpoints and their truncations (tests/fuzz/seeds.sh).
 */
#include "fuzz_util.h"
#include "mpq/mpq_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("model.bin", data, size);
    mpq_model *m = NULL;
    mpq_err err = {0};
    if (mpq_model_load(path, &m, &err) == MPQ_OK) {
        const mpq_model_config *c = mpq_model_get_config(m);
        int64_t sum = c->dim + c->n_layers;
        for (int i = 0; i < mpq_model_n_linear(m); i++) sum += mpq_model_linear(m, i)->n_params;
        if (sum < 0) abort(); /* sizes read from a file must not go negative */
    }
    mpq_model_free(m);
    return 0;
}
