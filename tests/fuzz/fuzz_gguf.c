/*
 * fuzz_gguf.c - libFuzzer harness for GGUF files: the input is written as model.gguf and
 * given to mpq_model_load (which recognizes GGUF by its magic) and to mpq_tokenizer_load
 * (a GGUF file carries its tokenizer). Where no GGUF reader is built in, both refuse the
 * file and this harness exercises only their dispatch.
 * Seeds: the ../shared GGUF files cut after their metadata, and the whole Q8_0 file's head.
 */
#include "fuzz_util.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("model.gguf", data, size);
    mpq_model *m = NULL;
    mpq_tokenizer *tok = NULL;
    mpq_err err = {0};
    if (mpq_model_load(path, &m, &err) == MPQ_OK) {
        int64_t sum = 0;
        for (int i = 0; i < mpq_model_n_linear(m); i++) sum += mpq_model_linear(m, i)->n_params;
        if (sum < 0) abort();
    }
    if (mpq_tokenizer_load(path, 0, &tok, &err) == MPQ_OK) {
        int *ids = NULL, n = 0;
        char *back = NULL;
        if (mpq_tokenizer_encode(tok, "The state of our Union", true, false, &ids, &n, &err) == MPQ_OK)
            mpq_tokenizer_decode(tok, ids, n, &back, &err);
        free(back);
        free(ids);
    }
    mpq_tokenizer_free(tok);
    mpq_model_free(m);
    return 0;
}
