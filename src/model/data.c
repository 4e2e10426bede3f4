/*
 * data.c - token streams for calibration and evaluation: text tokenized line by line with the
 * model's tokenizer (BOS + pieces per non-empty line, no EOS), or uint16 / uint32 little-endian
 * token files, each validated against the vocabulary; and deterministic windows of seq_len + 1
 * tokens. The windows are shuffled by the splitmix64 stream of include/mpq/mpq_rng.h (Steele,
 * Lea, Flood 2014).
 */
#include "mpq/mpq_data.h"
#include "util/file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq/mpq_rng.h"

struct mpq_data {
    int32_t *tokens;
    size_t n_tokens;
    char sha256[65];
    char *path;
    mpq_data_format format;
};

mpq_data_opts mpq_data_opts_default(void) {
    mpq_data_opts o = {MPQ_DATA_AUTO, 0};
    return o;
}

void mpq_data_free(mpq_data *d) {
    if (!d) return;
    free(d->tokens);
    free(d->path);
    free(d);
}

const int32_t *mpq_data_tokens(const mpq_data *d) { return d ? d->tokens : NULL; }
size_t mpq_data_n_tokens(const mpq_data *d) { return d ? d->n_tokens : 0; }
const char *mpq_data_sha256(const mpq_data *d) { return d ? d->sha256 : NULL; }
const char *mpq_data_path(const mpq_data *d) { return d ? d->path : NULL; }
mpq_data_format mpq_data_get_format(const mpq_data *d) { return d ? d->format : MPQ_DATA_AUTO; }

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Appends ids to d->tokens, growing geometrically. */
static bool push(mpq_data *d, size_t *cap, const int *ids, int n) {
    if (d->n_tokens + (size_t)n > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < d->n_tokens + (size_t)n) nc *= 2;
        int32_t *p = realloc(d->tokens, nc * sizeof *p);
        if (!p) return false;
        d->tokens = p;
        *cap = nc;
    }
    for (int i = 0; i < n; i++) d->tokens[d->n_tokens++] = ids[i];
    return true;
}

static mpq_status load_text(mpq_data *d, const char *path, char *buf, size_t size, const mpq_tokenizer *tok,
                            int vocab, mpq_err *err) {
    size_t cap = 0, line_no = 0;
    char *p = buf, *end = buf + size;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        line_no++;
        size_t len = (size_t)(e - p);
        if (len > 0 && p[len - 1] == '\r') len--;
        if (memchr(p, '\0', len)) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: line %zu holds a NUL byte", path, line_no);
        if (len > 0) {
            char saved = p[len];
            p[len] = '\0';
            int *ids = NULL, n = 0;
            mpq_status st = mpq_tokenizer_encode(tok, p, true, false, &ids, &n, err);
            p[len] = saved;
            if (st != MPQ_OK) {
                mpq_err_prefix(err, "%s: line %zu", path, line_no);
                return st;
            }
            for (int i = 0; i < n; i++)
                if (ids[i] >= vocab) {
                    st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: line %zu: token id %d >= vocab_size %d", path,
                                     line_no, ids[i], vocab);
                    break;
                }
            if (st == MPQ_OK && !push(d, &cap, ids, n))
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory at line %zu", path, line_no);
            free(ids);
            if (st != MPQ_OK) return st;
        }
        p = nl ? nl + 1 : end;
    }
    return MPQ_OK;
}

static mpq_status load_ids(mpq_data *d, const char *path, const unsigned char *buf, size_t size, size_t esz,
                           int64_t vocab, mpq_err *err) {
    if (size % esz != 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: size %zu is not a multiple of the %zu-byte token", path, size,
                           esz);
    d->n_tokens = size / esz;
    d->tokens = mpq_calloc(d->n_tokens ? d->n_tokens : 1, sizeof *d->tokens);
    if (!d->tokens) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for %zu tokens", path, d->n_tokens);
    for (size_t i = 0; i < d->n_tokens; i++) {
        const unsigned char *q = buf + i * esz;
        uint32_t v = esz == 2 ? (uint32_t)(q[0] | q[1] << 8)
                              : (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        if ((int64_t)v >= vocab)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: token %zu (byte %zu): id %lu >= vocab_size %lld", path, i,
                               i * esz, (unsigned long)v, (long long)vocab);
        d->tokens[i] = (int32_t)v;
    }
    return MPQ_OK;
}

mpq_status mpq_data_load(const char *path, const mpq_tokenizer *tok, const mpq_data_opts *opts, mpq_data **out,
                         mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_data *d = NULL;
    mpq_data_opts o = opts ? *opts : mpq_data_opts_default();
    unsigned char *buf = NULL;
    FILE *f = NULL;
    struct stat sb;
    size_t size;
    if (!out || !path) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_data_load: NULL argument");
    *out = NULL;
    if (o.format == MPQ_DATA_AUTO)
        o.format = ends_with(path, ".u16") ? MPQ_DATA_U16 : ends_with(path, ".u32") ? MPQ_DATA_U32 : MPQ_DATA_TEXT;
    if (o.vocab_size < 0) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: vocab_size %d < 0", path, o.vocab_size);
    if (o.format == MPQ_DATA_TEXT && !tok)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: a text file needs a tokenizer", path);
    int64_t vocab = o.vocab_size > 0 ? o.vocab_size : tok ? mpq_tokenizer_n_vocab(tok) : (int64_t)INT32_MAX + 1;
    if ((st = mpq_file_fopen_regular(path, &f, err)) != MPQ_OK) return st;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    size = (size_t)sb.st_size;
    buf = malloc(size + 1);
    d = mpq_calloc(1, sizeof *d);
    if (!buf || !d || !(d->path = malloc(strlen(path) + 1))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for %zu bytes", path, size);
        goto done;
    }
    memcpy(d->path, path, strlen(path) + 1);
    if (fread(buf, 1, size, f) != size) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: short read", path);
        goto done;
    }
    buf[size] = '\0';
    mpq_sha256(buf, size, d->sha256);
    d->format = o.format;
    if (o.format == MPQ_DATA_TEXT) st = load_text(d, path, (char *)buf, size, tok, (int)(vocab > INT32_MAX ? INT32_MAX : vocab), err);
    else st = load_ids(d, path, buf, size, o.format == MPQ_DATA_U16 ? 2 : 4, vocab, err);
    if (st != MPQ_OK) goto done;
    *out = d;
    d = NULL;
done:
    if (f) fclose(f);
    free(buf);
    mpq_data_free(d);
    return st;
}

void mpq_data_seqs_free(mpq_data_seqs *s) {
    if (!s) return;
    free(s->tokens);
    free(s->starts);
    free(s);
}

mpq_status mpq_data_sequences(const mpq_data *d, int seq_len, int n_seqs, uint64_t seed, mpq_data_seqs **out,
                              mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_data_seqs *s = NULL;
    size_t *order = NULL;
    if (!d || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_data_sequences: NULL argument");
    *out = NULL;
    if (seq_len < 1 || n_seqs < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: seq_len %d must be >= 1 and n_seqs %d >= 0", d->path, seq_len,
                           n_seqs);
    size_t n_win = d->n_tokens > 0 ? (d->n_tokens - 1) / (size_t)seq_len : 0;
    if (n_win == 0) /* a window is seq_len inputs plus the target of its last position */
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: its %zu tokens hold no window of %d+1 tokens (seq_len %d)",
                           d->path, d->n_tokens, seq_len, seq_len);
    if (n_win > (size_t)INT32_MAX)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %zu windows of %d+1 tokens: more than %d", d->path, n_win,
                           seq_len, (int)INT32_MAX);
    if ((size_t)n_seqs > n_win)
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: %d windows of %d+1 tokens asked but its %zu tokens hold %zu",
                           d->path, n_seqs, seq_len, d->n_tokens, n_win);
    size_t n = n_seqs ? (size_t)n_seqs : n_win, w = (size_t)seq_len + 1, total;
    s = mpq_calloc(1, sizeof *s);
    order = mpq_calloc(n_win, sizeof *order);
    if (!s || !order || !mpq_size_mul(n, w, &total) || !(s->tokens = mpq_calloc(total, sizeof *s->tokens)) ||
        !(s->starts = mpq_calloc(n, sizeof *s->starts))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory for %zu windows of %zu tokens", d->path, n, w);
        goto done;
    }
    for (size_t i = 0; i < n_win; i++) order[i] = i;
    if (n_seqs > 0) {
        uint64_t state = seed;
        for (size_t i = 0; i < n; i++) { /* partial Fisher-Yates: the first n of a full shuffle */
            size_t j = i + (size_t)mpq_rng_splitmix64_below(&state, (uint64_t)(n_win - i));
            size_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    }
    for (size_t i = 0; i < n; i++) {
        s->starts[i] = order[i] * (size_t)seq_len;
        memcpy(s->tokens + i * w, d->tokens + s->starts[i], w * sizeof *s->tokens);
    }
    s->n_seqs = (int)n;
    s->seq_len = seq_len;
    s->seed = seed;
    *out = s;
    s = NULL;
done:
    free(order);
    mpq_data_seqs_free(s);
    return st;
}
