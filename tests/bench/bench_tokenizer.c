/* bench_tokenizer.c - encoding throughput of the llama2.c BPE tokenizer (src/model/tokenizer.c)
 * on the shared text files, line by line as mpq_data_load does (split at '\n', one trailing
 * '\r' dropped, BOS first), with the shared tok512 and tok2048 vocabularies. Prints MB/s of
 * input text and tokens/s; asserts nothing about time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_tokenizer.h"
#include "test_util.h"

static int bench_file(const char *tok_rel, int vocab, const char *text_rel) {
    mpq_tokenizer *t = NULL;
    mpq_err err = {0};
    size_t size = 0;
    char *buf = test_read_file(shared_path(text_rel), &size);
    if (!buf || !(buf = realloc(buf, size + 1))) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", text_rel);
        free(buf);
        return 1;
    }
    buf[size] = '\0';
    if (mpq_tokenizer_load(shared_path(tok_rel), vocab, &t, &err) != MPQ_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        free(buf);
        return 1;
    }
    long long n_tok = 0;
    size_t longest = 0;
    double t0 = mpq_time_now();
    for (char *p = buf, *end = buf + size; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char *next = nl ? nl + 1 : end;
        if (len > 0 && p[len - 1] == '\r') len--;
        p[len] = '\0';
        if (len > longest) longest = len;
        if (len > 0) {
            int *ids = NULL, n = 0;
            if (mpq_tokenizer_encode(t, p, true, false, &ids, &n, &err) != MPQ_OK) {
                fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                break;
            }
            n_tok += n;
            free(ids);
        }
        p = next;
    }
    double el = mpq_time_now() - t0;
    printf("  %-28s %-10s %8.2f MB in %7.3f s: %8.3f MB/s, %10.0f tokens/s (longest line %zu B)\n", text_rel,
           strrchr(tok_rel, '/') + 1, size / 1e6, el, size / 1e6 / el, n_tok / el, longest);
    mpq_tokenizer_free(t);
    free(buf);
    return 0;
}

int main(void) {
    int rc = 0;
    const char *texts[] = {"data/wikitext2-raw-test.txt", "data/tinyshakespeare.txt"};
    for (int i = 0; i < 2; i++) {
        rc |= bench_file("models/stories260K/tok512.bin", 512, texts[i]);
        rc |= bench_file("models/sotu-2.7M/tok2048.bin", 2048, texts[i]);
    }
    return rc;
}
