/*
 * gguf.h - private reader of one GGUF file (llama.cpp's model format, versions 2 and 3),
 * mmapped, with every count, length, offset and type checked against the file size before use.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/value pairs
 * (key: u64 length + bytes; u32 value type; the value: scalars, a string as u64 length + bytes,
 * an array as u32 element type + u64 count + elements); n_tensors tensor infos (name, u32
 * n_dims, u64 ne[n_dims] with ne[0] the fastest-varying, u32 ggml type, u64 offset relative to
 * the data section); the data section starts at the first multiple of general.alignment
 * (default 32) after the header, and every tensor offset is a multiple of it.
 * Reference: ggml-org/llama.cpp ggml/src/gguf.cpp and docs/gguf.md (format), ggml.h (types).
 *
 * Tensor types read: F32, F16, BF16 and Q8_0 (blocks of 32 values: fp16 scale d, 32 int8 q,
 * value d * q); any other ggml type is refused when the file is opened.
 */
#ifndef MPQ_MODEL_GGUF_H
#define MPQ_MODEL_GGUF_H

#include "mpq/mpq.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_tokenizer.h"

#define MPQ_GGUF_MAX_DIMS 4

/* GGUF value types (gguf.cpp enum gguf_type). */
typedef enum mpq_gguf_vtype {
    MPQ_GGUF_U8 = 0, MPQ_GGUF_I8, MPQ_GGUF_U16, MPQ_GGUF_I16, MPQ_GGUF_U32, MPQ_GGUF_I32, MPQ_GGUF_F32,
    MPQ_GGUF_BOOL, MPQ_GGUF_STRING, MPQ_GGUF_ARRAY, MPQ_GGUF_U64, MPQ_GGUF_I64, MPQ_GGUF_F64
} mpq_gguf_vtype;

/* The ggml tensor types this reader converts (values as in ggml.h). */
#define MPQ_GGML_F32 0
#define MPQ_GGML_F16 1
#define MPQ_GGML_Q8_0 8
#define MPQ_GGML_BF16 30

typedef struct mpq_gguf_kv {
    char *key;            /* NUL-terminated copy */
    mpq_gguf_vtype type;
    mpq_gguf_vtype elem;  /* arrays: element type (never ARRAY) */
    uint64_t count;       /* arrays: element count; strings: byte length */
    size_t off;           /* file offset of the value (arrays: of the first element; strings: of the bytes) */
} mpq_gguf_kv;

typedef struct mpq_gguf_tensor {
    char *name;           /* NUL-terminated copy */
    int n_dims;
    int64_t ne[MPQ_GGUF_MAX_DIMS]; /* ne[0] fastest; unused dims are 1 */
    uint32_t type;        /* MPQ_GGML_* */
    size_t n_elems;
    size_t off;           /* relative to the data section */
    size_t n_bytes;
} mpq_gguf_tensor;

typedef struct mpq_gguf_file {
    char *path;
    const unsigned char *map; /* whole file, read-only mapping */
    size_t size;
    uint32_t version;
    size_t alignment;
    size_t data_off;          /* start of the data section */
    mpq_gguf_kv *kvs;
    int n_kv;
    mpq_gguf_tensor *tensors;
    int n_tensors;
} mpq_gguf_file;

/* True when path is a regular file that starts with the bytes "GGUF" (never blocks on a FIFO). */
bool mpq_gguf_sniff(const char *path);

/* Opens, maps and validates path: header, every key/value (lengths and counts within the file,
 * known value types, no nested arrays, no duplicate keys), every tensor info (name length,
 * 1..4 dims > 0 with an overflow-checked product, a supported type, Q8_0 rows a multiple of 32,
 * offset aligned, bytes inside the data section, no duplicate names, no overlaps).
 * *out owned by the caller (mpq_gguf_close). MPQ_ERR_IO, MPQ_ERR_FORMAT, MPQ_ERR_UNSUPPORTED
 * (version, tensor type), MPQ_ERR_NOMEM; the message names the file, the object and the byte. */
mpq_status mpq_gguf_open(const char *path, mpq_gguf_file **out, mpq_err *err);
void mpq_gguf_close(mpq_gguf_file *f); /* accepts NULL */

/* Borrowed; NULL when absent. */
const mpq_gguf_kv *mpq_gguf_find_kv(const mpq_gguf_file *f, const char *key);
const mpq_gguf_tensor *mpq_gguf_find_tensor(const mpq_gguf_file *f, const char *name);

/* Typed getters. Absent key: *out untouched and MPQ_OK with *found false (found may be NULL
 * when the key is required: then MPQ_ERR_FORMAT). Wrong type or out of range: MPQ_ERR_FORMAT. */
mpq_status mpq_gguf_get_int(const mpq_gguf_file *f, const char *key, int64_t lo, int64_t hi, int64_t *out,
                            bool *found, mpq_err *err);
mpq_status mpq_gguf_get_float(const mpq_gguf_file *f, const char *key, float *out, bool *found, mpq_err *err);
/* *out points into the mapping, not NUL-terminated; *len bytes. */
mpq_status mpq_gguf_get_string(const mpq_gguf_file *f, const char *key, const char **out, size_t *len, bool *found,
                               mpq_err *err);

/* "F32", "F16", "Q8_0", ..., or "type N" for a number ggml does not define. */
const char *mpq_ggml_type_name(uint32_t type, char buf[16]);

/* Converts tensor t to float32 into dst (t->n_elems floats). */
void mpq_gguf_read_f32(const mpq_gguf_file *f, const mpq_gguf_tensor *t, float *dst);

/* The model loader (mpq_model_load dispatches here for GGUF files) and the tokenizer from the
 * file's tokenizer.ggml.* keys (mpq_tokenizer_load dispatches here). */
mpq_status mpq_model_load_gguf(const char *path, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err);
mpq_status mpq_tokenizer_load_gguf(const char *path, int vocab_size, mpq_tokenizer **out, mpq_err *err);

#endif /* MPQ_MODEL_GGUF_H */
