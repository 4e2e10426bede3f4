/*
 * safetensors.h - private reader of one .safetensors file (mmapped, every tensor validated).
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
 * data_offsets [begin, end)}} with offsets relative to the byte after the header;
 * "__metadata__" is ignored. Reference: huggingface/safetensors README (format section).
 */
#ifndef MPQ_MODEL_SAFETENSORS_H
#define MPQ_MODEL_SAFETENSORS_H

#include "mpq/mpq.h"

#define MPQ_ST_MAX_DIMS 8

typedef enum mpq_st_dtype { MPQ_ST_F32 = 0, MPQ_ST_F16, MPQ_ST_BF16 } mpq_st_dtype;

typedef struct mpq_st_tensor {
    char *name;
    mpq_st_dtype dtype;
    int ndim;
    int64_t shape[MPQ_ST_MAX_DIMS];
    size_t n_elems;
    size_t begin, end; /* relative to the data section */
} mpq_st_tensor;

typedef struct mpq_st_file {
    char *path;
    unsigned char *map; /* whole file, read-only mapping */
    size_t size;
    size_t data_off;    /* 8 + N */
    mpq_st_tensor *tensors;
    int n_tensors;
} mpq_st_file;

/* Opens, maps and validates path (header bounds, JSON, dtypes, shapes with overflow checks,
 * offsets inside the data section, no two tensors overlapping). *out owned by the caller
 * (mpq_st_close). MPQ_ERR_IO, MPQ_ERR_FORMAT, MPQ_ERR_UNSUPPORTED (dtype), MPQ_ERR_NOMEM. */
mpq_status mpq_st_open(const char *path, mpq_st_file **out, mpq_err *err);
void mpq_st_close(mpq_st_file *f); /* accepts NULL */

/* Tensor by exact name; NULL if absent. Borrowed. */
const mpq_st_tensor *mpq_st_find(const mpq_st_file *f, const char *name);

/* "F32", "F16", "BF16". */
const char *mpq_st_dtype_name(mpq_st_dtype d);

/* Converts tensor t to float32 into dst (t->n_elems floats). MPQ_ERR_FORMAT naming the file,
 * tensor and flat element index when an element is NaN or Inf (dst is then partly written). */
mpq_status mpq_st_read_f32(const mpq_st_file *f, const mpq_st_tensor *t, float *dst, mpq_err *err);

/* IEEE half / bfloat16 bits to float. */
float mpq_st_f16_to_f32(uint16_t h);
float mpq_st_bf16_to_f32(uint16_t h);

#endif /* MPQ_MODEL_SAFETENSORS_H */
