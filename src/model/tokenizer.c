/*
 * tokenizer.c - the llama2.c tokenizer: load tokenizer.bin, encode (byte-fallback BPE by piece
 * score) and decode, following karpathy/llama2.c run.c build_tokenizer / encode / decode.
 * Lookup is a bsearch over pieces sorted by (bytes, id); with duplicate pieces the lowest id wins.
 */
#include "mpq/mpq_tokenizer.h"
#include "model/gguf.h"
#include "model/tokenizer_internal.h"
#include "util/file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct sorted_piece {
    const char *str;
    int id;
} sorted_piece;

struct mpq_tokenizer {
    int n_vocab;
    int max_len;       /* longest piece, bytes */
    char **pieces;     /* n_vocab NUL-terminated strings */
    int *lens;         /* strlen of each piece */
    float *scores;
    sorted_piece *sorted;
    char bytes[512];   /* 256 one-byte strings for <0xNN> pieces */
};

void mpq_tokenizer_free(mpq_tokenizer *t) {
    if (!t) return;
    if (t->pieces)
        for (int i = 0; i < t->n_vocab; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->lens);
    free(t->scores);
    free(t->sorted);
    free(t);
}

static int cmp_sorted(const void *a, const void *b) {
    const sorted_piece *x = a, *y = b;
    int c = strcmp(x->str, y->str);
    if (c) return c;
    return (x->id > y->id) - (x->id < y->id);
}

int mpq_tokenizer_lookup(const mpq_tokenizer *t, const char *s) {
    if (!t || !s) return -1;
    size_t lo = 0, hi = (size_t)t->n_vocab; /* first index with sorted[i].str >= s */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(t->sorted[mid].str, s) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < (size_t)t->n_vocab && strcmp(t->sorted[lo].str, s) == 0) return t->sorted[lo].id;
    return -1;
}

/* Completes a tokenizer whose pieces, lens, scores and sorted entries are filled: checks the
 * size, sorts the lookup table, builds the byte strings. Every constructor ends here. */
static mpq_status finish(mpq_tokenizer *t, const char *what, mpq_err *err) {
    if (t->n_vocab < 3 + 256) /* byte fallback (+3) needs ids 3..258 */
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %d pieces; a byte-fallback vocabulary needs at least 259", what,
                           t->n_vocab);
    qsort(t->sorted, (size_t)t->n_vocab, sizeof *t->sorted, cmp_sorted);
    for (int i = 0; i < 256; i++) {
        t->bytes[2 * i] = (char)i;
        t->bytes[2 * i + 1] = '\0';
    }
    return MPQ_OK;
}

mpq_status mpq_tokenizer_from_pieces(const char *const *pieces, const size_t *lens, const float *scores, int n,
                                     const char *what, mpq_tokenizer **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_tokenizer *t = NULL;
    *out = NULL;
    if (n < 0 || !pieces || !lens || !scores) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: no pieces", what);
    t = mpq_calloc(1, sizeof *t);
    if (!t) goto nomem;
    size_t cap = n > 0 ? (size_t)n : 1;
    t->pieces = mpq_calloc(cap, sizeof *t->pieces);
    t->lens = mpq_calloc(cap, sizeof *t->lens);
    t->scores = mpq_calloc(cap, sizeof *t->scores);
    t->sorted = mpq_calloc(cap, sizeof *t->sorted);
    if (!t->pieces || !t->lens || !t->scores || !t->sorted) goto nomem;
    for (int i = 0; i < n; i++) {
        if (lens[i] > (size_t)INT32_MAX - 1) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: piece %d of %zu bytes is too long", what, i, lens[i]);
            goto done;
        }
        t->pieces[i] = malloc(lens[i] + 1);
        if (!t->pieces[i]) goto nomem;
        memcpy(t->pieces[i], pieces[i], lens[i]);
        t->pieces[i][lens[i]] = '\0';
        t->lens[i] = (int)strlen(t->pieces[i]); /* as C strings, like the tokenizer.bin loader */
        t->scores[i] = scores[i];
        if (t->lens[i] > t->max_len) t->max_len = t->lens[i];
        t->sorted[i].str = t->pieces[i];
        t->sorted[i].id = i;
        t->n_vocab++;
    }
    if ((st = finish(t, what, err)) != MPQ_OK) goto done;
    *out = t;
    t = NULL;
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", what);
done:
    mpq_tokenizer_free(t);
    return st;
}

static bool rd(const unsigned char *buf, size_t size, size_t *pos, void *dst, size_t n) {
    if (size - *pos < n) return false;
    memcpy(dst, buf + *pos, n);
    *pos += n;
    return true;
}

mpq_status mpq_tokenizer_load(const char *path, int vocab_size, mpq_tokenizer **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_tokenizer *t = NULL;
    unsigned char *buf = NULL;
    FILE *f = NULL;
    struct stat sb;
    size_t size = 0, pos = 0;
    int cap = 0;
    int32_t max_len;
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_tokenizer_load: out is NULL");
    *out = NULL;
    if (vocab_size < 0) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: vocab_size %d < 0", path, vocab_size);
    if (mpq_gguf_sniff(path)) return mpq_tokenizer_load_gguf(path, vocab_size, out, err);
    if ((st = mpq_file_fopen_regular(path, &f, err)) != MPQ_OK) return st;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    size = (size_t)sb.st_size;
    buf = malloc(size ? size : 1);
    if (!buf) goto nomem;
    if (fread(buf, 1, size, f) != size) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: short read", path);
        goto done;
    }
    if (!rd(buf, size, &pos, &max_len, 4) || max_len < 0) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing or negative max_token_length header", path);
        goto done;
    }
    t = mpq_calloc(1, sizeof *t);
    if (!t) goto nomem;
    /* every piece takes >= 8 bytes, which bounds the count when reading to the end */
    cap = vocab_size > 0 ? vocab_size : (int)((size - pos) / 8 + 1);
    if (vocab_size > 0 && (size_t)vocab_size > (size - pos) / 8) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: file of %zu bytes is too short for %d pieces", path, size,
                         vocab_size);
        goto done;
    }
    t->pieces = mpq_calloc((size_t)cap, sizeof *t->pieces);
    t->lens = mpq_calloc((size_t)cap, sizeof *t->lens);
    t->scores = mpq_calloc((size_t)cap, sizeof *t->scores);
    t->sorted = mpq_calloc((size_t)cap, sizeof *t->sorted);
    if (!t->pieces || !t->lens || !t->scores || !t->sorted) goto nomem;
    while (vocab_size > 0 ? t->n_vocab < vocab_size : pos < size) {
        int i = t->n_vocab;
        float score;
        int32_t len;
        size_t at = pos;
        if (!rd(buf, size, &pos, &score, 4) || !rd(buf, size, &pos, &len, 4)) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: piece %d: truncated score/length at byte %zu", path, i, at);
            goto done;
        }
        if (len < 0 || (size_t)len > size - pos) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: piece %d: length %d at byte %zu exceeds the %zu bytes left", path,
                             i, len, at + 4, size - pos);
            goto done;
        }
        t->pieces[i] = malloc((size_t)len + 1);
        if (!t->pieces[i]) goto nomem;
        memcpy(t->pieces[i], buf + pos, (size_t)len);
        t->pieces[i][len] = '\0';
        pos += (size_t)len;
        t->lens[i] = (int)strlen(t->pieces[i]); /* as C strings, like run.c */
        t->scores[i] = score;
        if (t->lens[i] > t->max_len) t->max_len = t->lens[i];
        t->sorted[i].str = t->pieces[i];
        t->sorted[i].id = i;
        t->n_vocab++;
    }
    if (pos != size) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %zu trailing bytes after %d pieces", path, size - pos, t->n_vocab);
        goto done;
    }
    if ((st = finish(t, path, err)) != MPQ_OK) goto done;
    *out = t;
    t = NULL;
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
done:
    if (f) fclose(f);
    free(buf);
    mpq_tokenizer_free(t);
    return st;
}

int mpq_tokenizer_n_vocab(const mpq_tokenizer *t) { return t ? t->n_vocab : 0; }

const char *mpq_tokenizer_piece(const mpq_tokenizer *t, int id) {
    return (t && id >= 0 && id < t->n_vocab) ? t->pieces[id] : NULL;
}

float mpq_tokenizer_score(const mpq_tokenizer *t, int id) {
    return (t && id >= 0 && id < t->n_vocab) ? t->scores[id] : 0.0f;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

const char *mpq_tokenizer_decode_piece(const mpq_tokenizer *t, int prev, int id) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    const char *p = t->pieces[id];
    if (prev == MPQ_TOKEN_BOS && p[0] == ' ') p++;
    /* run.c: sscanf(piece, "<0x%02hhX>", &b) == 1 */
    if (p[0] == '<' && p[1] == '0' && p[2] == 'x' && hexval(p[3]) >= 0) {
        int v = hexval(p[3]);
        if (hexval(p[4]) >= 0) v = v * 16 + hexval(p[4]);
        return t->bytes + 2 * v;
    }
    return p;
}

mpq_status mpq_tokenizer_decode(const mpq_tokenizer *t, const int *ids, int n, char **text, mpq_err *err) {
    size_t len = 0;
    *text = NULL;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return mpq_err_set(err, MPQ_ERR_INVALID, "decode: id %d at position %d is outside the vocabulary of %d",
                               ids[i], i, t->n_vocab);
        len += strlen(t->pieces[ids[i]]);
    }
    char *s = malloc(len + 1), *p = s;
    if (!s) return mpq_err_set(err, MPQ_ERR_NOMEM, "decode: out of memory for %zu bytes", len);
    for (int i = 0; i < n; i++) {
        if (ids[i] == MPQ_TOKEN_BOS || ids[i] == MPQ_TOKEN_EOS) continue;
        const char *pc = mpq_tokenizer_decode_piece(t, i ? ids[i - 1] : MPQ_TOKEN_BOS, ids[i]);
        size_t k = strlen(pc); /* a <0x00> piece gives "", as printf("%s") would in run.c */
        memcpy(p, pc, k);
        p += k;
    }
    *p = '\0';
    *text = s;
    return MPQ_OK;
}

/* One candidate merge: tokens at nodes i (left) and j (right), as they were when ver_i/ver_j
 * were current, merge into id with score. */
typedef struct merge_cand {
    float score;
    int i, j, id;
    unsigned ver_i, ver_j;
} merge_cand;

/* Heap order: higher score first; equal scores (as run.c's `>` sees them) leftmost first. */
static bool cand_before(const merge_cand *a, const merge_cand *b) {
    if (a->score > b->score) return true;
    if (b->score > a->score) return false;
    return a->i < b->i;
}

static void heap_push(merge_cand *h, size_t *n, merge_cand c) {
    size_t k = (*n)++;
    while (k > 0) {
        size_t p = (k - 1) / 2;
        if (!cand_before(&c, &h[p])) break;
        h[k] = h[p];
        k = p;
    }
    h[k] = c;
}

static merge_cand heap_pop(merge_cand *h, size_t *n) {
    merge_cand top = h[0], last = h[--(*n)];
    size_t k = 0;
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_before(&h[c + 1], &h[c])) c++;
        if (!cand_before(&h[c], &last)) break;
        h[k] = h[c];
        k = c;
    }
    if (*n > 0) h[k] = last;
    return top;
}

/* Pushes the merge of nodes i and j when their concatenation is a piece run.c would pick
 * (score above its -1e10 start; a NaN score never compares above it). */
static void push_pair(const mpq_tokenizer *t, const int *tok, const unsigned *ver, int i, int j, char *sb,
                      merge_cand *h, size_t *n_h) {
    int a = tok[i], b = tok[j];
    memcpy(sb, t->pieces[a], (size_t)t->lens[a]);
    memcpy(sb + t->lens[a], t->pieces[b], (size_t)t->lens[b] + 1);
    int id = mpq_tokenizer_lookup(t, sb);
    if (id != -1 && t->scores[id] > -1e10f)
        heap_push(h, n_h, (merge_cand){t->scores[id], i, j, id, ver[i], ver[j]});
}

mpq_status mpq_tokenizer_encode(const mpq_tokenizer *t, const char *text, bool bos, bool eos, int **ids, int *n_ids,
                                mpq_err *err) {
    mpq_status st = MPQ_OK;
    int *tok = NULL, n = 0, *nxt = NULL, *prv = NULL;
    unsigned *ver = NULL;
    merge_cand *heap = NULL;
    char *sb = NULL;
    if (!t || !text || !ids || !n_ids) return mpq_err_set(err, MPQ_ERR_INVALID, "encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    size_t tl = strlen(text), cap;
    /* +3 for BOS, dummy prefix, EOS; every byte gives at most one token */
    if (!mpq_size_add(tl, 3, &cap) || cap > (size_t)INT32_MAX) {
        return mpq_err_set(err, MPQ_ERR_INVALID, "encode: text of %zu bytes is too long", tl);
    }
    tok = malloc(cap * sizeof *tok);
    sb = malloc((size_t)t->max_len * 2 + 8);
    if (!tok || !sb) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "encode: out of memory for %zu bytes of text", tl);
        goto done;
    }
    if (bos) tok[n++] = MPQ_TOKEN_BOS;
    if (text[0] != '\0') {
        int dummy = mpq_tokenizer_lookup(t, " ");
        if (dummy >= 0) tok[n++] = dummy;
    }
    /* one piece per UTF-8 code point, raw bytes (+3) when it is not in the vocabulary */
    size_t sl = 0;
    for (const char *c = text; *c; c++) {
        if (((unsigned char)*c & 0xC0) != 0x80) sl = 0;
        sb[sl++] = *c;
        sb[sl] = '\0';
        if (((unsigned char)c[1] & 0xC0) == 0x80 && sl < 4) continue;
        int id = mpq_tokenizer_lookup(t, sb);
        if (id != -1) {
            tok[n++] = id;
        } else {
            for (size_t i = 0; i < sl; i++) tok[n++] = (unsigned char)sb[i] + 3;
        }
        sl = 0;
    }
    /* Merge the best-scoring adjacent pair until none merges, ties to the leftmost pair, as
     * run.c does by rescanning the sequence after every merge (quadratic in the line length).
     * Here the tokens form a linked list and every adjacent pair that merges waits in a max-heap
     * ordered by (score, position); a merge pushes the two pairs it creates, and an entry whose
     * nodes have since changed (version) or are no longer adjacent is dropped when popped.
     * O(n log n) lookups, same ids. */
    if (n > 1) {
        size_t n_h = 0, cap_h;
        if (!mpq_size_mul(3, (size_t)n, &cap_h)) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "encode: text of %zu bytes is too long", tl);
            goto done;
        }
        nxt = malloc((size_t)n * sizeof *nxt);
        prv = malloc((size_t)n * sizeof *prv);
        ver = calloc((size_t)n, sizeof *ver);
        heap = malloc(cap_h * sizeof *heap);
        if (!nxt || !prv || !ver || !heap) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "encode: out of memory for %zu bytes of text", tl);
            goto done;
        }
        for (int i = 0; i < n; i++) {
            nxt[i] = i + 1 < n ? i + 1 : -1;
            prv[i] = i - 1;
        }
        for (int i = 0; i + 1 < n; i++) push_pair(t, tok, ver, i, i + 1, sb, heap, &n_h); /* BOS too, as run.c */
        while (n_h > 0) {
            merge_cand c = heap_pop(heap, &n_h);
            if (nxt[c.i] != c.j || ver[c.i] != c.ver_i || ver[c.j] != c.ver_j) continue; /* stale */
            tok[c.i] = c.id;
            ver[c.i]++;
            ver[c.j]++; /* j leaves the list; its entries go stale */
            nxt[c.i] = nxt[c.j];
            if (nxt[c.i] >= 0) prv[nxt[c.i]] = c.i;
            nxt[c.j] = -2;
            if (prv[c.i] >= 0) push_pair(t, tok, ver, prv[c.i], c.i, sb, heap, &n_h);
            if (nxt[c.i] >= 0) push_pair(t, tok, ver, c.i, nxt[c.i], sb, heap, &n_h);
        }
        int m = 0; /* node 0 is never merged away: the list starts there */
        for (int i = 0; i >= 0; i = nxt[i]) tok[m++] = tok[i];
        n = m;
    }
    if (eos) tok[n++] = MPQ_TOKEN_EOS;
    *ids = tok;
    *n_ids = n;
    tok = NULL;
done:
    free(heap);
    free(ver);
    free(prv);
    free(nxt);
    free(tok);
    free(sb);
    return st;
}
