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
    int64_t shape_params; /* n_params of a shape-only model */
};

/* Checks a config's dimensions (all > 0, dim % n_heads == 0, n_heads % n_kv_heads == 0,
 * even head_dim) and fills head_dim. `what` names the file in the message. MPQ_ERR_FORMAT. */
mpq_status mpq_model_check_config(mpq_model_config *cfg, const char *what, mpq_err *err);

/* Number of floats the weight block of cfg holds (overflow-checked). MPQ_ERR_FORMAT on overflow. */
mpq_status mpq_model_weights_size(const mpq_model_config *cfg, size_t *n_floats, const char *what, mpq_err *err);

/* Allocates a model for a checked cfg: zeroed weight block with pointers carved out, the layer
 * table and a copy of path. On success *out owns everything (free with mpq_model_free). */
mpq_status mpq_model_create(const mpq_model_config *cfg, const char *path, mpq_model **out, mpq_err *err);

/* Format loaders (called by mpq_model_load). */
mpq_status mpq_model_load_llama2c(const char *path, mpq_model **out, mpq_err *err);
mpq_status mpq_model_load_hf(const char *dir, mpq_model **out, mpq_err *err);

#endif /* MPQ_MODEL_INTERNAL_H */
