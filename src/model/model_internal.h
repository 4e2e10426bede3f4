/*
 * model_internal.h - private parts of the model module shared by model.c, llama2c.c, hf.c.
 *
 * The mpq_model struct, the single-block weight layout (llm.c style: one allocation,
 * pointers carved out) and the entry points of the format loaders. Not a public header.
 */
#ifndef MPQ_MODEL_INTERNAL_H
#define MPQ_MODEL_INTERNAL_H

#include "mpq/mpq_model.h"

struct mpq_model {
    mpq_model_config cfg;
    mpq_weights w;          /* w.data and w.blocks owned by the model */
    mpq_layer_info *layers; /* n_linear entries */
    int n_linear;
    char *path;
    bool shape_only;      /* mpq_model_shape_create: no weights */
    mpq_weights_dtype wdtype;      /* F32, BF16 or F16 */
    uint16_t *data16;              /* 16-bit storage (wdtype BF16 / F16), else NULL */
    mpq_block_weights16 *blocks16; /* n_layers, owned; NULL for F32 */
    float *stage;                  /* while loading 16-bit: float32 staging of one tensor */
    size_t stage_n;
    int64_t shape_params; /* n_params of a shape-only model */
};

/* Checks a config's dimensions (all > 0, dim % n_heads == 0, n_heads % n_kv_heads == 0,
 * even head_dim) and fills head_dim. `what` names the file in the message. MPQ_ERR_FORMAT. */
mpq_status mpq_model_check_config(mpq_model_config *cfg, const char *what, mpq_err *err);

/* Number of floats the weight block of cfg holds (overflow-checked). MPQ_ERR_FORMAT on overflow. */
mpq_status mpq_model_weights_size(const mpq_model_config *cfg, size_t *n_floats, const char *what, mpq_err *err);

/* Allocates a model for a checked cfg: zeroed weight block with pointers carved out, the layer
 * table and a copy of path. On success *out owns everything (free with mpq_model_free).
 * dtype BF16 / F16 (SOURCE resolved from cfg->source_dtype): the linear matrices, embedding
 * and classifier get 16-bit homes and their float pointers all point at one staging buffer
 * of the largest such tensor; a loader writes a tensor there as float32 and then calls
 * mpq_model_commit with the address of the pointer it wrote through. */
mpq_status mpq_model_create(const mpq_model_config *cfg, const char *path, mpq_weights_dtype dtype, mpq_model **out,
                            mpq_err *err);
/* After a tensor was written through *slot: with 16-bit storage, rounds the staged float32
 * values into the tensor's 16-bit home when slot is one of the 16-bit tensors' pointers;
 * otherwise nothing. */
void mpq_model_commit(mpq_model *m, float *const *slot);
/* End of loading: with 16-bit storage sets the staged float pointers to NULL and frees the
 * staging buffer. */
void mpq_model_finish_load(mpq_model *m);

/* Format loaders (called by mpq_model_load_dtype). */
mpq_status mpq_model_load_llama2c(const char *path, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err);
mpq_status mpq_model_load_hf(const char *dir, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err);

#endif /* MPQ_MODEL_INTERNAL_H */
