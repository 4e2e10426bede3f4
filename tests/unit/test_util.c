/* test_util.c - mpq_err, checked size arithmetic, SHA-256 (FIPS 180-4 test vectors) and the
 * generator of mpq_rng.h (splitmix64's published first outputs from 0; xoshiro256** outputs
 * from an independent implementation; unbiased below, uniform doubles, Rademacher bits). */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mpq/mpq.h"
#include "mpq/mpq_rng.h"
#include "util/file.h"
#include "util/json_num.h"
#include "test_util.h"
#include "test_main.h"

START_TEST(test_sha256_vectors) {
    char out[65];
    mpq_sha256("", 0, out);
    ck_assert_str_eq(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    mpq_sha256("abc", 3, out);
    ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    mpq_sha256(two, strlen(two), out);
    ck_assert_str_eq(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}
END_TEST

START_TEST(test_sha256_file_matches_buffer) {
    /* the shared model's published hash prefix (shared/README.md): b0a507e7ad0f6266... */
    char out[65];
    mpq_err err = {0};
    ck_assert_int_eq(mpq_sha256_file(shared_path("models/stories260K/stories260K.bin"), out, &err), MPQ_OK);
    ck_assert_int_eq(strncmp(out, "b0a507e7ad0f6266", 16), 0);
    ck_assert_int_eq(mpq_sha256_file("/nonexistent/x.bin", out, &err), MPQ_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/x.bin"));
}
END_TEST

START_TEST(test_size_overflow) {
    size_t r = 7;
    ck_assert(mpq_size_mul(3, 5, &r) && r == 15);
    ck_assert(!mpq_size_mul(SIZE_MAX / 2 + 1, 2, &r));
    ck_assert(!mpq_size_add(SIZE_MAX, 1, &r));
    ck_assert(!mpq_size_mul3((size_t)1 << 32, (size_t)1 << 32, 2, &r));
    ck_assert(mpq_size_mul3(2, 3, 4, &r) && r == 24);
    ck_assert_ptr_null(mpq_calloc(SIZE_MAX / 4, 8));
}
END_TEST

START_TEST(test_err_messages) {
    mpq_err err = {0};
    ck_assert_int_eq(mpq_err_set(&err, MPQ_ERR_FORMAT, "tensor %s: end %d", "blk.3", 81920), MPQ_ERR_FORMAT);
    mpq_err_prefix(&err, "%s", "m.safetensors");
    ck_assert_str_eq(err.msg, "m.safetensors: tensor blk.3: end 81920");
    ck_assert_int_eq(err.status, MPQ_ERR_FORMAT);
    ck_assert_int_eq(mpq_err_set(NULL, MPQ_ERR_IO, "x"), MPQ_ERR_IO);
    ck_assert_str_eq(mpq_status_str(MPQ_ERR_NOMEM), "out of memory");
}
END_TEST

START_TEST(test_rng) {
    uint64_t x = 0;
    ck_assert_uint_eq(mpq_rng_splitmix64(&x), 0xe220a8397b1dcdafULL);
    ck_assert_uint_eq(mpq_rng_splitmix64(&x), 0x6e789e6aa1b965f4ULL);
    ck_assert_uint_eq(mpq_rng_splitmix64(&x), 0x06c45d188009454fULL);
    mpq_rng r;
    mpq_rng_seed(&r, 42);
    mpq_rng saved = r;
    ck_assert_uint_eq(mpq_rng_next(&r), 0x15780b2e0c2ec716ULL);
    ck_assert_uint_eq(mpq_rng_next(&r), 0x6104d9866d113a7eULL);
    ck_assert_uint_eq(mpq_rng_next(&r), 0xae17533239e499a1ULL);
    /* Rademacher: bit j of each word, set -> +1; 70 entries take 2 words */
    mpq_rng a = saved, b = saved;
    float v[70];
    mpq_rng_rademacher(&a, v, 70);
    uint64_t w0 = mpq_rng_next(&b), w1 = mpq_rng_next(&b);
    for (int j = 0; j < 70; j++)
        ck_assert(v[j] == (((j < 64 ? w0 >> j : w1 >> (j - 64)) & 1) ? 1.0f : -1.0f));
    ck_assert_uint_eq(mpq_rng_next(&a), mpq_rng_next(&b));
    /* below: in range, every value hit, no draw for n == 0; uniform doubles in [0, 1) */
    int hits[7] = {0};
    for (int i = 0; i < 7000; i++) {
        uint64_t k = mpq_rng_below(&r, 7);
        ck_assert_uint_lt(k, 7);
        hits[k]++;
    }
    for (int k = 0; k < 7; k++) ck_assert_int_gt(hits[k], 800); /* mean 1000, sd 31 */
    a = r;
    ck_assert_uint_eq(mpq_rng_below(&r, 0), 0);
    ck_assert_uint_eq(mpq_rng_next(&r), mpq_rng_next(&a));
    ck_assert_uint_eq(mpq_rng_below(&r, 1), 0);
    x = 5;
    for (int i = 0; i < 100; i++) ck_assert_uint_lt(mpq_rng_splitmix64_below(&x, 3), 3);
    double lo = 1, hi = 0;
    for (int i = 0; i < 1000; i++) {
        double u = mpq_rng_uniform(&r);
        ck_assert(u >= 0 && u < 1);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    ck_assert(lo < 0.01 && hi > 0.99);
}
END_TEST

/* Only regular files open: a FIFO (with no writer: it must not block), a directory and a
 * character device are refused with the path and the kind in the message. */
START_TEST(test_file_open_regular) {
    char dir[512], fifo[600], reg[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(fifo, sizeof fifo, "%s/p.fifo", dir);
    snprintf(reg, sizeof reg, "%s/r.bin", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(test_write_file(reg, "abc", 3), 0);
    struct {
        const char *path, *msg;
    } bad[] = {{fifo, "is a FIFO"}, {dir, "is a directory"}, {"/dev/zero", "is a character device"},
               {"/nonexistent/x", "cannot open for reading: No such file or directory"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = 7;
        mpq_err err = {0};
        double t0 = mpq_time_now();
        ck_assert_int_eq(mpq_file_open_regular(bad[i].path, &fd, &err), MPQ_ERR_IO);
        ck_assert_double_lt(mpq_time_now() - t0, 5.0); /* refused, not waited on */
        ck_assert_int_eq(fd, -1);
        ck_assert_msg(strstr(err.msg, bad[i].path) && strstr(err.msg, bad[i].msg), "%s: '%s'", bad[i].path, err.msg);
    }
    int fd = -1;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_file_open_regular(reg, &fd, &err), MPQ_OK);
    char b[4] = {0};
    ck_assert_int_eq(read(fd, b, 4), 3); /* blocking again, reads the file */
    ck_assert_str_eq(b, "abc");
    close(fd);
    remove(reg);
    remove(fifo);
    rmdir(dir);
}
END_TEST

/* mpq_file_read_text: whole file, NUL-terminated (embedded NULs kept), the size limit, and the
 * regular-file refusal of mpq_file_fopen_regular; nothing returned on an error. */
START_TEST(test_file_read_text) {
    char dir[512], reg[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(reg, sizeof reg, "%s/t.json", dir);
    enum { N = 10000 }; /* more than the first 4096-byte buffer: the growth path runs */
    char *data = malloc(N);
    ck_assert_ptr_nonnull(data);
    for (int i = 0; i < N; i++) data[i] = (char)('a' + i % 26);
    data[5000] = '\0';
    ck_assert_int_eq(test_write_file(reg, data, N), 0);
    char *buf = (char *)data;
    size_t n = 1;
    mpq_err err = {0};
    ck_assert_int_eq(mpq_file_read_text(reg, N - 1, "a test file", &buf, &n, &err), MPQ_ERR_FORMAT);
    ck_assert_ptr_null(buf);
    ck_assert_uint_eq(n, 0);
    ck_assert_msg(strstr(err.msg, reg) && strstr(err.msg, "larger than 9999 bytes; not a test file"), "%s", err.msg);
    ck_assert_int_eq(mpq_file_read_text(reg, N, "a test file", &buf, &n, &err), MPQ_OK); /* exactly max */
    ck_assert_uint_eq(n, N);
    ck_assert_int_eq(memcmp(buf, data, N), 0);
    ck_assert_int_eq(buf[N], '\0');
    free(buf);
    buf = (char *)data;
    ck_assert_int_eq(mpq_file_read_text(dir, 1u << 20, "a test file", &buf, &n, &err), MPQ_ERR_IO);
    ck_assert_ptr_null(buf);
    ck_assert(strstr(err.msg, "is a directory"));
    free(data);
    remove(reg);
    rmdir(dir);
}
END_TEST

/* mpq_json_number reads back as the same double for every value (cJSON's own numbers may come
 * back one unit in the last place off: count how often on the same values, for the record). */
START_TEST(test_json_number_exact) {
    mpq_rng rng;
    mpq_rng_seed(&rng, 5u);
    int cjson_off = 0;
    for (int i = 0; i < 20000; i++) {
        double v = (mpq_rng_uniform(&rng) - 0.5) * pow(10.0, (double)(i % 40) - 20.0);
        cJSON *a = cJSON_CreateArray();
        ck_assert_ptr_nonnull(a);
        cJSON_AddItemToArray(a, mpq_json_number(v));
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v));
        char *txt = cJSON_PrintUnformatted(a);
        ck_assert_ptr_nonnull(txt);
        cJSON *b = cJSON_Parse(txt);
        ck_assert_ptr_nonnull(b);
        ck_assert_msg(cJSON_GetArrayItem(b, 0)->valuedouble == v, "%.17g printed as %s", v, txt);
        cjson_off += cJSON_GetArrayItem(b, 1)->valuedouble != v;
        cJSON_Delete(b);
        cJSON_Delete(a);
        free(txt);
    }
    fprintf(stderr, "cJSON numbers one ulp off after a round trip: %d of 20000\n", cjson_off);
    cJSON *n = mpq_json_number(NAN);
    ck_assert(cJSON_IsNull(n));
    cJSON_Delete(n);
}
END_TEST

static Suite *util_suite(void) {
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_sha256_vectors);
    tcase_add_test(tc, test_sha256_file_matches_buffer);
    tcase_add_test(tc, test_size_overflow);
    tcase_add_test(tc, test_json_number_exact);
    tcase_add_test(tc, test_err_messages);
    tcase_add_test(tc, test_rng);
    tcase_add_test(tc, test_file_open_regular);
    tcase_add_test(tc, test_file_read_text);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(util_suite)
