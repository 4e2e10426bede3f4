/*
 * fuzz_data.c - libFuzzer harness for token streams (src/model/data.c): the first input byte
 * chooses the format (text with the stories260K tokenizer, uint16 or uint32) and a vocabulary
 * bound, the rest is written as the file and loaded with mpq_data_load; a loaded stream is cut
 * into windows (mpq_data_sequences).
 * Seeds: heads of the ../shared .u16 token files and text files.
 */
#include "fuzz_util.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_tokenizer.h"

static mpq_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    mpq_err err = {0};
    if (mpq_tokenizer_load(fuzz_shared_path("models/stories260K/tok512.bin"), 512, &tok, &err) != MPQ_OK)
        fuzz_die("tokenizer", &err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *names[3] = {"data.txt", "data.u16", "data.u32"};
    static const mpq_data_format formats[3] = {MPQ_DATA_TEXT, MPQ_DATA_U16, MPQ_DATA_U32};
    static const int vocabs[4] = {0, 512, 1, 70000};
    int f = data[0] % 3, v = (data[0] / 3) % 4;
    /* text: at most 64 KiB (libFuzzer's default -max_len is far below; a corpus file may not
     * be): BPE merges cost O(n log n) per line, so long lines stay fast */
    if (f == 0 && size > 65537) size = 65537;
    const char *path = fuzz_write_file(names[f], data + 1, size - 1);
    mpq_data_opts o = mpq_data_opts_default();
    o.format = (data[0] / 12) % 2 ? MPQ_DATA_AUTO : formats[f];
    o.vocab_size = vocabs[v];
    mpq_data *d = NULL;
    mpq_data_seqs *s = NULL;
    mpq_err err = {0};
    if (mpq_data_load(path, f == 0 ? tok : NULL, &o, &d, &err) == MPQ_OK) {
        size_t n = mpq_data_n_tokens(d);
        const int32_t *t = mpq_data_tokens(d);
        for (size_t i = 0; i < n; i++)
            if (t[i] < 0 || (o.vocab_size > 0 && t[i] >= o.vocab_size)) abort(); /* the bound held */
        if (strlen(mpq_data_sha256(d)) != 64) abort();
        if (n > 1) mpq_data_sequences(d, 1 + (int)(n % 7), 2, 5, &s, &err);
    }
    mpq_data_seqs_free(s);
    mpq_data_free(d);
    return 0;
}
