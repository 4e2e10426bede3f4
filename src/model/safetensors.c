/*
 * safetensors.c - reader of one .safetensors file: mmap, parse the JSON header with cJSON,
 * validate every tensor (dtype, shape product, byte range, overlaps) before any byte is read.
 * Reference: huggingface/safetensors format description (8-byte LE header size, JSON header,
 * data_offsets relative to the start of the byte buffer, "__metadata__" string map).
 */
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER ((size_t)100 * 1024 * 1024) /* the format caps the header at 100 MB */

const char *mpq_st_dtype_name(mpq_st_dtype d) {
    switch (d) {
    case MPQ_ST_F32: return "F32";
    case MPQ_ST_F16: return "F16";
    case MPQ_ST_BF16: return "BF16";
    }
    return "?";
}

static size_t dtype_size(mpq_st_dtype d) { return d == MPQ_ST_F32 ? 4 : 2; }

float mpq_st_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float mpq_st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

mpq_status mpq_st_read_f32(const mpq_st_file *f, const mpq_st_tensor *t, float *dst, mpq_err *err) {
    const unsigned char *src = f->map + f->data_off + t->begin;
    if (t->dtype == MPQ_ST_F32) {
        memcpy(dst, src, t->n_elems * sizeof(float));
    } else {
        for (size_t i = 0; i < t->n_elems; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = t->dtype == MPQ_ST_F16 ? mpq_st_f16_to_f32(h) : mpq_st_bf16_to_f32(h);
        }
    }
    for (size_t i = 0; i < t->n_elems; i++)
        if (!isfinite(dst[i]))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: element %zu (%s) is %s; weights must be finite",
                               f->path, t->name, i, mpq_st_dtype_name(t->dtype),
                               isnan(dst[i]) ? "NaN" : dst[i] > 0 ? "+Inf" : "-Inf");
    return MPQ_OK;
}

const mpq_st_tensor *mpq_st_find(const mpq_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void mpq_st_close(mpq_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->size);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    free(f);
}

/* A JSON number that is a non-negative integer <= 2^53 (exact in a double). */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || floor(v) != v) return false;
    *out = (uint64_t)v;
    return true;
}

static int cmp_begin(const void *a, const void *b) {
    const mpq_st_tensor *x = *(const mpq_st_tensor *const *)a, *y = *(const mpq_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static mpq_status parse_tensor(const mpq_st_file *f, const cJSON *item, mpq_st_tensor *t, size_t data_size,
                               mpq_err *err) {
    const char *p = f->path, *nm = item->string;
    if (!cJSON_IsObject(item))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: entry is not a JSON object", p, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: needs string dtype, array shape and array data_offsets",
                           p, nm);
    if (strcmp(dt->valuestring, "F32") == 0) t->dtype = MPQ_ST_F32;
    else if (strcmp(dt->valuestring, "F16") == 0) t->dtype = MPQ_ST_F16;
    else if (strcmp(dt->valuestring, "BF16") == 0) t->dtype = MPQ_ST_BF16;
    else
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: tensor %s: dtype %.32s is not supported (F32, F16, BF16)", p,
                           nm, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > MPQ_ST_MAX_DIMS)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: %d dimensions (max %d)", p, nm, nd, MPQ_ST_MAX_DIMS);
    size_t n = 1;
    t->ndim = nd;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        if (!json_uint(cJSON_GetArrayItem(sh, i), &v))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer", p, nm, i);
        t->shape[i] = (int64_t)v;
        if (!mpq_size_mul(n, (size_t)v, &n))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: shape product overflows at dimension %d", p, nm, i);
    }
    t->n_elems = n;
    uint64_t b, e;
    if (cJSON_GetArraySize(off) != 2 || !json_uint(cJSON_GetArrayItem(off, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(off, 1), &e))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: data_offsets must be two non-negative integers", p, nm);
    if (b > e)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: begin %llu > end %llu", p, nm, (unsigned long long)b,
                           (unsigned long long)e);
    if (e > data_size)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: end %llu > data size %zu", p, nm,
                           (unsigned long long)e, data_size);
    size_t bytes;
    if (!mpq_size_mul(n, dtype_size(t->dtype), &bytes) || bytes != (size_t)(e - b))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s: %zu elements of %s need %zu bytes but data_offsets give %llu",
                           p, nm, n, dt->valuestring, n * dtype_size(t->dtype), (unsigned long long)(e - b));
    t->begin = (size_t)b;
    t->end = (size_t)e;
    return MPQ_OK;
}

mpq_status mpq_st_open(const char *path, mpq_st_file **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_st_file *f = NULL;
    cJSON *root = NULL;
    mpq_st_tensor **order = NULL;
    int fd = -1;
    struct stat sb;
    *out = NULL;
    f = mpq_calloc(1, sizeof *f);
    if (!f || !(f->path = malloc(strlen(path) + 1))) goto nomem;
    memcpy(f->path, path, strlen(path) + 1);
    if ((st = mpq_file_open_regular(path, &fd, err)) != MPQ_OK) goto done;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    if (sb.st_size < 8) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: file of %lld bytes has no 8-byte header length", path,
                         (long long)sb.st_size);
        goto done;
    }
    f->size = (size_t)sb.st_size;
    void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: mmap of %zu bytes failed", path, f->size);
        goto done;
    }
    f->map = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    if (n > f->size - 8 || n > MAX_HEADER) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: header length %llu + 8 > file size %zu", path,
                         (unsigned long long)n, f->size);
        goto done;
    }
    f->data_off = 8 + (size_t)n;
    root = cJSON_ParseWithLength((const char *)f->map + 8, (size_t)n);
    if (!root || !cJSON_IsObject(root)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: header (%llu bytes) is not a JSON object", path,
                         (unsigned long long)n);
        goto done;
    }
    int cnt = cJSON_GetArraySize(root);
    f->tensors = mpq_calloc(cnt > 0 ? (size_t)cnt : 1, sizeof *f->tensors);
    order = mpq_calloc(cnt > 0 ? (size_t)cnt : 1, sizeof *order);
    if (!f->tensors || !order) goto nomem;
    size_t data_size = f->size - f->data_off;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (it->string && strcmp(it->string, "__metadata__") == 0) continue;
        mpq_st_tensor *t = &f->tensors[f->n_tensors];
        st = parse_tensor(f, it, t, data_size, err);
        if (st != MPQ_OK) goto done;
        if (mpq_st_find(f, it->string)) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensor %s appears twice in the header", path, it->string);
            goto done;
        }
        if (!(t->name = malloc(strlen(it->string) + 1))) goto nomem;
        memcpy(t->name, it->string, strlen(it->string) + 1);
        order[f->n_tensors] = t;
        f->n_tensors++;
    }
    qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_begin);
    for (int i = 1; i < f->n_tensors; i++) {
        if (order[i]->begin < order[i - 1]->end) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: tensors %s [%zu, %zu) and %s [%zu, %zu) overlap", path,
                             order[i - 1]->name, order[i - 1]->begin, order[i - 1]->end, order[i]->name,
                             order[i]->begin, order[i]->end);
            goto done;
        }
    }
    *out = f;
    f = NULL;
    goto done;
nomem:
    st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
done:
    if (fd >= 0) close(fd);
    cJSON_Delete(root);
    free(order);
    mpq_st_close(f);
    return st;
}
