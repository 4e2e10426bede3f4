/*
 * fuzz_safetensors.c - libFuzzer harness for the Hugging Face loader (src/model/hf.c,
 * safetensors.c): the input is config.json, a NUL byte, then model.safetensors (8-byte header
 * length, JSON header, tensor bytes); both are written into a folder that mpq_model_load reads.
 * Input without a NUL is all config.json, with an empty model.safetensors.
 * Seeds: the ../shared HF folders (F32 and BF16), whole and cut after the header.
 */
#include "fuzz_util.h"
#include "mpq/mpq_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t n_cfg = nul ? (size_t)(nul - data) : size;
    fuzz_write_file("hf/config.json", data, n_cfg);
    fuzz_write_file("hf/model.safetensors", nul ? nul + 1 : data, nul ? size - n_cfg - 1 : 0);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hf", fuzz_tmpdir());
    mpq_model *m = NULL;
    mpq_err err = {0};
    if (mpq_model_load(dir, &m, &err) == MPQ_OK) {
        int64_t sum = 0;
        for (int i = 0; i < mpq_model_n_linear(m); i++) sum += mpq_model_linear(m, i)->n_params;
        if (sum < 0) abort();
    }
    mpq_model_free(m);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hf", fuzz_tmpdir());
    if (mkdir(dir, 0700) != 0) fuzz_die(dir, NULL);
    return 0;
}
