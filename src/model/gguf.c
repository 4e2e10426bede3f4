/*
 * gguf.c - reader of one GGUF file: mmap, walk the header with a cursor that checks every
 * length and count against the bytes left before it is used, validate every tensor info, then
 * convert tensors (F32, F16, BF16, Q8_0) to float32 on request.
 * Reference: ggml-org/llama.cpp ggml/src/gguf.cpp (gguf_init_from_file_impl: header, key/value
 * and tensor-info layout, alignment rules) and ggml/src/ggml-quants.c (dequantize_row_q8_0).
 */
#include "model/gguf.h"
#include "model/safetensors.h" /* mpq_st_f16_to_f32, mpq_st_bf16_to_f32 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_NAME 256 /* tensor names and keys (ggml's own limit for names is 64) */
#define Q8_0_BLOCK 32
#define Q8_0_BYTES 34 /* fp16 scale + 32 int8 */

static const char *const ggml_names[] = {
    "F32",     "F16",    "Q4_0",   "Q4_1",    "Q4_2",  "Q4_3",     "Q5_0",     "Q5_1",     "Q8_0",   "Q8_1",
    "Q2_K",    "Q3_K",   "Q4_K",   "Q5_K",    "Q6_K",  "Q8_K",     "IQ2_XXS",  "IQ2_XS",   "IQ3_XXS", "IQ1_S",
    "IQ4_NL",  "IQ3_S",  "IQ2_S",  "IQ4_XS",  "I8",    "I16",      "I32",      "I64",      "F64",    "IQ1_M",
    "BF16",    "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8",
    "MXFP4"};

const char *mpq_ggml_type_name(uint32_t type, char buf[16]) {
    if (type < sizeof ggml_names / sizeof ggml_names[0]) return ggml_names[type];
    snprintf(buf, 16, "type %u", (unsigned)type);
    return buf;
}

static const char *vtype_name(uint32_t t) {
    static const char *const n[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                    "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof n / sizeof n[0] ? n[t] : "?";
}

/* Size of a scalar value type; 0 for string, array and unknown types. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case MPQ_GGUF_U8: case MPQ_GGUF_I8: case MPQ_GGUF_BOOL: return 1;
    case MPQ_GGUF_U16: case MPQ_GGUF_I16: return 2;
    case MPQ_GGUF_U32: case MPQ_GGUF_I32: case MPQ_GGUF_F32: return 4;
    case MPQ_GGUF_U64: case MPQ_GGUF_I64: case MPQ_GGUF_F64: return 8;
    }
    return 0;
}

typedef struct cursor {
    const unsigned char *p;
    size_t size, pos;
    const char *path;
} cursor;

static mpq_status need(cursor *c, size_t n, const char *what, mpq_err *err) {
    if (c->size - c->pos < n)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s at byte %zu needs %zu bytes, %zu left (file of %zu bytes)",
                           c->path, what, c->pos, n, c->size - c->pos, c->size);
    return MPQ_OK;
}

static mpq_status rd_u32(cursor *c, uint32_t *v, const char *what, mpq_err *err) {
    mpq_status st = need(c, 4, what, err);
    if (st != MPQ_OK) return st;
    memcpy(v, c->p + c->pos, 4);
    c->pos += 4;
    return MPQ_OK;
}

static mpq_status rd_u64(cursor *c, uint64_t *v, const char *what, mpq_err *err) {
    mpq_status st = need(c, 8, what, err);
    if (st != MPQ_OK) return st;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return MPQ_OK;
}

/* A string (u64 length + bytes): *off / *len of the bytes; the length checked first. */
static mpq_status rd_str(cursor *c, size_t *off, size_t *len, const char *what, mpq_err *err) {
    uint64_t n;
    size_t at = c->pos;
    mpq_status st = rd_u64(c, &n, what, err);
    if (st != MPQ_OK) return st;
    if (n > c->size - c->pos)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s: string length %llu at byte %zu runs past the end of the file "
                           "(%zu bytes left)", c->path, what, (unsigned long long)n, at, c->size - c->pos);
    *off = c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return MPQ_OK;
}

/* A NUL-terminated copy of a key or tensor name (at most MAX_NAME bytes, no NUL inside). */
static mpq_status rd_name(cursor *c, char **out, const char *what, mpq_err *err) {
    size_t off, len, at = c->pos;
    mpq_status st = rd_str(c, &off, &len, what, err);
    if (st != MPQ_OK) return st;
    if (len == 0 || len > MAX_NAME || memchr(c->p + off, '\0', len))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s at byte %zu: length %zu (1..%d bytes, no NUL)", c->path, what,
                           at, len, MAX_NAME);
    *out = malloc(len + 1);
    if (!*out) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", c->path);
    memcpy(*out, c->p + off, len);
    (*out)[len] = '\0';
    return MPQ_OK;
}

/* Skips (and bounds-checks) a value of type t; arrays record elem / count. */
static mpq_status rd_value(cursor *c, mpq_gguf_kv *kv, mpq_err *err) {
    mpq_status st;
    size_t at = c->pos;
    if (kv->type == MPQ_GGUF_STRING) {
        size_t off, len;
        if ((st = rd_str(c, &off, &len, kv->key, err)) != MPQ_OK) return st;
        kv->off = off;
        kv->count = len;
        return MPQ_OK;
    }
    if (kv->type != MPQ_GGUF_ARRAY) {
        size_t n = scalar_size(kv->type);
        if (n == 0)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: unknown value type %u at byte %zu", c->path, kv->key,
                               (unsigned)kv->type, at - 4);
        if ((st = need(c, n, kv->key, err)) != MPQ_OK) return st;
        kv->off = c->pos;
        c->pos += n;
        return MPQ_OK;
    }
    uint32_t et;
    uint64_t count;
    if ((st = rd_u32(c, &et, kv->key, err)) != MPQ_OK || (st = rd_u64(c, &count, kv->key, err)) != MPQ_OK) return st;
    if (et == MPQ_GGUF_ARRAY || (et != MPQ_GGUF_STRING && scalar_size(et) == 0))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: array element type %u at byte %zu is %s", c->path,
                           kv->key, (unsigned)et, at, et == MPQ_GGUF_ARRAY ? "a nested array (not supported)" : "unknown");
    kv->elem = (mpq_gguf_vtype)et;
    kv->count = count;
    kv->off = c->pos;
    size_t left = c->size - c->pos;
    if (et != MPQ_GGUF_STRING) {
        size_t es = scalar_size(et);
        if (count > left / es)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: array of %llu %s at byte %zu needs more than the %zu "
                               "bytes left", c->path, kv->key, (unsigned long long)count, vtype_name(et), at, left);
        c->pos += (size_t)count * es;
        return MPQ_OK;
    }
    if (count > left / 8) /* every string takes at least its 8-byte length */
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: array of %llu strings at byte %zu cannot fit in the %zu "
                           "bytes left", c->path, kv->key, (unsigned long long)count, at, left);
    for (uint64_t i = 0; i < count; i++) {
        size_t off, len;
        if ((st = rd_str(c, &off, &len, kv->key, err)) != MPQ_OK) {
            mpq_err_prefix(err, "element %llu", (unsigned long long)i);
            return st;
        }
    }
    return MPQ_OK;
}

bool mpq_gguf_sniff(const char *path) {
    struct stat sb;
    unsigned char m[4];
    if (!path || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return false;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    bool ok = fread(m, 1, 4, f) == 4 && memcmp(m, "GGUF", 4) == 0;
    fclose(f);
    return ok;
}

bool mpq_model_file_is_gguf(const char *path) { return mpq_gguf_sniff(path); }

void mpq_gguf_close(mpq_gguf_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_kv; i++) free(f->kvs[i].key);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    if (f->map) munmap((void *)f->map, f->size);
    free(f->path);
    free(f);
}

static int cmp_off(const void *a, const void *b) {
    const mpq_gguf_tensor *x = *(const mpq_gguf_tensor *const *)a, *y = *(const mpq_gguf_tensor *const *)b;
    return (x->off > y->off) - (x->off < y->off);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const mpq_gguf_tensor *const *)a)->name, (*(const mpq_gguf_tensor *const *)b)->name);
}

/* Shape, type and byte size of tensor t (read at byte `at`). */
static mpq_status check_tensor(const char *path, mpq_gguf_tensor *t, size_t at, mpq_err *err) {
    char tb[16];
    if (t->type != MPQ_GGML_F32 && t->type != MPQ_GGML_F16 && t->type != MPQ_GGML_BF16 && t->type != MPQ_GGML_Q8_0) {
        bool known = t->type < sizeof ggml_names / sizeof ggml_names[0];
        return mpq_err_set(err, known ? MPQ_ERR_UNSUPPORTED : MPQ_ERR_FORMAT,
                           "%s: tensor %s: %s %s (info at byte %zu); mpq reads F32, F16, BF16 and Q8_0", path, t->name,
                           known ? "ggml type" : "unknown ggml", mpq_ggml_type_name(t->type, tb), at);
    }
    size_t n = 1;
    for (int d = 0; d < t->n_dims; d++)
        if (t->ne[d] <= 0 || !mpq_size_mul(n, (size_t)t->ne[d], &n))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: dimension %d is %lld (info at byte %zu)%s", path,
                               t->name, d, (long long)t->ne[d], at, t->ne[d] > 0 ? ": element count overflows" : "");
    t->n_elems = n;
    if (t->type == MPQ_GGML_Q8_0) {
        if (t->ne[0] % Q8_0_BLOCK != 0)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: Q8_0 row length %lld is not a multiple of %d", path,
                               t->name, (long long)t->ne[0], Q8_0_BLOCK);
        if (!mpq_size_mul(n / Q8_0_BLOCK, Q8_0_BYTES, &t->n_bytes)) goto overflow;
    } else if (!mpq_size_mul(n, t->type == MPQ_GGML_F32 ? 4 : 2, &t->n_bytes)) {
        goto overflow;
    }
    return MPQ_OK;
overflow:
    return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: byte size overflows", path, t->name);
}

static mpq_status parse(mpq_gguf_file *f, mpq_err *err) {
    mpq_status st;
    cursor c = {f->map, f->size, 0, f->path};
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if (f->size < 4 || memcmp(f->map, "GGUF", 4) != 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: not a GGUF file (no \"GGUF\" magic)", f->path);
    c.pos = 4;
    if ((st = rd_u32(&c, &version, "version", err)) != MPQ_OK) return st;
    if (version != 2 && version != 3)
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3, little-endian)%s",
                           f->path, (unsigned)version,
                           (version & 0xffffu) == 0 ? "; this looks like a big-endian file" : "");
    f->version = version;
    if ((st = rd_u64(&c, &n_tensors, "n_tensors", err)) != MPQ_OK || (st = rd_u64(&c, &n_kv, "n_kv", err)) != MPQ_OK)
        return st;
    /* a key/value takes >= 13 bytes (length, one byte of key, type) and a tensor info >= 33 */
    size_t left = f->size - c.pos;
    if (n_kv > left / 13 || n_kv > INT32_MAX)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: n_kv %llu at byte 16 cannot fit in the %zu bytes after the header",
                           f->path, (unsigned long long)n_kv, left);
    if (n_tensors > left / 33 || n_tensors > INT32_MAX)
        return mpq_err_set(err, MPQ_ERR_FORMAT,
                           "%s: n_tensors %llu at byte 8 cannot fit in the %zu bytes after the header", f->path,
                           (unsigned long long)n_tensors, left);
    f->kvs = mpq_calloc(n_kv ? (size_t)n_kv : 1, sizeof *f->kvs);
    f->tensors = mpq_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *f->tensors);
    if (!f->kvs || !f->tensors) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", f->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        mpq_gguf_kv *kv = &f->kvs[f->n_kv];
        char what[48];
        uint32_t t;
        snprintf(what, sizeof what, "key %llu", (unsigned long long)i);
        if ((st = rd_name(&c, &kv->key, what, err)) != MPQ_OK) return st;
        f->n_kv++;
        if ((st = rd_u32(&c, &t, kv->key, err)) != MPQ_OK) return st;
        kv->type = (mpq_gguf_vtype)t;
        if (t != MPQ_GGUF_STRING && t != MPQ_GGUF_ARRAY && scalar_size(t) == 0)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: unknown value type %u at byte %zu", f->path, kv->key,
                               (unsigned)t, c.pos - 4);
        if ((st = rd_value(&c, kv, err)) != MPQ_OK) return st;
    }
    if (f->n_kv > 1) { /* duplicate keys, on a sorted view */
        const char **keys = malloc((size_t)f->n_kv * sizeof *keys);
        if (!keys) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", f->path);
        for (int i = 0; i < f->n_kv; i++) keys[i] = f->kvs[i].key;
        qsort(keys, (size_t)f->n_kv, sizeof *keys, cmp_str);
        for (int i = 1; i < f->n_kv && st == MPQ_OK; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0)
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s appears twice", f->path, keys[i]);
        free(keys);
        if (st != MPQ_OK) return st;
    }
    int64_t align = 32;
    bool found = false;
    if ((st = mpq_gguf_get_int(f, "general.alignment", 1, 1 << 30, &align, &found, err)) != MPQ_OK) return st;
    if ((align & (align - 1)) != 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: general.alignment %lld is not a power of two", f->path,
                           (long long)align);
    f->alignment = (size_t)align;
    for (uint64_t i = 0; i < n_tensors; i++) {
        mpq_gguf_tensor *t = &f->tensors[f->n_tensors];
        char what[48];
        uint32_t nd, type;
        uint64_t off;
        size_t at = c.pos;
        snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
        if ((st = rd_name(&c, &t->name, what, err)) != MPQ_OK) return st;
        f->n_tensors++;
        if ((st = rd_u32(&c, &nd, t->name, err)) != MPQ_OK) return st;
        if (nd < 1 || nd > MPQ_GGUF_MAX_DIMS)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: %u dimensions (1..%d) at byte %zu", f->path, t->name,
                               (unsigned)nd, MPQ_GGUF_MAX_DIMS, c.pos - 4);
        t->n_dims = (int)nd;
        for (int d = 0; d < MPQ_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            if ((st = rd_u64(&c, &v, t->name, err)) != MPQ_OK) return st;
            t->ne[d] = v > (uint64_t)INT64_MAX ? -1 : (int64_t)v;
        }
        if ((st = rd_u32(&c, &type, t->name, err)) != MPQ_OK || (st = rd_u64(&c, &off, t->name, err)) != MPQ_OK)
            return st;
        t->type = type;
        if ((st = check_tensor(f->path, t, at, err)) != MPQ_OK) return st;
        if (off % f->alignment != 0 || off > SIZE_MAX)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: data offset %llu is not a multiple of the "
                               "alignment %zu", f->path, t->name, (unsigned long long)off, f->alignment);
        t->off = (size_t)off;
    }
    size_t data_off = c.pos + (f->alignment - c.pos % f->alignment) % f->alignment;
    if (data_off > f->size && f->n_tensors > 0)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: data section at byte %zu starts past the end of the file (%zu bytes)",
                           f->path, data_off, f->size);
    f->data_off = data_off;
    size_t data_size = data_off <= f->size ? f->size - data_off : 0;
    for (int i = 0; i < f->n_tensors; i++) {
        mpq_gguf_tensor *t = &f->tensors[i];
        if (t->off > data_size || t->n_bytes > data_size - t->off)
            return mpq_err_set(err, MPQ_ERR_FORMAT,
                               "%s: tensor %s: bytes [%zu, %zu) of the data section end past the file (data section "
                               "of %zu bytes at byte %zu, file of %zu)",
                               f->path, t->name, t->off, t->off + (t->n_bytes <= SIZE_MAX - t->off ? t->n_bytes : 0),
                               data_size, data_off, f->size);
    }
    /* duplicate names and overlapping ranges, on sorted views */
    if (f->n_tensors > 1) {
        mpq_gguf_tensor **v = malloc((size_t)f->n_tensors * sizeof *v);
        if (!v) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", f->path);
        for (int i = 0; i < f->n_tensors; i++) v[i] = &f->tensors[i];
        qsort(v, (size_t)f->n_tensors, sizeof *v, cmp_name);
        for (int i = 1; i < f->n_tensors && st == MPQ_OK; i++)
            if (strcmp(v[i - 1]->name, v[i]->name) == 0)
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor name %s appears twice", f->path, v[i]->name);
        if (st == MPQ_OK) {
            qsort(v, (size_t)f->n_tensors, sizeof *v, cmp_off);
            for (int i = 1; i < f->n_tensors && st == MPQ_OK; i++)
                if (v[i]->off < v[i - 1]->off + v[i - 1]->n_bytes)
                    st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensors %s and %s overlap in the data section (%zu < %zu)",
                                     f->path, v[i - 1]->name, v[i]->name, v[i]->off, v[i - 1]->off + v[i - 1]->n_bytes);
        }
        free(v);
    }
    return st;
}

mpq_status mpq_gguf_open(const char *path, mpq_gguf_file **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_gguf_file *f = NULL;
    struct stat sb;
    int fd = -1;
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_gguf_open: out is NULL");
    *out = NULL;
    if (!path) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_gguf_open: path is NULL");
    if ((st = mpq_file_open_regular(path, &fd, err)) != MPQ_OK) return st; /* refuses FIFOs, devices */
    f = mpq_calloc(1, sizeof *f);
    if (!f || !(f->path = malloc(strlen(path) + 1))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(f->path, path, strlen(path) + 1);
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    if (sb.st_size < 24) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: file of %lld bytes is too short for a GGUF header (24 bytes)", path,
                         (long long)sb.st_size);
        goto done;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: cannot map %lld bytes: %s", path, (long long)sb.st_size, strerror(errno));
        goto done;
    }
    f->map = map;
    f->size = (size_t)sb.st_size;
    if ((st = parse(f, err)) != MPQ_OK) goto done;
    *out = f;
    f = NULL;
done:
    if (fd >= 0) close(fd);
    mpq_gguf_close(f);
    return st;
}

const mpq_gguf_kv *mpq_gguf_find_kv(const mpq_gguf_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_kv; i++)
        if (strcmp(f->kvs[i].key, key) == 0) return &f->kvs[i];
    return NULL;
}

const mpq_gguf_tensor *mpq_gguf_find_tensor(const mpq_gguf_file *f, const char *name) {
    if (!f || !name) return NULL;
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

static mpq_status absent(const mpq_gguf_file *f, const char *key, bool *found, mpq_err *err) {
    if (found) {
        *found = false;
        return MPQ_OK;
    }
    return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: missing key %s", f->path, key);
}

mpq_status mpq_gguf_get_int(const mpq_gguf_file *f, const char *key, int64_t lo, int64_t hi, int64_t *out,
                            bool *found, mpq_err *err) {
    const mpq_gguf_kv *kv = mpq_gguf_find_kv(f, key);
    if (!kv) return absent(f, key, found, err);
    const unsigned char *p = f->map + kv->off;
    int64_t v;
    switch (kv->type) {
    case MPQ_GGUF_U8: v = p[0]; break;
    case MPQ_GGUF_I8: v = (int8_t)p[0]; break;
    case MPQ_GGUF_U16: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
    case MPQ_GGUF_I16: { int16_t x; memcpy(&x, p, 2); v = x; break; }
    case MPQ_GGUF_U32: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
    case MPQ_GGUF_I32: { int32_t x; memcpy(&x, p, 4); v = x; break; }
    case MPQ_GGUF_U64: {
        uint64_t x;
        memcpy(&x, p, 8);
        v = x > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)x;
        break;
    }
    case MPQ_GGUF_I64: memcpy(&v, p, 8); break;
    default:
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: expected an integer, got %s", f->path, key,
                           vtype_name(kv->type));
    }
    if (v < lo || v > hi)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: %lld is outside %lld..%lld", f->path, key, (long long)v,
                           (long long)lo, (long long)hi);
    *out = v;
    if (found) *found = true;
    return MPQ_OK;
}

mpq_status mpq_gguf_get_float(const mpq_gguf_file *f, const char *key, float *out, bool *found, mpq_err *err) {
    const mpq_gguf_kv *kv = mpq_gguf_find_kv(f, key);
    if (!kv) return absent(f, key, found, err);
    if (kv->type == MPQ_GGUF_F32) {
        memcpy(out, f->map + kv->off, 4);
    } else if (kv->type == MPQ_GGUF_F64) {
        double d;
        memcpy(&d, f->map + kv->off, 8);
        *out = (float)d;
    } else {
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: expected a float, got %s", f->path, key,
                           vtype_name(kv->type));
    }
    if (found) *found = true;
    return MPQ_OK;
}

mpq_status mpq_gguf_get_string(const mpq_gguf_file *f, const char *key, const char **out, size_t *len, bool *found,
                               mpq_err *err) {
    const mpq_gguf_kv *kv = mpq_gguf_find_kv(f, key);
    if (!kv) return absent(f, key, found, err);
    if (kv->type != MPQ_GGUF_STRING)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key %s: expected a string, got %s", f->path, key,
                           vtype_name(kv->type));
    *out = (const char *)f->map + kv->off;
    *len = (size_t)kv->count;
    if (found) *found = true;
    return MPQ_OK;
}

void mpq_gguf_read_f32(const mpq_gguf_file *f, const mpq_gguf_tensor *t, float *dst) {
    const unsigned char *src = f->map + f->data_off + t->off;
    switch (t->type) {
    case MPQ_GGML_F32: memcpy(dst, src, t->n_elems * sizeof(float)); return;
    case MPQ_GGML_F16:
    case MPQ_GGML_BF16:
        for (size_t i = 0; i < t->n_elems; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = t->type == MPQ_GGML_F16 ? mpq_st_f16_to_f32(h) : mpq_st_bf16_to_f32(h);
        }
        return;
    case MPQ_GGML_Q8_0:
        for (size_t b = 0; b < t->n_elems / Q8_0_BLOCK; b++) {
            const unsigned char *blk = src + b * Q8_0_BYTES;
            float d = mpq_st_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
            for (int j = 0; j < Q8_0_BLOCK; j++) dst[b * Q8_0_BLOCK + (size_t)j] = d * (float)(int8_t)blk[2 + j];
        }
        return;
    }
}
