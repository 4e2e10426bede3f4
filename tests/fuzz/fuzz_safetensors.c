/*
 * fuzz_safetensors.c - libFuzzer harness for the Hugging Face loader (src/model/hf.c,
 * safetensors.c). The input is three parts split at the first two NUL bytes:
 *     config.json \0 model.safetensors.index.json \0 safetensors bytes
 * written into a folder that mpq_model_load reads. With an empty index part the bytes are
 * model.safetensors (8-byte header length, JSON header, tensor data); otherwise they are the
 * shard s1.safetensors and the index (which should name it) is written beside it.
 * Seeds: the ../shared HF folders (F32 and BF16), whole and cut after the header, also as
 * one-shard indexed folders (tests/fuzz/seeds.sh).
 */
#include "fuzz_util.h"
#include "mpq/mpq_model.h"

static char dir[512];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p1 = memchr(data, 0, size);
    size_t n_cfg = p1 ? (size_t)(p1 - data) : size;
    const uint8_t *idx = p1 ? p1 + 1 : data + size;
    const uint8_t *p2 = memchr(idx, 0, (size_t)(data + size - idx));
    size_t n_idx = p2 ? (size_t)(p2 - idx) : (size_t)(data + size - idx);
    const uint8_t *st = p2 ? p2 + 1 : data + size;
    size_t n_st = (size_t)(data + size - st);
    char path[600];
    fuzz_write_file("hf/config.json", data, n_cfg);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    if (n_idx > 0) {
        fuzz_write_file("hf/model.safetensors.index.json", idx, n_idx);
        fuzz_write_file("hf/s1.safetensors", st, n_st);
    } else {
        fuzz_write_file("hf/model.safetensors", st, n_st);
    }
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
    snprintf(dir, sizeof dir, "%s/hf", fuzz_tmpdir());
    if (mkdir(dir, 0700) != 0) fuzz_die(dir, NULL);
    return 0;
}
