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


static int ref_pair(const mpq_tokenizer *t, int ta, int tb, char *sb) {
    const char *a = mpq_tokenizer_piece(t, ta), *b = mpq_tokenizer_piece(t, tb);
    size_t la = strlen(a);
    memcpy(sb, a, la);
    memcpy(sb + la, b, strlen(b) + 1);
    return mpq_tokenizer_lookup(t, sb);
}

/* The encoder as it was before the merge heap, kept as the reference: llama2.c run.c encode(),
 * which rescans every adjacent pair after each merge and takes the first best-scoring one. */
static int *ref_encode(const mpq_tokenizer *t, const char *text, int *n_out) {
    size_t tl = strlen(text);
    int *tok = malloc((tl + 3) * sizeof *tok), n = 0, max_len = 0;
    for (int i = 0; i < mpq_tokenizer_n_vocab(t); i++) {
        int l = (int)strlen(mpq_tokenizer_piece(t, i));
        if (l > max_len) max_len = l;
    }
    char *sb = malloc((size_t)max_len * 2 + 8);
    ck_assert(tok && sb);
    tok[n++] = MPQ_TOKEN_BOS;
    if (text[0] != '\0') {
        int dummy = mpq_tokenizer_lookup(t, " ");
        if (dummy >= 0) tok[n++] = dummy;
    }
    size_t sl = 0;
    for (const char *c = text; *c; c++) {
        if (((unsigned char)*c & 0xC0) != 0x80) sl = 0;
        sb[sl++] = *c;
        sb[sl] = '\0';
        if (((unsigned char)c[1] & 0xC0) == 0x80 && sl < 4) continue;
        int id = mpq_tokenizer_lookup(t, sb);
        if (id != -1) tok[n++] = id;
        else
            for (size_t i = 0; i < sl; i++) tok[n++] = (unsigned char)sb[i] + 3;
        sl = 0;
    }
    /* pair[i]: the piece tok[i] tok[i+1] make (-1: none); only the two pairs next to a merge
     * change, so they alone are looked up again, which keeps the reference fast enough to run
     * on whole files while the choice of merge is run.c's scan */
    int *pair = malloc((size_t)(n > 1 ? n : 1) * sizeof *pair);
    ck_assert_ptr_nonnull(pair);
    for (int i = 0; i + 1 < n; i++) pair[i] = ref_pair(t, tok[i], tok[i + 1], sb);
    for (;;) {
        float best = -1e10f;
        int best_id = -1, best_i = -1;
        for (int i = 0; i + 1 < n; i++) {
            int id = pair[i];
            if (id != -1 && mpq_tokenizer_score(t, id) > best) {
                best = mpq_tokenizer_score(t, id);
                best_id = id;
                best_i = i;
            }
        }
        if (best_i == -1) break;
        tok[best_i] = best_id;
        memmove(tok + best_i + 1, tok + best_i + 2, (size_t)(n - best_i - 2) * sizeof *tok);
        memmove(pair + best_i + 1, pair + best_i + 2, (size_t)(n - best_i - 2) * sizeof *pair);
        n--;
        if (best_i > 0) pair[best_i - 1] = ref_pair(t, tok[best_i - 1], tok[best_i], sb);
        if (best_i + 1 < n) pair[best_i] = ref_pair(t, tok[best_i], tok[best_i + 1], sb);
    }
    free(pair);
    free(sb);
    *n_out = n;
    return tok;
}

/* Encodes text with BOS and checks the ids against ref_encode; returns the number of ids. */
static int same_as_ref(const mpq_tokenizer *t, const char *what, const char *text) {
    int *ids = NULL, n = 0, nr = 0;
    mpq_err err = {0};
    ck_assert_msg(mpq_tokenizer_encode(t, text, true, false, &ids, &n, &err) == MPQ_OK, "%s: %s", what, err.msg);
    int *want = ref_encode(t, text, &nr);
    int at = 0;
    while (at < n && at < nr && ids[at] == want[at]) at++;
    ck_assert_msg(n == nr && at == n, "%s: %d ids vs %d from the reference, first difference at %d", what, n, nr, at);
    free(want);
    free(ids);
    return n;
}

/* Every line of the shared text files (split as mpq_data_load does) gives the reference's ids. */
static void same_as_ref_file(const mpq_tokenizer *t, const char *rel) {
    size_t size = 0;
    char *buf = test_read_file(shared_path(rel), &size);
    ck_assert_ptr_nonnull(buf);
    buf = realloc(buf, size + 1);
    buf[size] = '\0';
    int n_lines = 0;
    long n_ids = 0;
    for (char *p = buf, *end = buf + size; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char *next = nl ? nl + 1 : end;
        if (len > 0 && p[len - 1] == '\r') len--;
        p[len] = '\0';
        char what[64];
        snprintf(what, sizeof what, "%s line %d", rel, n_lines + 1);
        n_ids += same_as_ref(t, what, p);
        n_lines++;
        p = next;
    }
    ck_assert_int_gt(n_lines, 1000);
    ck_assert_int_gt(n_ids, (long)(size / 8)); /* it encoded something: >= 1 id per 8 bytes */
    free(buf);
}

START_TEST(test_heap_same_ids_shared_text) {
    const char *toks[] = {"models/stories260K/tok512.bin", "models/sotu-2.7M/tok2048.bin"};
    mpq_tokenizer *t = load_tok(toks[_i / 2], 0);
    same_as_ref_file(t, _i % 2 ? "data/tinyshakespeare.txt" : "data/wikitext2-raw-test.txt");
    mpq_tokenizer_free(t);
}
END_TEST

/* Adversarial lines: long, one repeated byte (every pair ties), CR-only, invalid UTF-8. */
START_TEST(test_heap_same_ids_adversarial) {
    mpq_tokenizer *toks[] = {load_tok("models/stories260K/tok512.bin", 0),
                             load_tok("models/sotu-2.7M/tok2048.bin", 0)};
    size_t n = 3000;
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    for (int k = 0; k < 2; k++) {
        const mpq_tokenizer *t = toks[k];
        const char *reps[] = {"a", "\r", " ", "ab", "aab", "the ", "e", "\xE2\x98\x83", "\xff", "\xE2\x98", "ll"};
        for (size_t r = 0; r < sizeof reps / sizeof reps[0]; r++) {
            size_t lr = strlen(reps[r]), m = 0;
            while (m + lr <= n) {
                memcpy(s + m, reps[r], lr);
                m += lr;
            }
            s[m] = '\0';
            for (size_t cut = 1; cut <= m; cut = cut * 3 + 1) { /* lengths 1, 4, 13, ..., 2188 and all */
                char keep = s[cut];
                s[cut] = '\0';
                same_as_ref(t, reps[r], s);
                s[cut] = keep;
            }
            same_as_ref(t, reps[r], s);
        }
        /* pseudo-random bytes (xorshift) drawn from a small alphabet so that many pairs merge */
        uint32_t x = 2463534242u;
        const char alpha[] = "aeinost \r\xC3\xA9";
        for (int round = 0; round < 20; round++) {
            size_t m = 1 + (size_t)round * 150;
            for (size_t i = 0; i < m; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                s[i] = alpha[x % (sizeof alpha - 1)];
            }
            s[m] = '\0';
            same_as_ref(t, "random", s);
        }
    }
    free(s);
    mpq_tokenizer_free(toks[0]);
    mpq_tokenizer_free(toks[1]);
}
END_TEST

/* One 1 MB line (the shared wikitext with '\n' turned into '\r', as a CR-only file is read):
 * the quadratic encoder took minutes on lines this long; this one must finish within the test
 * timeout and decode back to the line. */
START_TEST(test_encode_long_line) {
    mpq_tokenizer *t = load_tok("models/sotu-2.7M/tok2048.bin", 0);
    size_t size = 0;
    char *buf = test_read_file(shared_path("data/wikitext2-raw-test.txt"), &size);
    ck_assert_ptr_nonnull(buf);
    buf = realloc(buf, size + 1);
    buf[size] = '\0';
    for (size_t i = 0; i < size; i++)
        if (buf[i] == '\n') buf[i] = '\r';
    int *ids = NULL, n = 0;
    mpq_err err = {0};
    double t0 = mpq_time_now();
    ck_assert_int_eq(mpq_tokenizer_encode(t, buf, true, false, &ids, &n, &err), MPQ_OK);
    fprintf(stderr, "one %zu-byte line: %d ids in %.2f s\n", size, n, mpq_time_now() - t0);
    ck_assert_int_gt(n, (int)(size / 8));
    ck_assert_int_lt(n, (int)(size / 2));
    char *back = NULL;
    ck_assert_int_eq(mpq_tokenizer_decode(t, ids, n, &back, &err), MPQ_OK);
    ck_assert_msg(strcmp(back, buf) == 0, "decoding the ids does not give the line back");
    free(back);
    free(ids);
    free(buf);
    mpq_tokenizer_free(t);
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
    tcase_add_loop_test(tc, test_heap_same_ids_shared_text, 0, 4);
    tcase_add_test(tc, test_heap_same_ids_adversarial);
    tcase_add_test(tc, test_encode_long_line);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(tokenizer_suite)
