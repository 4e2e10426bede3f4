/* test_tokenizer.c - llama2.c tokenizer against golden ids from llama2.c's reference encoder and
 * sentencepiece on the shared real text, decode round trips, and hostile tokenizer files. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_tokenizer.h"
#include "test_util.h"
#include "test_main.h"

static mpq_tokenizer *load_tok(const char *rel, int vocab) {
    mpq_tokenizer *t = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_tokenizer_load(shared_path(rel), vocab, &t, &err) == MPQ_OK, "%s", err.msg);
    return t;
}

/* Encodes every "text TAB ids" line (ids with BOS first) and counts exact matches. */
static void golden_tsv(const char *tok_rel, int vocab, const char *tsv_rel, int *n_lines, int *n_match) {
    mpq_tokenizer *t = load_tok(tok_rel, vocab);
    size_t sz = 0;
    char *buf = test_read_file(shared_path(tsv_rel), &sz);
    ck_assert_ptr_nonnull(buf);
    buf = realloc(buf, sz + 1);
    buf[sz] = '\0';
    *n_lines = *n_match = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *tab = strrchr(line, '\t');
        ck_assert_ptr_nonnull(tab);
        *tab = '\0';
        int want[4096], nw = 0;
        for (char *p = tab + 1, *e; *p; p = e) {
            long v = strtol(p, &e, 10);
            if (e == p) break;
            ck_assert_int_lt(nw, 4096);
            want[nw++] = (int)v;
        }
        int *ids = NULL, n = 0;
        mpq_err err = {0};
        ck_assert_int_eq(mpq_tokenizer_encode(t, line, true, false, &ids, &n, &err), MPQ_OK);
        (*n_lines)++;
        if (n == nw && memcmp(ids, want, (size_t)n * sizeof(int)) == 0) (*n_match)++;
        else fprintf(stderr, "mismatch: %s\n", line);
        /* round trip: decoding the ids gives the line back */
        char *back = NULL;
        ck_assert_int_eq(mpq_tokenizer_decode(t, ids, n, &back, &err), MPQ_OK);
        ck_assert_str_eq(back, line);
        free(back);
        free(ids);
    }
    free(buf);
    mpq_tokenizer_free(t);
}

START_TEST(test_tinystories_golden) {
    int n = 0, ok = 0;
    golden_tsv("models/stories260K/tok512.bin", 512, "data/tinystories-eval.tok512.golden.tsv", &n, &ok);
    ck_assert_int_eq(n, 319); /* shared/README: 319 eval lines */
    ck_assert_int_eq(ok, n);
}
END_TEST

START_TEST(test_sotu_golden) {
    int n = 0, ok = 0;
    golden_tsv("models/sotu-2.7M/tok2048.bin", 2048, "data/sotu-eval.tok2048.golden.tsv", &n, &ok);
    ck_assert_int_eq(n, 945); /* lines of the golden file */
    ck_assert_int_eq(ok, n);
}
END_TEST

/* sentencepiece 0.1.97 ids (Llama-2 tokenizer.model) vs this encoder with tokenizer-32k.bin. */
START_TEST(test_sentencepiece_golden_32k) {
    mpq_tokenizer *t = load_tok("data/tokenizer-32k.bin", 32000);
    size_t sz = 0;
    char *buf = test_read_file(shared_path("data/sotu-golden-dev.jsonl"), &sz);
    ck_assert_ptr_nonnull(buf);
    buf = realloc(buf, sz + 1);
    buf[sz] = '\0';
    int n_lines = 0, n_match = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        ck_assert_ptr_nonnull(j);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(j, "ids");
        ck_assert(cJSON_IsString(text) && cJSON_IsArray(want));
        int *ids = NULL, n = 0;
        mpq_err err = {0};
        ck_assert_int_eq(mpq_tokenizer_encode(t, text->valuestring, false, false, &ids, &n, &err), MPQ_OK);
        bool same = n == cJSON_GetArraySize(want);
        for (int i = 0; same && i < n; i++) same = ids[i] == cJSON_GetArrayItem(want, i)->valueint;
        n_lines++;
        n_match += same;
        if (!same) fprintf(stderr, "32k mismatch: %s\n", text->valuestring);
        free(ids);
        cJSON_Delete(j);
    }
    fprintf(stderr, "sotu-golden-dev: %d / %d lines identical to sentencepiece\n", n_match, n_lines);
    ck_assert_int_eq(n_lines, 600);
    ck_assert_int_eq(n_match, n_lines);
    free(buf);
    mpq_tokenizer_free(t);
}
END_TEST

START_TEST(test_encode_decode_basics) {
    mpq_tokenizer *t = load_tok("models/sotu-2.7M/tok2048.bin", 0);
    ck_assert_int_eq(mpq_tokenizer_n_vocab(t), 2048);
    int *ids = NULL, n = 0;
    mpq_err err = {0};
    /* sotu-2.7M/README.md: encode("The state of our Union") = 1 385 1287 285 312 1096 */
    ck_assert_int_eq(mpq_tokenizer_encode(t, "The state of our Union", true, true, &ids, &n, &err), MPQ_OK);
    int want[] = {1, 385, 1287, 285, 312, 1096, 2};
    ck_assert_int_eq(n, 7);
    for (int i = 0; i < n; i++) ck_assert_int_eq(ids[i], want[i]);
    ck_assert_str_eq(mpq_tokenizer_decode_piece(t, 1, 385), "The");
    ck_assert_str_eq(mpq_tokenizer_decode_piece(t, 385, 1287), " state");
    ck_assert_ptr_null(mpq_tokenizer_decode_piece(t, 1, 2048));
    free(ids);
    /* empty text: only BOS, no dummy prefix */
    ck_assert_int_eq(mpq_tokenizer_encode(t, "", true, false, &ids, &n, &err), MPQ_OK);
    ck_assert_int_eq(n, 1);
    free(ids);
    /* byte fallback: a code point outside the vocabulary becomes its UTF-8 bytes + 3, and
     * decoding the <0xNN> pieces restores it */
    const char *odd = "snow \xE2\x98\x83 and \xF0\x9F\x98\x80!";
    ck_assert_int_eq(mpq_tokenizer_encode(t, odd, true, false, &ids, &n, &err), MPQ_OK);
    int n_bytes = 0;
    for (int i = 0; i < n; i++) n_bytes += ids[i] >= 3 && ids[i] < 259;
    ck_assert_int_ge(n_bytes, 7);
    char *back = NULL;
    ck_assert_int_eq(mpq_tokenizer_decode(t, ids, n, &back, &err), MPQ_OK);
    ck_assert_str_eq(back, odd);
    free(back);
    free(ids);
    int bad[] = {1, 5000};
    ck_assert_int_eq(mpq_tokenizer_decode(t, bad, 2, &back, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "position 1"));
    ck_assert_int_eq(mpq_tokenizer_lookup(t, " "), mpq_tokenizer_encode(t, " ", false, false, &ids, &n, &err) == MPQ_OK ? ids[0] : -2);
    free(ids);
    mpq_tokenizer_free(t);
    mpq_tokenizer_free(NULL);
}
END_TEST

/* Hostile tokenizer files made from the real tok512.bin. */
START_TEST(test_hostile_tokenizer) {
    char dir[512], path[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tok.bin", dir);
    size_t sz = 0;
    unsigned char *orig = test_read_file(shared_path("models/stories260K/tok512.bin"), &sz);
    ck_assert_ptr_nonnull(orig);
    unsigned char *b = malloc(sz + 16);
    int32_t v;
    struct {
        const char *what;
        size_t len;     /* bytes of the file to write */
        long patch_at;  /* -1: none; else an int32 written at this offset */
        int32_t patch;
        int vocab;
        mpq_status want;
        const char *msg; /* expected substring */
    } cases[] = {
        {"empty", 0, -1, 0, 0, MPQ_ERR_FORMAT, "max_token_length"},
        {"truncated in a piece", sz - 3, -1, 0, 512, MPQ_ERR_FORMAT, "piece"},
        {"truncated, vocab from file", sz - 3, -1, 0, 0, MPQ_ERR_FORMAT, "piece 511"},
        {"negative length", sz, 8, -5, 512, MPQ_ERR_FORMAT, "length -5"},
        {"huge length", sz, 8, 0x7fffffff, 512, MPQ_ERR_FORMAT, "length 2147483647"},
        {"negative max_token_length", sz, 0, -1, 512, MPQ_ERR_FORMAT, "max_token_length"},
        {"more pieces asked than stored", sz, -1, 0, 600, MPQ_ERR_FORMAT, "piece"},
        {"trailing bytes", sz, -1, 0, 500, MPQ_ERR_FORMAT, "trailing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(b, orig, sz);
        if (cases[i].patch_at >= 0) {
            v = cases[i].patch;
            memcpy(b + cases[i].patch_at, &v, 4); /* offset 8 = length of piece 0 */
        }
        ck_assert_int_eq(test_write_file(path, b, cases[i].len), 0);
        mpq_tokenizer *t = NULL;
        mpq_err err = {0};
        mpq_status st = mpq_tokenizer_load(path, cases[i].vocab, &t, &err);
        ck_assert_msg(st == cases[i].want, "%s: status %d (%s)", cases[i].what, st, err.msg);
        ck_assert_ptr_null(t);
        ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, cases[i].msg), "%s: message '%s'", cases[i].what,
                      err.msg);
    }
    mpq_tokenizer *t = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_tokenizer_load("/nonexistent/tok.bin", 0, &t, &err), MPQ_ERR_IO);
    ck_assert_int_eq(mpq_tokenizer_load(shared_path("models/stories260K/tok512.bin"), -1, &t, &err), MPQ_ERR_INVALID);
    remove(path);
    rmdir(dir);
    free(b);
    free(orig);
}
END_TEST

Suite *tokenizer_suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_tinystories_golden);
    tcase_add_test(tc, test_sotu_golden);
    tcase_add_test(tc, test_sentencepiece_golden_32k);
    tcase_add_test(tc, test_encode_decode_basics);
    tcase_add_test(tc, test_hostile_tokenizer);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(tokenizer_suite)
