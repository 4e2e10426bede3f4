/*
 * mpq_model.h - trained LLaMA-family models: configuration, weights and the layer table.
 *
 * Loads llama2.c checkpoints (legacy 7-int header, versioned "ak42" v1 fp32) and
 * Hugging Face directories (config.json + model.safetensors, or sharded with
 * model.safetensors.index.json; Llama / Mistral / Qwen2; F32, F16, BF16 -> F32) and GGUF
 * files of llama-architecture models (F32, F16, BF16, Q8_0 tensors -> F32; other ggml types
 * are refused), whose tokenizer mpq_tokenizer_load also reads.
 *
 *     mpq_model *m = NULL;
 *     mpq_err err = {0};
 *     if (mpq_model_load("../shared/models/stories260K/stories260K.bin", &m, &err) != MPQ_OK) ...
 *     const mpq_model_config *c = mpq_model_get_config(m);
 *     for (int i = 0; i < mpq_model_n_linear(m); i++)
 *         printf("%s %lld x %lld\n", mpq_model_linear(m, i)->name, ...);
 *     mpq_model_free(m);
 *
 * Conventions (the executor relies on them):
 * - Every linear weight is row-major (out_features, in_features), as in llama2.c and PyTorch.
 * - RoPE pairs are interleaved (dims 2i, 2i+1 of each head), as in llama2.c. The HF
 *   loader undoes HF's rotate_half permutation of the q/k rows (and q/k biases) so one
 *   executor serves both sources and their logits agree.
 * - By default all weights are float32 in memory whatever the file dtype. With a 16-bit
 *   weight storage (mpq_model_load_dtype: MPQ_WEIGHTS_BF16 / MPQ_WEIGHTS_F16, or
 *   MPQ_WEIGHTS_SOURCE for the file's own 16-bit dtype) the seven linear matrices of every
 *   block and an untied token embedding are held as 16-bit values; the classifier (with a
 *   tied embedding, the embedding it is), RMSNorm weights and q/k/v biases stay float32 (the
 *   classifier is read whole by one product; widening it per row block would change the
 *   logits' bits). Every reader converts them to float32 at use
 *   (mpq_weights_linear_f32, mpq_weights_rows_f32): the numbers it sees are the 16-bit values
 *   widened exactly. When the file already holds those 16-bit values (BF16 kept as BF16, F16
 *   as F16) they are the same float32 numbers the default storage holds, bit for bit; rounding
 *   an F32 file to 16 bits (round to nearest even) changes the model.
 */
#ifndef MPQ_MODEL_H
#define MPQ_MODEL_H

#include "mpq/mpq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mpq_arch {
    MPQ_ARCH_LLAMA = 0,
    MPQ_ARCH_MISTRAL,
    MPQ_ARCH_QWEN2
} mpq_arch;

typedef enum mpq_model_format {
    MPQ_MODEL_FORMAT_LLAMA2C_LEGACY = 0,
    MPQ_MODEL_FORMAT_LLAMA2C_V1,
    MPQ_MODEL_FORMAT_HF,
    MPQ_MODEL_FORMAT_GGUF
} mpq_model_format;

typedef struct mpq_model_config {
    int dim;           /* model width */
    int hidden_dim;    /* SwiGLU inner width */
    int n_layers;      /* transformer blocks */
    int n_heads;       /* query heads */
    int n_kv_heads;    /* key/value heads (GQA when < n_heads) */
    int head_dim;      /* dim / n_heads */
    int vocab_size;
    int seq_len;       /* maximum context the model was trained with */
    float rope_theta;  /* 10000 for llama2.c */
    float norm_eps;    /* RMSNorm epsilon (1e-5 for llama2.c) */
    bool shared_classifier; /* output projection == token embedding */
    bool qkv_bias;     /* q/k/v projections have biases (Qwen2) */
    mpq_arch arch;
    mpq_model_format format;
    char source_dtype[8]; /* "F32", "F16", "BF16" (GGUF: also "Q8_0") as stored in the file */
} mpq_model_config;

/* One transformer block's parameters; all pointers borrowed from an mpq_weights block. */
typedef struct mpq_block_weights {
    float *attn_norm; /* (dim) */
    float *wq;        /* (n_heads*head_dim, dim) */
    float *wk;        /* (n_kv_heads*head_dim, dim) */
    float *wv;        /* (n_kv_heads*head_dim, dim) */
    float *wo;        /* (dim, n_heads*head_dim) */
    float *bq, *bk, *bv; /* biases (n_heads*head_dim), (kv_dim), (kv_dim); NULL unless qkv_bias */
    float *ffn_norm;  /* (dim) */
    float *w_gate;    /* (hidden_dim, dim)  llama2.c w1, HF gate_proj */
    float *w_up;      /* (hidden_dim, dim)  llama2.c w3, HF up_proj */
    float *w_down;    /* (dim, hidden_dim)  llama2.c w2, HF down_proj */
} mpq_block_weights;

/* How the linear matrices, the embedding and the classifier are held in memory. */
typedef enum mpq_weights_dtype {
    MPQ_WEIGHTS_F32 = 0, /* float32 (default) */
    MPQ_WEIGHTS_BF16,    /* bfloat16: the top 16 bits of a float32, rounded to nearest even */
    MPQ_WEIGHTS_F16,     /* IEEE binary16, rounded to nearest even (overflow -> inf) */
    MPQ_WEIGHTS_SOURCE   /* a load request only: BF16 / F16 when the file's dtype is, else F32 */
} mpq_weights_dtype;

/* The 16-bit copies of one block's linear matrices (same shapes as in mpq_block_weights). */
typedef struct mpq_block_weights16 {
    const uint16_t *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
} mpq_block_weights16;

/* A weight set. With 16-bit storage (dtype BF16 / F16) the float pointer of a linear matrix
 * (and tok_emb when untied) is NULL and the tensor lives in blocks16 / tok_emb16;
 * a caller may still point a linear slot at a float32 matrix (mpq_weights_linear_slot), which
 * then takes precedence over the 16-bit tensor until the slot is set back to NULL. */
typedef struct mpq_weights {
    float *tok_emb;    /* (vocab_size, dim) */
    mpq_block_weights *blocks; /* n_layers */
    float *final_norm; /* (dim) */
    float *classifier; /* (vocab_size, dim); equals tok_emb when shared_classifier */
    int n_layers;
    size_t n_floats;   /* total floats in the block that holds all of the above (0 for a view) */
    float *data;       /* that block (owned by whoever owns this struct); NULL for a view
                          (mpq_weights_view), whose pointers borrow another set's block */
    mpq_weights_dtype dtype;              /* F32, or BF16 / F16 for 16-bit storage */
    const mpq_block_weights16 *blocks16;  /* n_layers, or NULL when dtype is F32 (borrowed from the model) */
    const uint16_t *tok_emb16;            /* (vocab_size, dim): an untied embedding in 16 bits, or NULL */
    const uint16_t *classifier16;         /* reserved: NULL (the classifier is held in float32) */
    float **owned; /* [n_layers * MPQ_N_LAYER_KINDS] (block-major, kind order): the linear matrices
                      this table owns (mpq_weights_own_linear), NULL entries for borrowed ones;
                      NULL when it owns none. mpq_weights_free frees them. */
} mpq_weights;

typedef enum mpq_layer_kind {
    MPQ_LAYER_ATTN_Q = 0,
    MPQ_LAYER_ATTN_K,
    MPQ_LAYER_ATTN_V,
    MPQ_LAYER_ATTN_O,
    MPQ_LAYER_FFN_GATE,
    MPQ_LAYER_FFN_UP,
    MPQ_LAYER_FFN_DOWN
} mpq_layer_kind;

#define MPQ_N_LAYER_KINDS 7
#define MPQ_LAYER_NAME_MAX 96

/* One quantizable linear layer. */
typedef struct mpq_layer_info {
    char name[MPQ_LAYER_NAME_MAX];    /* stable name: "blk.3.attn_q" (GGUF-style, without ".weight") */
    char hf_name[MPQ_LAYER_NAME_MAX]; /* alias: "model.layers.3.self_attn.q_proj" */
    mpq_layer_kind kind;
    int block;
    int64_t rows;     /* out_features */
    int64_t cols;     /* in_features */
    int64_t n_params; /* rows * cols (biases are not quantized and not counted) */
} mpq_layer_info;

typedef struct mpq_model mpq_model;

/* Loads a model: a directory is read as a Hugging Face model, a regular file that starts with
 * "GGUF" as a GGUF file (general.architecture "llama"; q/k rows are already in llama2.c's
 * interleaved RoPE order there), any other file as a llama2.c checkpoint. On success *out owns the model (free with mpq_model_free).
 * Returns MPQ_ERR_IO, MPQ_ERR_FORMAT (message names the file and the problem),
 * MPQ_ERR_UNSUPPORTED or MPQ_ERR_NOMEM. */
mpq_status mpq_model_load(const char *path, mpq_model **out, mpq_err *err);
/* As mpq_model_load, holding the linear matrices and an untied embedding as dtype
 * (MPQ_WEIGHTS_SOURCE: the file's BF16 / F16, float32 for any other file dtype). Each such
 * tensor is decoded to float32 in a staging buffer of the largest tensor's size and rounded
 * into its 16-bit home, so loading needs 2 B per parameter plus that buffer. MPQ_ERR_INVALID
 * for a dtype outside the enum; otherwise as mpq_model_load. */
mpq_status mpq_model_load_dtype(const char *path, mpq_weights_dtype dtype, mpq_model **out, mpq_err *err);
/* The storage of a loaded model's weights: F32, BF16 or F16 (never SOURCE). */
mpq_weights_dtype mpq_model_weights_dtype(const mpq_model *m);
/* "f32", "bf16", "f16", "source" ("?" outside the enum); _parse accepts exactly these names
 * and returns false for anything else. */
const char *mpq_weights_dtype_name(mpq_weights_dtype d);
bool mpq_weights_dtype_parse(const char *name, mpq_weights_dtype *out);
void mpq_model_free(mpq_model *m); /* accepts NULL */

/* True when path is a regular file starting with "GGUF" (a FIFO or directory is never opened).
 * A GGUF model carries its tokenizer: mpq_tokenizer_load(path, ...) reads it. */
bool mpq_model_file_is_gguf(const char *path);

/* A model without weights ("shape only"): the configuration cfg (head_dim as given), the
 * linear layer table layers[n_linear] (copied, names and kinds as stored) and the total
 * parameter count n_params; path is recorded for messages and never opened. This is what a
 * stored job knows without its model file (mpq_job.h): configs, export plans and sizes work
 * on it; what needs weights refuses it (mpq_weights_clone, mpq_exec_create, mpq_config_apply:
 * MPQ_ERR_INVALID "... shape only"). MPQ_ERR_INVALID (a non-positive dimension, no layers, a
 * layer whose block or kind is out of range), MPQ_ERR_NOMEM. Free with mpq_model_free. */
mpq_status mpq_model_shape_create(const char *path, const mpq_model_config *cfg, const mpq_layer_info *layers,
                                  int n_linear, int64_t n_params, mpq_model **out, mpq_err *err);
/* A shape-only copy of any model (its config, layer table, parameter count and path). */
mpq_status mpq_model_shape_copy(const mpq_model *m, mpq_model **out, mpq_err *err);
/* False for a shape-only model (and NULL). */
bool mpq_model_has_weights(const mpq_model *m);

/* Borrowed; valid until mpq_model_free. */
const mpq_model_config *mpq_model_get_config(const mpq_model *m);
const mpq_weights *mpq_model_get_weights(const mpq_model *m);
const char *mpq_model_path(const mpq_model *m);
int64_t mpq_model_n_params(const mpq_model *m); /* all parameters (embedding counted once) */

/* The layer table, in block order then kind order (q k v o gate up down). */
int mpq_model_n_linear(const mpq_model *m);
const mpq_layer_info *mpq_model_linear(const mpq_model *m, int i);
/* Index of a layer by its stable name or HF alias (with or without ".weight"); -1 if none. */
int mpq_model_find_linear(const mpq_model *m, const char *name);

/* Pointer to layer i's float32 matrix inside any weights set of this model's shape; NULL
 * when that matrix is held only in 16 bits (use mpq_weights_linear_f32). */
float *mpq_weights_linear(const mpq_weights *w, const mpq_layer_info *li);

/* Layer li's matrix as float32: the float pointer when the slot holds one, otherwise the
 * 16-bit tensor converted into scratch (li->rows * li->cols floats, caller's) and scratch
 * returned. NULL for a bad layer. The result is valid until scratch is reused. */
const float *mpq_weights_linear_f32(const mpq_weights *w, const mpq_layer_info *li, float *scratch);

/* Rows [row0, row0 + n_rows) of the token embedding (classifier false) or the classifier
 * (true), each dim floats, as float32: a pointer into the float tensor, or the 16-bit rows
 * converted into scratch (n_rows * dim floats). NULL for a bad argument. */
const float *mpq_weights_rows_f32(const mpq_weights *w, bool classifier, int dim, int64_t row0, int64_t n_rows,
                                  float *scratch);

/* Widens n 16-bit values of dtype (BF16 or F16) to float32 (exact). */
void mpq_weights16_to_f32(mpq_weights_dtype dtype, const uint16_t *src, size_t n, float *dst);

/* Address of the slot in w's table that holds layer li's matrix pointer (NULL for a bad
 * layer): a caller may point it at another (rows, cols) matrix for a while (e.g. a
 * quantized copy of that one layer) and must put the old pointer back before the
 * weights are freed or used as the model's own. */
float **mpq_weights_linear_slot(mpq_weights *w, const mpq_layer_info *li);

/* A weight table that borrows every tensor of m (no copy: data NULL, n_floats 0): the same
 * numbers as mpq_model_get_weights(m), with a table of its own whose per-layer pointers
 * may be substituted (mpq_weights_linear_slot) without touching m or other views. One view
 * per thread costs n_layers block entries, not a model. m must outlive it; free with
 * mpq_weights_free (which frees only the table and the matrices the view owns itself,
 * mpq_weights_own_linear). MPQ_ERR_INVALID (NULL, shape only),
 * MPQ_ERR_NOMEM. */
mpq_status mpq_weights_view(const mpq_model *m, mpq_weights **out, mpq_err *err);

/* A weight table that borrows every tensor src points at (src's own block, the model tensors
 * src borrows and the matrices src owns): the same numbers as src, with a table of its own
 * whose slots may be substituted without touching src. src (and whatever it borrows) must
 * outlive it and must not change its slots meanwhile; free with mpq_weights_free (which frees
 * only the table and the matrices it owns itself). MPQ_ERR_INVALID (NULL), MPQ_ERR_NOMEM. */
mpq_status mpq_weights_view_of(const mpq_weights *src, mpq_weights **out, mpq_err *err);

/* Gives w a float32 matrix of its own for layer li (li->rows x li->cols floats), filled with
 * layer li's numbers in src (src's float matrix, or its 16-bit tensor widened exactly; src may
 * be w itself), and points w's slot at it; a matrix w already owns for li is reused (and
 * refilled from src). *out (may be NULL) receives the matrix, which the caller may overwrite
 * (e.g. quantize in place) while w owns it. The other layers, the embedding, classifier, norms
 * and biases stay as they are (borrowed for a view), so a view with its quantized layers owned
 * holds 4 B x the parameters of those layers only. w keeps the matrix until
 * mpq_weights_drop_linear or mpq_weights_free. MPQ_ERR_INVALID (NULL, a layer outside w's or
 * src's shape, a layer src holds no tensor for), MPQ_ERR_NOMEM (naming the layer). */
mpq_status mpq_weights_own_linear(mpq_weights *w, const mpq_layer_info *li, const mpq_weights *src, float **out,
                                  mpq_err *err);

/* Undoes mpq_weights_own_linear: points w's slot of layer li back at src's float matrix for it
 * (NULL when src holds it in 16 bits: then w reads its own blocks16, which must be src's, as
 * for any two views of one model) and frees the matrix w owned for it, if any. Does nothing for
 * a bad layer or NULL w / src. */
void mpq_weights_drop_linear(mpq_weights *w, const mpq_layer_info *li, const mpq_weights *src);

/* The matrix w owns for layer li, or NULL (borrowed, or a bad layer). */
float *mpq_weights_owned_linear(const mpq_weights *w, const mpq_layer_info *li);

/* Deep copy of a model's weights in one float32 block (for quantized copies); a model held
 * in 16 bits is widened (the copy has dtype F32 and 4 B per parameter). Free with mpq_weights_free. */
mpq_status mpq_weights_clone(const mpq_model *m, mpq_weights **out, mpq_err *err);
void mpq_weights_free(mpq_weights *w); /* accepts NULL */

const char *mpq_layer_kind_name(mpq_layer_kind kind); /* "attn_q", ..., "ffn_down" */

/* Names stored in the results database's models table (arch, format) and printed by
 * `mpq inspect`: "llama", "mistral", "qwen2"; "llama2c-legacy", "llama2c-v1", "hf", "gguf".
 * _name returns "?" for a value outside the enum; _parse returns false for an unknown name. */
const char *mpq_arch_name(mpq_arch a);
bool mpq_arch_parse(const char *name, mpq_arch *out);
const char *mpq_model_format_name(mpq_model_format f);
bool mpq_model_format_parse(const char *name, mpq_model_format *out);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_MODEL_H */
