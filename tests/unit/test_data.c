/* test_data.c - token streams from real text and .u16 files, windows, provenance, hostile token files. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_data.h"
#include "test_util.h"
#include "test_main.h"

static mpq_tokenizer *tok512(void) {
    mpq_tokenizer *t = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_tokenizer_load(shared_path("models/stories260K/tok512.bin"), 512, &t, &err) == MPQ_OK, "%s",
                  err.msg);
    return t;
}

static mpq_data *load(const char *path, const mpq_tokenizer *t, int vocab) {
    mpq_data_opts o = mpq_data_opts_default();
    o.vocab_size = vocab;
    mpq_data *d = NULL;
    mpq_err err = {0};
    ck_assert_msg(mpq_data_load(path, t, &o, &d, &err) == MPQ_OK, "%s", err.msg);
    return d;
}

/* Tokenizing the calibration text reproduces the shared reference token file exactly. */
START_TEST(test_text_equals_u16) {
    mpq_tokenizer *t = tok512();
    mpq_data *a = load(shared_path("data/tinystories-calib.txt"), t, 0);
    mpq_data *b = load(shared_path("data/tinystories-calib.tok512.u16"), NULL, 512);
    ck_assert_int_eq(mpq_data_get_format(a), MPQ_DATA_TEXT);
    ck_assert_int_eq(mpq_data_get_format(b), MPQ_DATA_U16);
    ck_assert_uint_eq(mpq_data_n_tokens(a), 61239); /* shared/README */
    ck_assert_uint_eq(mpq_data_n_tokens(b), 61239);
    ck_assert_int_eq(memcmp(mpq_data_tokens(a), mpq_data_tokens(b), 61239 * sizeof(int32_t)), 0);
    /* 763 lines => 763 BOS */
    size_t n_bos = 0;
    for (size_t i = 0; i < mpq_data_n_tokens(a); i++) n_bos += mpq_data_tokens(a)[i] == MPQ_TOKEN_BOS;
    ck_assert_uint_eq(n_bos, 763);
    char want[65];
    mpq_err err = {0};
    ck_assert_int_eq(mpq_sha256_file(shared_path("data/tinystories-calib.tok512.u16"), want, &err), MPQ_OK);
    ck_assert_str_eq(mpq_data_sha256(b), want);
    ck_assert_str_ne(mpq_data_sha256(a), want);
    ck_assert_str_eq(mpq_data_path(b), shared_path("data/tinystories-calib.tok512.u16"));
    mpq_data_free(a);
    mpq_data_free(b);
    mpq_tokenizer_free(t);
}
END_TEST

START_TEST(test_eval_text_equals_u16_sotu) {
    mpq_tokenizer *t = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_tokenizer_load(shared_path("models/sotu-2.7M/tok2048.bin"), 2048, &t, &err), MPQ_OK);
    mpq_data *a = load(shared_path("data/sotu-eval.txt"), t, 2048);
    mpq_data *b = load(shared_path("data/sotu-eval.tok2048.u16"), NULL, 2048);
    ck_assert_uint_eq(mpq_data_n_tokens(a), mpq_data_n_tokens(b));
    ck_assert_int_eq(memcmp(mpq_data_tokens(a), mpq_data_tokens(b), mpq_data_n_tokens(a) * sizeof(int32_t)), 0);
    mpq_data_free(a);
    mpq_data_free(b);
    mpq_tokenizer_free(t);
}
END_TEST

START_TEST(test_sequences) {
    mpq_data *d = load(shared_path("data/tinystories-eval.tok512.u16"), NULL, 512);
    size_t nt = mpq_data_n_tokens(d);
    ck_assert_uint_eq(nt, 23040); /* shared/README */
    mpq_data_seqs *all = NULL, *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_data_sequences(d, 512, 0, 7, &all, &err), MPQ_OK);
    ck_assert_int_eq(all->n_seqs, (int)((nt - 1) / 512)); /* 44 */
    for (int i = 0; i < all->n_seqs; i++) {
        ck_assert_uint_eq(all->starts[i], (size_t)i * 512);
        /* window = inputs and next-token targets: its last token is the next window's first */
        ck_assert_int_eq(all->tokens[(size_t)i * 513], mpq_data_tokens(d)[(size_t)i * 512]);
        ck_assert_int_eq(all->tokens[(size_t)i * 513 + 512], mpq_data_tokens(d)[(size_t)i * 512 + 512]);
    }
    ck_assert_int_eq(mpq_data_sequences(d, 512, 10, 42, &s1, &err), MPQ_OK);
    ck_assert_int_eq(mpq_data_sequences(d, 512, 10, 42, &s2, &err), MPQ_OK);
    ck_assert_int_eq(mpq_data_sequences(d, 512, 10, 43, &s3, &err), MPQ_OK);
    ck_assert_int_eq(mpq_data_sequences(d, 512, 20, 42, &s4, &err), MPQ_OK);
    ck_assert_int_eq(memcmp(s1->tokens, s2->tokens, 10 * 513 * sizeof(int32_t)), 0); /* same seed */
    ck_assert_int_ne(memcmp(s1->starts, s3->starts, 10 * sizeof(size_t)), 0);         /* other seed */
    ck_assert_int_eq(memcmp(s1->starts, s4->starts, 10 * sizeof(size_t)), 0);         /* prefix */
    /* pinned: the windows every stored calibration number was computed on (the splitmix64
     * shuffle of mpq_rng.h; values from an independent implementation of the same shuffle) */
    const size_t pinned[10] = {4608, 20992, 1024, 1536, 7168, 19456, 7680, 13312, 0, 14336};
    for (int i = 0; i < 10; i++) ck_assert_uint_eq(s1->starts[i], pinned[i]);
    /* distinct windows, each a real window start, content equal to the stream */
    for (int i = 0; i < 20; i++) {
        ck_assert_uint_eq(s4->starts[i] % 512, 0);
        ck_assert_int_eq(memcmp(s4->tokens + (size_t)i * 513, mpq_data_tokens(d) + s4->starts[i],
                                513 * sizeof(int32_t)), 0);
        for (int j = 0; j < i; j++) ck_assert_uint_ne(s4->starts[i], s4->starts[j]);
    }
    mpq_data_seqs *bad = NULL;
    ck_assert_int_eq(mpq_data_sequences(d, 512, 45, 1, &bad, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "hold 44"));
    ck_assert_int_eq(mpq_data_sequences(d, 0, 1, 1, &bad, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(bad);
    mpq_data_seqs_free(all);
    mpq_data_seqs_free(s1);
    mpq_data_seqs_free(s2);
    mpq_data_seqs_free(s3);
    mpq_data_seqs_free(s4);
    mpq_data_free(d);
}
END_TEST

/* Hostile token files built from the real eval tokens. */
START_TEST(test_hostile_tokens) {
    char dir[512], p16[600], p32[600], ptxt[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(p16, sizeof p16, "%s/x.u16", dir);
    snprintf(p32, sizeof p32, "%s/x.u32", dir);
    snprintf(ptxt, sizeof ptxt, "%s/x.txt", dir);
    size_t sz = 0;
    unsigned char *orig = test_read_file(shared_path("data/tinystories-eval.tok512.u16"), &sz);
    ck_assert_ptr_nonnull(orig);
    mpq_data *d = NULL;
    mpq_err err = {0};
    mpq_data_opts o = mpq_data_opts_default();
    o.vocab_size = 512;
    /* odd size */
    ck_assert_int_eq(test_write_file(p16, orig, sz - 1), 0);
    ck_assert_int_eq(mpq_data_load(p16, NULL, &o, &d, &err), MPQ_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, p16) && strstr(err.msg, "multiple"), "%s", err.msg);
    /* id >= vocab at token 100 */
    orig[200] = 0x00, orig[201] = 0x02; /* 512 */
    ck_assert_int_eq(test_write_file(p16, orig, sz), 0);
    ck_assert_int_eq(mpq_data_load(p16, NULL, &o, &d, &err), MPQ_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, p16) && strstr(err.msg, "token 100") && strstr(err.msg, "id 512"), "%s", err.msg);
    /* the same bytes read as u32 (explicit) : size multiple of 4, ids huge */
    o.format = MPQ_DATA_U32;
    ck_assert_int_eq(mpq_data_load(p16, NULL, &o, &d, &err), MPQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "token 0"));
    /* a valid u32 file */
    uint32_t ids[3] = {1, 300, 511};
    ck_assert_int_eq(test_write_file(p32, ids, sizeof ids), 0);
    o.format = MPQ_DATA_AUTO;
    ck_assert_int_eq(mpq_data_load(p32, NULL, &o, &d, &err), MPQ_OK);
    ck_assert_uint_eq(mpq_data_n_tokens(d), 3);
    ck_assert_int_eq(mpq_data_tokens(d)[1], 300);
    mpq_data_seqs *s = NULL;
    ck_assert_int_eq(mpq_data_sequences(d, 2, 0, 0, &s, &err), MPQ_OK);
    ck_assert_int_eq(s->n_seqs, 1);
    mpq_data_seqs_free(s);
    mpq_data_free(d);
    d = NULL;
    /* text without a tokenizer; missing file */
    ck_assert_int_eq(test_write_file(ptxt, "hello\n", 6), 0);
    ck_assert_int_eq(mpq_data_load(ptxt, NULL, &o, &d, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_data_load("/nonexistent/x.u16", NULL, &o, &d, &err), MPQ_ERR_IO);
    ck_assert_ptr_null(d);
    /* text: empty lines and CRLF are skipped / stripped; vocab smaller than the tokenizer's */
    mpq_tokenizer *t = tok512();
    ck_assert_int_eq(test_write_file(ptxt, "\nOnce upon a time\r\n\n\nOnce upon a time", 37), 0);
    o.vocab_size = 0;
    ck_assert_int_eq(mpq_data_load(ptxt, t, &o, &d, &err), MPQ_OK);
    size_t n = mpq_data_n_tokens(d);
    ck_assert_uint_eq(n % 2, 0);
    ck_assert_int_eq(memcmp(mpq_data_tokens(d), mpq_data_tokens(d) + n / 2, n / 2 * sizeof(int32_t)), 0);
    mpq_data_free(d);
    d = NULL;
    o.vocab_size = 10;
    ck_assert_int_eq(mpq_data_load(ptxt, t, &o, &d, &err), MPQ_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, ptxt) && strstr(err.msg, "line 2"), "%s", err.msg);
    mpq_tokenizer_free(t);
    remove(p16);
    remove(p32);
    remove(ptxt);
    rmdir(dir);
    free(orig);
}
END_TEST

Suite *data_suite(void) {
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("data");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_text_equals_u16);
    tcase_add_test(tc, test_eval_text_equals_u16_sotu);
    tcase_add_test(tc, test_sequences);
    tcase_add_test(tc, test_hostile_tokens);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(data_suite)
