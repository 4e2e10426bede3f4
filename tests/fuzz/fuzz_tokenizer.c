/*
 * fuzz_tokenizer.c - libFuzzer harness for the llama2.c tokenizer reader (src/model/tokenizer.c):
 * the input is written as tokenizer.bin and loaded with vocab_size 0 (pieces until the end of
 * the file); a loaded tokenizer encodes a fixed text (ASCII, multi-byte UTF-8, "<0x41>") and
 * decodes the ids back, and every piece is decoded once.
 * Seeds: the ../shared tokenizers and their truncations.
 */
#include "fuzz_util.h"
#include "mpq/mpq_tokenizer.h"

static const char *text = "Once upon a time, a l\xc3\xa9gume <0x41> said \xe2\x80\x9chi\xe2\x80\x9d \xf0\x9f\x98\x80 3.14\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("tokenizer.bin", data, size);
    mpq_tokenizer *tok = NULL;
    mpq_err err = {0};
    if (mpq_tokenizer_load(path, 0, &tok, &err) == MPQ_OK) {
        int *ids = NULL, n = 0;
        char *back = NULL;
        if (mpq_tokenizer_encode(tok, text, true, true, &ids, &n, &err) == MPQ_OK) {
            for (int i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= mpq_tokenizer_n_vocab(tok)) abort(); /* ids index the vocabulary */
            if (mpq_tokenizer_decode(tok, ids, n, &back, &err) != MPQ_OK) abort(); /* and decode */
        }
        free(back);
        free(ids);
        int nv = mpq_tokenizer_n_vocab(tok);
        for (int i = 0; i < nv && i < 4096; i++) {
            const char *p = mpq_tokenizer_decode_piece(tok, MPQ_TOKEN_BOS, i);
            if (p) (void)strlen(p);
        }
        if (mpq_tokenizer_decode_piece(tok, 0, nv) != NULL) abort(); /* out of range is NULL */
    }
    mpq_tokenizer_free(tok);
    return 0;
}
