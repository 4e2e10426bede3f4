/*
 * plan.c - the canonical export plan (mpq_export.h): per-layer names in the three naming
 * schemes (mpq stable, GGUF as llama.cpp writes it, Hugging Face module), candidate, exact
 * bits and bytes; per-block KV pairs; scheme; totals; provenance. Also the ggml type table
 * and the llama.cpp type choice with llama-quantize's row-length fallback.
 * References: ggml/src/ggml.c type_traits (block sizes and bytes per block); llama.cpp
 * src/llama-quant.cpp (ggml-org/llama.cpp @007dbbf3): tensor_type_fallback() - "IQ1_S..IQ3_S,
 * IQ4_XS -> IQ4_NL; Q2_0/Q2_K/Q3_K/TQ* -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0;
 * default: throw 'no tensor type fallback'; F16 if the fallback's block still does not
 * divide ncols" - and tensor_requires_imatrix() (IQ3_XXS, IQ2_*, IQ1_*). Older llama.cpp
 * (before 2025) sent Q2_K/Q3_K to IQ4_NL instead of Q4_0 (same 4.5 bits, 32 block).
 */
#include "mpq/mpq_export.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export/export_internal.h"

/* name, block, bytes per block, needs imatrix (ggml type_traits) */
static const mpq_ggml_type_info ggml_types[] = {
    {"f32", 1, 4, false},       {"f16", 1, 2, false},      {"bf16", 1, 2, false},
    {"q4_0", 32, 18, false},    {"q4_1", 32, 20, false},   {"q5_0", 32, 22, false},
    {"q5_1", 32, 24, false},    {"q8_0", 32, 34, false},   {"q2_k", 256, 84, false},
    {"q3_k", 256, 110, false},  {"q4_k", 256, 144, false}, {"q5_k", 256, 176, false},
    {"q6_k", 256, 210, false},  {"iq2_xxs", 256, 66, true}, {"iq2_xs", 256, 74, true},
    {"iq2_s", 256, 82, true},   {"iq3_xxs", 256, 98, true}, {"iq3_s", 256, 110, false},
    {"iq4_nl", 32, 18, false},  {"iq4_xs", 256, 136, false}, {"iq1_s", 256, 50, true},
    {"iq1_m", 256, 56, true},
};

const mpq_ggml_type_info *mpq_ggml_type_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++) {
        const char *a = ggml_types[i].name, *b = name;
        while (*a && *b && *a == ((*b >= 'A' && *b <= 'Z') ? *b - 'A' + 'a' : *b)) a++, b++;
        if (!*a && !*b) return &ggml_types[i];
    }
    return NULL;
}

static double type_bits(const mpq_ggml_type_info *t) { return 8.0 * t->type_size / t->block; }

/* The ladder of the brief, cheapest first. */
static const char *const ladder[] = {"q2_k", "iq3_xxs", "q3_k", "iq4_xs", "q4_k", "q5_k",
                                     "q6_k", "q8_0",    "f16",  "f32"};

/* llama.cpp tensor_type_fallback(); NULL where llama.cpp throws. */
static const char *llama_fallback(const char *t) {
    static const char *const map[][2] = {
        {"iq1_s", "iq4_nl"}, {"iq1_m", "iq4_nl"}, {"iq2_xxs", "iq4_nl"}, {"iq2_xs", "iq4_nl"},
        {"iq2_s", "iq4_nl"}, {"iq3_xxs", "iq4_nl"}, {"iq3_s", "iq4_nl"}, {"iq4_xs", "iq4_nl"},
        {"q2_k", "q4_0"},    {"q3_k", "q4_0"},     {"q4_k", "q5_0"},    {"q5_k", "q5_1"},
        {"q6_k", "q8_0"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], t) == 0) return map[i][1];
    return NULL;
}

mpq_status mpq_export_ggml_choose(const mpq_candidate *c, int64_t rows, int64_t cols, bool allow_imatrix,
                                  bool skip_imatrix, mpq_ggml_choice *out, mpq_err *err) {
    if (!c || !out || rows <= 0 || cols <= 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "ggml type: bad arguments (rows %lld, cols %lld)",
                           (long long)rows, (long long)cols);
    memset(out, 0, sizeof *out);
    if (mpq_candidate_is_saq(c))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "ggml type: candidate %s is a SAQ quantizer that no ggml tensor "
                           "type expresses", c->name);
    if (mpq_candidate_is_palette(c))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "ggml type: candidate %s is a Q-Palette quantizer that no ggml tensor type expresses",
                           c->name);
    double b = c->type == MPQ_QTYPE_F32 ? 32.0 : c->type == MPQ_QTYPE_F16 ? 16.0 : mpq_candidate_bits(c, cols);
    out->candidate_bits = b;
    /* llama-quantize resolves the row-length fallback first and then asks for an importance
     * matrix only if the RESOLVED type needs one (llama_tensor_get_type, then
     * tensor_requires_imatrix): iq3_xxs on 192 columns becomes iq4_nl and needs none. */
    const mpq_ggml_type_info *req = NULL, *res = NULL;
    bool no_fb = false;
    for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++) {
        const mpq_ggml_type_info *t = mpq_ggml_type_find(ladder[i]);
        if (type_bits(t) + 1e-9 < b) continue;
        const mpq_ggml_type_info *r = t;
        no_fb = false;
        if (cols % t->block != 0) {
            const char *fb = llama_fallback(t->name);
            if (!fb) {
                no_fb = true;
                r = mpq_ggml_type_find("f16");
            } else {
                r = mpq_ggml_type_find(fb);
                if (cols % r->block != 0) r = mpq_ggml_type_find("f16");
            }
        }
        if (r->needs_imatrix && !allow_imatrix) {
            if (skip_imatrix) continue;
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "%s (%.4f bits/weight) maps to %s, which needs an importance matrix: pass "
                               "--imatrix FILE (mpq export JOB --format imatrix writes one), or "
                               "--skip-imatrix-types to round up to the next type",
                               c->name, b, t->name);
        }
        req = t;
        res = r;
        break;
    }
    if (!req) req = res = mpq_ggml_type_find("f32");
    out->no_llama_fallback = no_fb;
    out->requested = req;
    out->resolved = res;
    out->fallback = res != req;
    size_t nb = 0;
    if (!mpq_size_mul3((size_t)rows, (size_t)(cols / res->block), (size_t)res->type_size, &nb) ||
        nb > (size_t)INT64_MAX)
        return mpq_err_set(err, MPQ_ERR_INVALID, "ggml type: %lld x %lld layer size overflows",
                           (long long)rows, (long long)cols);
    out->bytes = (int64_t)nb;
    return MPQ_OK;
}

/* ---- plan --------------------------------------------------------------------------- */

static const char *const gguf_kind[MPQ_N_LAYER_KINDS] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                         "ffn_gate", "ffn_up", "ffn_down"};

void mpq_export_plan_free(mpq_export_plan *p) {
    if (!p) return;
    free(p->layers);
    free(p->kv);
    free(p->job_name);
    free(p->solution_name);
    free(p->solver);
    free(p->status);
    free(p->metric_expr);
    free(p->budgets_json);
    free(p->created_at);
    free(p->config_json);
    free(p);
}

static bool dup_opt(const char *s, char **out) {
    *out = NULL;
    if (!s) return true;
    *out = export_strdup(s);
    return *out != NULL;
}

/* sha256 of the checkpoint: the file itself, or a HF directory's model.safetensors (or its
 * shard index). "" when a directory has neither. */
static mpq_status model_hash(const char *path, char out[65], mpq_err *err) {
    out[0] = '\0';
    struct stat sb;
    if (!path || stat(path, &sb) != 0) return MPQ_OK; /* in-memory or vanished: unknown */
    if (!S_ISDIR(sb.st_mode)) return mpq_sha256_file(path, out, err);
    static const char *const cand[] = {"model.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < 2; i++) {
        char p[4096];
        int n = snprintf(p, sizeof p, "%s/%s", path, cand[i]);
        if (n < 0 || (size_t)n >= sizeof p) continue;
        if (stat(p, &sb) == 0) return mpq_sha256_file(p, out, err);
    }
    return MPQ_OK;
}

static void base_name(const char *path, char *out, size_t n) {
    out[0] = '\0';
    if (!path) return;
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--; /* "dir/" -> "dir" */
    size_t s = len;
    while (s > 0 && path[s - 1] != '/') s--;
    size_t m = len - s < n - 1 ? len - s : n - 1;
    memcpy(out, path + s, m);
    out[m] = '\0';
}

mpq_status mpq_export_plan_build(const mpq_model *model, const mpq_config *cfg,
                                 const mpq_export_provenance *prov, mpq_export_plan **out, mpq_err *err) {
    mpq_status st = MPQ_OK;
    mpq_export_plan *p = NULL;
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "export plan: out is NULL");
    *out = NULL;
    if (!model || !cfg) return mpq_err_set(err, MPQ_ERR_INVALID, "export plan: model or config is NULL");
    const mpq_model_config *mc = mpq_model_get_config(model);
    int nl = mpq_model_n_linear(model);
    if (mpq_config_n_linear(cfg) != nl || mpq_config_n_blocks(cfg) != mc->n_layers)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "export plan: config has %d layers / %d blocks, model %d / %d",
                           mpq_config_n_linear(cfg), mpq_config_n_blocks(cfg), nl, mc->n_layers);
    p = calloc(1, sizeof *p);
    if (!p) return mpq_err_set(err, MPQ_ERR_NOMEM, "export plan: out of memory");
    p->model = *mc;
    p->model_params = mpq_model_n_params(model);
    base_name(mpq_model_path(model), p->model_file, sizeof p->model_file);
    if (prov && prov->model_sha256) snprintf(p->model_sha256, sizeof p->model_sha256, "%.64s", prov->model_sha256);
    else if ((st = model_hash(mpq_model_path(model), p->model_sha256, err)) != MPQ_OK) goto done;
    p->n_layers = nl;
    p->n_blocks = mc->n_layers;
    p->kv_dim = mc->n_kv_heads * mc->head_dim;
    p->layers = mpq_calloc((size_t)nl, sizeof *p->layers);
    p->kv = mpq_calloc((size_t)p->n_blocks, sizeof *p->kv);
    if (!p->layers || !p->kv) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "export plan: out of memory");
        goto done;
    }
    for (int i = 0; i < nl; i++) {
        const mpq_layer_info *li = mpq_model_linear(model, i);
        mpq_export_layer *L = &p->layers[i];
        snprintf(L->name, sizeof L->name, "%s", li->name);
        snprintf(L->hf_name, sizeof L->hf_name, "%s", li->hf_name);
        snprintf(L->gguf_name, sizeof L->gguf_name, "blk.%d.%s.weight", li->block, gguf_kind[li->kind]);
        L->kind = li->kind;
        L->block = li->block;
        L->rows = li->rows;
        L->cols = li->cols;
        L->n_params = li->n_params;
        L->cand = *mpq_config_layer(cfg, i);
        L->bits = mpq_candidate_bits_matrix(&L->cand, li->rows, li->cols);
        L->bytes = mpq_candidate_bytes(&L->cand, li->rows, li->cols);
        if (L->bytes < 0) {
            st = mpq_err_set(err, MPQ_ERR_INVALID, "export plan: %s: size overflows", li->name);
            goto done;
        }
    }
    for (int b = 0; b < p->n_blocks; b++) p->kv[b] = mpq_config_kv(cfg, b);
    if (mpq_config_has_kv_heads(cfg)) { /* per-head pairs: the block's widest K and V */
        int H = mpq_config_n_kv_heads(cfg);
        mpq_kv_pair *hp = mpq_calloc((size_t)H, sizeof *hp);
        if (!hp) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "export plan: out of memory");
            goto done;
        }
        for (int b = 0; b < p->n_blocks; b++) {
            if (!mpq_config_kv_heads(cfg, b, hp)) continue;
            p->kv[b] = hp[0];
            for (int h = 1; h < H; h++) {
                if (hp[h].k_bits > p->kv[b].k_bits) p->kv[b].k_bits = hp[h].k_bits;
                if (hp[h].v_bits > p->kv[b].v_bits) p->kv[b].v_bits = hp[h].v_bits;
            }
        }
        free(hp);
        p->kv_per_head = true;
    }
    p->kv_scheme = *mpq_config_kv_scheme(cfg);
    if ((st = mpq_config_get_stats(cfg, model, 0, &p->stats, err)) != MPQ_OK) goto done;
    p->config_json = mpq_config_to_json(cfg, model);
    if (!p->config_json) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "export plan: cannot serialise the config");
        goto done;
    }
    p->objective = NAN;
    if (prov) {
        p->job_id = prov->job_id;
        p->solution_id = prov->solution_id;
        p->objective = prov->objective;
        if (!dup_opt(prov->job_name, &p->job_name) || !dup_opt(prov->solution_name, &p->solution_name) ||
            !dup_opt(prov->solver, &p->solver) || !dup_opt(prov->status, &p->status) ||
            !dup_opt(prov->metric_expr, &p->metric_expr) || !dup_opt(prov->budgets_json, &p->budgets_json) ||
            !dup_opt(prov->created_at, &p->created_at)) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "export plan: out of memory");
            goto done;
        }
    }
    *out = p;
    p = NULL;
done:
    mpq_export_plan_free(p);
    return st;
}

char *export_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
