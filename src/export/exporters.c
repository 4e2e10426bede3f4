/*
 * exporters.c - renders an export plan (mpq_export.h) in the formats deployment tools read.
 * References:
 * - mpq JSON: include/mpq/mpq_config.h (the config part, loadable by mpq_config_load) plus
 *   the keys documented at render_mpq().
 * - llama.cpp: tools/quantize/quantize.cpp (--tensor-type-file: one "regex=type" per line,
 *   matched with std::regex_search against GGUF tensor names; no comment syntax),
 *   src/llama-quant.cpp (overrides apply only when the base type is quantized; then
 *   tensor_type_fallback), common/arg.cpp (-ctk/-ctv cache types, -fa).
 * - compressed-tensors (neuralmagic/vLLM): QuantizationConfig {quant_method, format,
 *   config_groups{targets, weights{num_bits,type,symmetric,strategy,group_size}}, ignore,
 *   kv_cache_scheme}; "re:" targets are regexes on module names; vLLM fuses q/k/v into
 *   qkv_proj and gate/up into gate_up_proj and requires one scheme per fused module.
 * - KVTuner (cmd2001/KVTuner, flexible_quant/flexible_quant/flexible_quantized_cache.py):
 *   FlexibleQuantizedCacheConfig reads per_layer_config_path with yaml.safe_load and
 *   FlexibleQuantizedCache.update indexes per_layer_config[layer_idx]['nbits_key'] /
 *   ['nbits_value'] with the integer layer index, for every layer 0..L-1: a mapping with plain
 *   integer keys and integer values (as its config/..._per_layer.yaml). HAWQ: {module: bits}.
 */
#include "mpq/mpq_export.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"

static const char *const format_names[] = {"mpq",         "llamacpp",  "compressed-tensors", "kvtuner",
                                           "kvtuner-yaml", "hawq",     "imatrix",            "imatrix-dat",
                                           "sglang-kv",   "trtllm-kv", "vllm-kv",            "llamacpp-kv",
                                           "gptqmodel",   "autoround", "modelopt"};

mpq_status mpq_export_format_parse(const char *name, mpq_export_format *out, mpq_err *err) {
    for (size_t i = 0; name && i < sizeof format_names / sizeof format_names[0]; i++)
        if (strcmp(name, format_names[i]) == 0) {
            *out = (mpq_export_format)i;
            return MPQ_OK;
        }
    if (name && strcmp(name, "llama.cpp") == 0) {
        *out = MPQ_EXPORT_LLAMACPP;
        return MPQ_OK;
    }
    return mpq_err_set(err, MPQ_ERR_INVALID,
                       "unknown export format '%s' (mpq, llamacpp, compressed-tensors, kvtuner, kvtuner-yaml, hawq, "
                       "imatrix, imatrix-dat, sglang-kv, trtllm-kv, vllm-kv, llamacpp-kv, gptqmodel, autoround, "
                       "modelopt)",
                       name ? name : "(null)");
}

const char *mpq_export_format_name(mpq_export_format f) {
    return (unsigned)f < sizeof format_names / sizeof format_names[0] ? format_names[f] : "?";
}

mpq_export_opts mpq_export_opts_default(void) {
    mpq_export_opts o = {0};
    o.embedding_type = "f16";
    o.model_gguf = "model-f32.gguf";
    o.output_gguf = "model-mpq.gguf";
    o.tensor_type_file = "tensor-types.txt";
    return o;
}

/* llama.cpp cache types (common/arg.cpp kv_cache_types): f32 f16 bf16 q8_0 q4_0 q4_1 iq4_nl
 * q5_0 q5_1. Rule: the cheapest with at least `bits` element bits and an asymmetric grid
 * (min/max, as mpq's KV quantizer) - q4_1 for 2..4, q5_1 for 5, q8_0 (the only 8-bit type,
 * symmetric) for 6..8, f16 above. */
const char *mpq_export_llama_kv_type(int bits) {
    if (bits >= 16) return "f16";
    if (bits > 5) return "q8_0";
    if (bits == 5) return "q5_1";
    return "q4_1";
}

static bool is_keep(const mpq_candidate *c) { return c->type == MPQ_QTYPE_F16 || c->type == MPQ_QTYPE_F32; }

/* ---- mpq JSON --------------------------------------------------------------------------- */

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }
static cJSON *str_or_null(const char *s) { return s ? cJSON_CreateString(s) : cJSON_CreateNull(); }

static void put(cJSON *obj, const char *key, cJSON *item) {
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    cJSON_AddItemToObject(obj, key, item);
}

/* Keys added to the config JSON (mpq_config_load ignores and keeps them):
 *   mpq_export_version  MPQ_EXPORT_VERSION
 *   model        fingerprint: file (base name), sha256, arch, format, dtype, dims, n_params,
 *                tensors [{name, gguf, hf, rows, cols}]
 *   layers       [{name, candidate, bits, group_size, symmetric, bits_per_weight, bytes}]
 *   kv_layers    [{block, pair, k_bits, v_bits}]
 *   scheme       {group_sizes [...], symmetric [...], kv {mode, group_size, residual}}
 *   budgets      the solution's budgets JSON (null if none)
 *   provenance   {job, job_id, solution, solution_id, solver, status, metric_expr, objective,
 *                created_at, mpq_version} (merged into an existing "provenance" object)
 *   totals       mpq_config_stats fields */
static mpq_status render_mpq(const mpq_export_plan *p, char **text, char **notes, mpq_err *err) {
    mpq_status st = MPQ_OK;
    cJSON *root = cJSON_Parse(p->config_json);
    if (!root) return mpq_err_set(err, MPQ_ERR_NOMEM, "export mpq: cannot parse the config JSON");
    const mpq_model_config *mc = &p->model;
    static const char *const arch[] = {"llama", "mistral", "qwen2"};
    static const char *const fmt[] = {"llama2c-legacy", "llama2c-v1", "hf"};
    put(root, "mpq_export_version", cJSON_CreateNumber(MPQ_EXPORT_VERSION));

    cJSON *m = cJSON_CreateObject();
    put(root, "model", m);
    cJSON_AddStringToObject(m, "file", p->model_file);
    cJSON_AddItemToObject(m, "sha256", p->model_sha256[0] ? cJSON_CreateString(p->model_sha256) : cJSON_CreateNull());
    cJSON_AddStringToObject(m, "arch", (unsigned)mc->arch < 3 ? arch[mc->arch] : "?");
    cJSON_AddStringToObject(m, "format", (unsigned)mc->format < 3 ? fmt[mc->format] : "?");
    cJSON_AddStringToObject(m, "dtype", mc->source_dtype);
    cJSON_AddNumberToObject(m, "dim", mc->dim);
    cJSON_AddNumberToObject(m, "hidden_dim", mc->hidden_dim);
    cJSON_AddNumberToObject(m, "n_layers", mc->n_layers);
    cJSON_AddNumberToObject(m, "n_heads", mc->n_heads);
    cJSON_AddNumberToObject(m, "n_kv_heads", mc->n_kv_heads);
    cJSON_AddNumberToObject(m, "vocab_size", mc->vocab_size);
    cJSON_AddNumberToObject(m, "seq_len", mc->seq_len);
    cJSON_AddNumberToObject(m, "n_params", (double)p->model_params);
    cJSON *tensors = cJSON_AddArrayToObject(m, "tensors");

    cJSON *layers = cJSON_CreateArray();
    put(root, "layers", layers);
    int gs[64], n_gs = 0;
    bool sym_seen[2] = {false, false};
    for (int i = 0; i < p->n_layers; i++) {
        const mpq_export_layer *L = &p->layers[i];
        cJSON *t = cJSON_CreateObject();
        cJSON_AddItemToArray(tensors, t);
        cJSON_AddStringToObject(t, "name", L->name);
        cJSON_AddStringToObject(t, "gguf", L->gguf_name);
        cJSON_AddStringToObject(t, "hf", L->hf_name);
        cJSON_AddNumberToObject(t, "rows", (double)L->rows);
        cJSON_AddNumberToObject(t, "cols", (double)L->cols);
        cJSON *l = cJSON_CreateObject();
        cJSON_AddItemToArray(layers, l);
        cJSON_AddStringToObject(l, "name", L->name);
        cJSON_AddStringToObject(l, "candidate", L->cand.name);
        cJSON_AddNumberToObject(l, "bits", L->cand.bits);
        cJSON_AddNumberToObject(l, "group_size", L->cand.group_size);
        cJSON_AddBoolToObject(l, "symmetric", L->cand.symmetric);
        cJSON_AddNumberToObject(l, "bits_per_weight", L->bits);
        cJSON_AddNumberToObject(l, "bytes", (double)L->bytes);
        if (!is_keep(&L->cand)) {
            bool found = false;
            for (int k = 0; k < n_gs; k++) found |= gs[k] == L->cand.group_size;
            if (!found && n_gs < 64) gs[n_gs++] = L->cand.group_size;
            sym_seen[L->cand.symmetric ? 1 : 0] = true;
        }
    }
    cJSON *kvl = cJSON_CreateArray();
    put(root, "kv_layers", kvl);
    for (int b = 0; b < p->n_blocks; b++) {
        char nm[16];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(kvl, o);
        cJSON_AddNumberToObject(o, "block", b);
        cJSON_AddStringToObject(o, "pair", mpq_kv_pair_name(p->kv[b], nm, sizeof nm));
        /* bits per element of the codes: whole, or a fractional SAQ rate */
        cJSON_AddNumberToObject(o, "k_bits", mpq_kv_rate_q(p->kv[b].k_bits) / 1024.0);
        cJSON_AddNumberToObject(o, "v_bits", mpq_kv_rate_q(p->kv[b].v_bits) / 1024.0);
    }
    for (int a = 0; a < n_gs; a++) /* sort group sizes ascending (0 = per channel first) */
        for (int c = a + 1; c < n_gs; c++)
            if (gs[c] < gs[a]) {
                int t = gs[a];
                gs[a] = gs[c];
                gs[c] = t;
            }
    cJSON *sch = cJSON_CreateObject();
    put(root, "scheme", sch);
    cJSON_AddItemToObject(sch, "group_sizes", cJSON_CreateIntArray(gs, n_gs));
    cJSON *sy = cJSON_AddArrayToObject(sch, "symmetric");
    if (sym_seen[0]) cJSON_AddItemToArray(sy, cJSON_CreateFalse());
    if (sym_seen[1]) cJSON_AddItemToArray(sy, cJSON_CreateTrue());
    cJSON *kvs = cJSON_AddObjectToObject(sch, "kv");
    cJSON_AddStringToObject(kvs, "mode", mpq_kv_mode_name(p->kv_scheme.mode));
    cJSON_AddNumberToObject(kvs, "group_size", p->kv_scheme.group_size);
    cJSON_AddNumberToObject(kvs, "residual", p->kv_scheme.residual);

    cJSON *bud = p->budgets_json ? cJSON_Parse(p->budgets_json) : NULL;
    put(root, "budgets", bud ? bud : cJSON_CreateNull());

    /* an existing provenance object (e.g. from the solver) is kept, merged, and moved here */
    cJSON *prov = cJSON_DetachItemFromObjectCaseSensitive(root, "provenance");
    if (!cJSON_IsObject(prov)) {
        cJSON_Delete(prov);
        prov = cJSON_CreateObject();
    }
    cJSON_AddItemToObject(root, "provenance", prov);
    put(prov, "job", str_or_null(p->job_name));
    put(prov, "job_id", p->job_id > 0 ? cJSON_CreateNumber((double)p->job_id) : cJSON_CreateNull());
    put(prov, "solution", str_or_null(p->solution_name));
    put(prov, "solution_id", p->solution_id > 0 ? cJSON_CreateNumber((double)p->solution_id) : cJSON_CreateNull());
    put(prov, "solver", str_or_null(p->solver));
    put(prov, "status", str_or_null(p->status));
    put(prov, "metric_expr", str_or_null(p->metric_expr));
    put(prov, "objective", num_or_null(p->objective));
    put(prov, "created_at", str_or_null(p->created_at));
    put(prov, "mpq_version", cJSON_CreateString(mpq_version()));

    cJSON *tot = cJSON_CreateObject();
    put(root, "totals", tot);
    cJSON_AddNumberToObject(tot, "linear_params", (double)p->stats.linear_params);
    cJSON_AddNumberToObject(tot, "avg_weight_bits", p->stats.avg_weight_bits);
    cJSON_AddNumberToObject(tot, "linear_bytes", (double)p->stats.linear_bytes);
    cJSON_AddNumberToObject(tot, "other_params", (double)p->stats.other_params);
    cJSON_AddNumberToObject(tot, "total_weight_bytes", (double)p->stats.total_weight_bytes);
    cJSON_AddNumberToObject(tot, "avg_kv_bits", p->stats.avg_kv_bits);
    cJSON_AddNumberToObject(tot, "kv_bytes_per_token", p->stats.kv_bytes_per_token);

    char *s = cJSON_Print(root);
    if (!s) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "export mpq: out of memory");
        goto done;
    }
    sbuf b = {0};
    sb_puts(&b, s);
    sb_puts(&b, "\n");
    cJSON_free(s);
    *text = sb_take(&b);
    if (!*text) st = mpq_err_set(err, MPQ_ERR_NOMEM, "export mpq: out of memory");
    if (notes) *notes = NULL;
done:
    cJSON_Delete(root);
    return st;
}

/* ---- llama.cpp ---------------------------------------------------------------------------- */

void export_regex_escape(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (strchr(".^$|()[]{}*+?\\", *s)) sb_puts(b, "\\");
        char c[2] = {*s, 0};
        sb_puts(b, c);
    }
}

/* llama-quantize's positional ftype for a resolved tensor type (NULL: not a file type). */
static const char *ftype_for(const char *t) {
    static const char *const map[][2] = {
        {"q4_0", "Q4_0"}, {"q4_1", "Q4_1"}, {"q5_0", "Q5_0"},     {"q5_1", "Q5_1"},       {"q8_0", "Q8_0"},
        {"q2_k", "Q2_K"}, {"q3_k", "Q3_K_M"}, {"q4_k", "Q4_K_M"}, {"q5_k", "Q5_K_M"},     {"q6_k", "Q6_K"},
        {"iq3_xxs", "IQ3_XXS"}, {"iq4_nl", "IQ4_NL"}, {"iq4_xs", "IQ4_XS"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], t) == 0) return map[i][1];
    return NULL;
}

static mpq_status render_llamacpp(const mpq_export_plan *p, const mpq_export_opts *o, char **text, char **notes,
                                  mpq_err *err) {
    mpq_status st = MPQ_OK;
    sbuf f = {0}, n = {0};
    mpq_ggml_choice *ch = mpq_calloc((size_t)p->n_layers, sizeof *ch);
    if (!ch) return mpq_err_set(err, MPQ_ERR_NOMEM, "export llamacpp: out of memory");
    const mpq_ggml_type_info *emb = mpq_ggml_type_find(o->embedding_type ? o->embedding_type : "f16");
    if (!emb) {
        st = mpq_err_set(err, MPQ_ERR_INVALID, "export llamacpp: unknown embedding type '%s'", o->embedding_type);
        goto done;
    }
    if (p->model.dim % emb->block != 0) {
        st = mpq_err_set(err, MPQ_ERR_INVALID,
                         "export llamacpp: embedding type %s needs rows divisible by %d (token_embd has %d)",
                         emb->name, emb->block, p->model.dim);
        goto done;
    }
    int64_t lin = 0, n_fb = 0;
    for (int i = 0; i < p->n_layers; i++) {
        const mpq_export_layer *L = &p->layers[i];
        if ((st = mpq_export_ggml_choose(&L->cand, L->rows, L->cols, o->imatrix_path != NULL, o->skip_imatrix_types,
                                         &ch[i], err)) != MPQ_OK) {
            mpq_err_prefix(err, "export llamacpp: %s", L->name);
            goto done;
        }
        sb_puts(&f, "^");
        export_regex_escape(&f, L->gguf_name);
        sb_printf(&f, "$=%s\n", ch[i].resolved->name);
        lin += ch[i].bytes;
        n_fb += ch[i].fallback;
    }
    /* base type: the most common resolved quantized type by weights (overrides only apply
     * when the base type is quantized, so never f16/f32; default Q8_0) */
    const char *base = "Q8_0";
    int64_t best = 0;
    for (int i = 0; i < p->n_layers; i++) {
        const char *ft = ftype_for(ch[i].resolved->name);
        if (!ft) continue;
        int64_t w = 0;
        for (int j = 0; j < p->n_layers; j++)
            if (ch[j].resolved == ch[i].resolved) w += p->layers[j].n_params;
        if (w > best) best = w, base = ft;
    }
    int64_t embb = (int64_t)p->model.vocab_size * p->model.dim / emb->block * emb->type_size;
    int64_t outb = p->model.shared_classifier ? 0 : embb;
    int64_t normb = (int64_t)(2 * p->model.n_layers + 1) * p->model.dim * 4;
    if (p->model.qkv_bias) normb += (int64_t)p->model.n_layers * (p->model.dim + 2 * p->kv_dim) * 4;

    sb_printf(&n, "llama-quantize command (the tensor-type file lists every linear layer with its final type):\n");
    sb_printf(&n, "  llama-quantize --tensor-type-file %s --token-embedding-type %s --output-tensor-type %s",
              o->tensor_type_file ? o->tensor_type_file : "tensor-types.txt", emb->name, emb->name);
    if (o->imatrix_path) sb_printf(&n, " --imatrix %s", o->imatrix_path);
    sb_printf(&n, " %s %s %s\n", o->model_gguf ? o->model_gguf : "model-f32.gguf",
              o->output_gguf ? o->output_gguf : "model-mpq.gguf", base);
    /* KV: one global pair, the most precise any block needs */
    int kmax = 0, vmax = 0, kmin = 99, vmin = 99;
    for (int b = 0; b < p->n_blocks; b++) {
        if (p->kv[b].k_bits > kmax) kmax = p->kv[b].k_bits;
        if (p->kv[b].v_bits > vmax) vmax = p->kv[b].v_bits;
        if (p->kv[b].k_bits < kmin) kmin = p->kv[b].k_bits;
        if (p->kv[b].v_bits < vmin) vmin = p->kv[b].v_bits;
    }
    const char *ctk = mpq_export_llama_kv_type(kmax), *ctv = mpq_export_llama_kv_type(vmax);
    sb_printf(&n, "KV cache flags (llama-cli / llama-server):\n  -ctk %s -ctv %s%s\n", ctk, ctv,
              strcmp(ctv, "f16") != 0 ? " -fa on" : "");
    if (kmin != kmax || vmin != vmax)
        sb_printf(&n, "  note: the per-layer KV plan (K %d..%d bits, V %d..%d bits) was collapsed to one global "
                      "pair k%dv%d: llama.cpp has one cache type for all layers\n", kmin, kmax, vmin, vmax, kmax, vmax);
    /* rule (mpq_export_llama_kv_type): the cheapest llama.cpp cache type with at least the
     * plan's bits and an asymmetric min/max grid like mpq's KV quantizer */
    for (int h = 0; h < 2; h++) {
        int bits = h ? vmax : kmax;
        const char *t = h ? ctv : ctk;
        if (bits < 4)
            sb_printf(&n, "  note: %s %d bits -> %s: llama.cpp's smallest cache types are 4-bit (q4_0, q4_1, "
                          "iq4_nl); rounded up to the asymmetric one, like mpq's min/max grid\n",
                      h ? "V" : "K", bits, t);
        else if (bits == 4)
            sb_printf(&n, "  note: %s 4 bits -> q4_1 (4-bit asymmetric, block 32, like mpq's min/max grid; "
                          "q4_0 and iq4_nl are symmetric)\n", h ? "V" : "K");
    }
    if (strcmp(ctv, "f16") != 0) sb_printf(&n, "  note: a quantized V cache needs flash attention (-fa on)\n");
    if (kmax < 16 || vmax < 16)
        sb_printf(&n, "  note: llama.cpp quantizes K and V per token in blocks of 32; mpq measured %s, group %d\n",
                  mpq_kv_mode_name(p->kv_scheme.mode), p->kv_scheme.group_size);
    sb_printf(&n, "per layer (candidate bits/weight -> requested type -> written type, bytes):\n");
    for (int i = 0; i < p->n_layers; i++) {
        const mpq_export_layer *L = &p->layers[i];
        sb_printf(&n, "  %-24s %-10s %7.4f -> %-7s", L->gguf_name, L->cand.name, ch[i].candidate_bits,
                  ch[i].requested->name);
        if (ch[i].fallback)
            sb_printf(&n, " -> %-6s (cols %lld %% %d != 0%s)", ch[i].resolved->name, (long long)L->cols,
                      ch[i].requested->block, ch[i].no_llama_fallback ? "; llama.cpp has no fallback: f16" : "");
        sb_printf(&n, " %lld bytes\n", (long long)ch[i].bytes);
    }
    sb_printf(&n, "llama.cpp weight bytes: %lld (linear %lld, %d of %d layers fell back; token_embd %s %lld; "
                  "output %lld; norms/biases f32 %lld); mpq linear bytes %lld\n",
              (long long)(lin + embb + outb + normb), (long long)lin, (int)n_fb, p->n_layers, emb->name,
              (long long)embb, (long long)outb, (long long)normb, (long long)p->stats.linear_bytes);
    *text = sb_take(&f);
    if (notes) *notes = sb_take(&n);
    if (!*text || (notes && !*notes)) {
        free(*text);
        *text = NULL;
        if (notes) {
            free(*notes);
            *notes = NULL;
        }
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "export llamacpp: out of memory");
    }
done:
    sb_free(&f);
    sb_free(&n);
    free(ch);
    return st;
}

/* ---- compressed-tensors ------------------------------------------------------------------- */

typedef struct ct_scheme {
    bool keep;        /* not quantized: goes to ignore */
    int num_bits;
    const char *type; /* "int" | "float" */
    bool symmetric;
    int group_size;   /* 0 = channel */
} ct_scheme;

static mpq_status ct_of(const mpq_export_layer *L, ct_scheme *s, mpq_err *err) {
    memset(s, 0, sizeof *s);
    const mpq_candidate *c = &L->cand;
    switch (c->type) {
    case MPQ_QTYPE_F16:
    case MPQ_QTYPE_F32: s->keep = true; return MPQ_OK;
    case MPQ_QTYPE_INT: s->type = "int"; break;
    case MPQ_QTYPE_FP8_E4M3: s->type = "float"; break;
    default:
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "export compressed-tensors: %s: candidate %s has no compressed-tensors scheme "
                           "(int and fp8e4m3 only)", L->name, c->name);
    }
    s->num_bits = c->bits;
    s->symmetric = c->type == MPQ_QTYPE_INT ? c->symmetric : true;
    s->group_size = c->group_size;
    return MPQ_OK;
}

static bool ct_eq(const ct_scheme *a, const ct_scheme *b) {
    if (a->keep || b->keep) return a->keep == b->keep;
    return a->num_bits == b->num_bits && strcmp(a->type, b->type) == 0 && a->symmetric == b->symmetric &&
           a->group_size == b->group_size;
}

static const char *ct_format(const ct_scheme *s) {
    return strcmp(s->type, "float") == 0 ? "float-quantized" : "pack-quantized";
}

static mpq_status render_ct(const mpq_export_plan *p, const mpq_export_opts *o, char **text, char **notes,
                            mpq_err *err) {
    mpq_status st = MPQ_OK;
    cJSON *root = NULL;
    sbuf n = {0};
    ct_scheme *sc = mpq_calloc((size_t)p->n_layers, sizeof *sc);
    int *grp = mpq_calloc((size_t)p->n_layers, sizeof *grp);
    if (!sc || !grp) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "export compressed-tensors: out of memory");
        goto done;
    }
    for (int i = 0; i < p->n_layers; i++)
        if ((st = ct_of(&p->layers[i], &sc[i], err)) != MPQ_OK) goto done;
    /* what vLLM will not load: its weight-only int path (CompressedTensorsWNA16) has 4 and 8 bits
     * only (WNA16_SUPPORTED_BITS), sizes group scales as in_features // group_size, and its
     * fp8 weight-only path (CompressedTensorsW8A16Fp8) takes channel or tensor strategies */
    for (int i = 0; i < p->n_layers; i++) {
        const mpq_export_layer *L = &p->layers[i];
        const ct_scheme *c = &sc[i];
        char why[256] = "";
        if (c->keep) continue;
        if (strcmp(c->type, "int") == 0 && c->num_bits != 4 && c->num_bits != 8)
            snprintf(why, sizeof why, "num_bits %d: vLLM's WNA16 scheme loads only 4 and 8 bits", c->num_bits);
        else if (c->group_size > 0 && L->cols % c->group_size != 0)
            snprintf(why, sizeof why,
                     "group_size %d does not divide its %lld input features: vLLM sizes the group scales as "
                     "%lld // %d = %lld and the weight will not load", c->group_size, (long long)L->cols,
                     (long long)L->cols, c->group_size, (long long)(L->cols / c->group_size));
        else if (strcmp(c->type, "float") == 0 && c->group_size > 0)
            snprintf(why, sizeof why, "fp8 weights with group_size %d: vLLM's fp8 weight-only scheme takes the "
                     "channel or tensor strategy", c->group_size);
        if (!why[0]) continue;
        if (o->strict) {
            st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "export compressed-tensors: %s (%s, %s): %s (--strict)",
                             L->name, L->hf_name, L->cand.name, why);
            goto done;
        }
        sb_printf(&n, "warning: vLLM will refuse %s (%s): %s\n", L->hf_name, L->cand.name, why);
    }
    /* fused shards: q/k/v -> qkv_proj, gate/up -> gate_up_proj */
    for (int i = 0; i < p->n_layers; i++) {
        const mpq_export_layer *A = &p->layers[i];
        for (int j = i + 1; j < p->n_layers; j++) {
            const mpq_export_layer *B = &p->layers[j];
            if (A->block != B->block) continue;
            bool qkv = A->kind <= MPQ_LAYER_ATTN_V && B->kind <= MPQ_LAYER_ATTN_V;
            bool gu = (A->kind == MPQ_LAYER_FFN_GATE || A->kind == MPQ_LAYER_FFN_UP) &&
                      (B->kind == MPQ_LAYER_FFN_GATE || B->kind == MPQ_LAYER_FFN_UP);
            if ((qkv || gu) && !ct_eq(&sc[i], &sc[j])) {
                st = mpq_err_set(err, MPQ_ERR_INVALID,
                                 "export compressed-tensors: fused shards disagree: %s (%s) is %s but %s (%s) is %s; "
                                 "vLLM loads %s as one %s and refuses different schemes (tie them in the solver)",
                                 A->name, A->hf_name, A->cand.name, B->name, B->hf_name, B->cand.name,
                                 qkv ? "q/k/v" : "gate/up", qkv ? "qkv_proj" : "gate_up_proj");
                goto done;
            }
        }
    }
    /* groups by identical scheme, in order of first appearance */
    int n_groups = 0;
    for (int i = 0; i < p->n_layers; i++) {
        grp[i] = -1;
        if (sc[i].keep) continue;
        for (int j = 0; j < i; j++)
            if (grp[j] >= 0 && ct_eq(&sc[i], &sc[j])) {
                grp[i] = grp[j];
                break;
            }
        if (grp[i] < 0) grp[i] = n_groups++;
    }
    bool mixed = false;
    const char *fmt0 = NULL;
    for (int i = 0; i < p->n_layers; i++) {
        if (grp[i] < 0) continue;
        if (!fmt0) fmt0 = ct_format(&sc[i]);
        else if (strcmp(fmt0, ct_format(&sc[i])) != 0) mixed = true;
    }
    root = cJSON_CreateObject();
    cJSON *q = cJSON_AddObjectToObject(root, "quantization_config");
    cJSON_AddStringToObject(q, "quant_method", "compressed-tensors");
    cJSON_AddStringToObject(q, "format", mixed ? "mixed-precision" : fmt0 ? fmt0 : "dense");
    cJSON_AddStringToObject(q, "quantization_status", "compressed");
    cJSON *groups = cJSON_AddObjectToObject(q, "config_groups");
    for (int g = 0; g < n_groups; g++) {
        char gname[32];
        snprintf(gname, sizeof gname, "group_%d", g);
        cJSON *go = cJSON_AddObjectToObject(groups, gname);
        cJSON *targets = cJSON_AddArrayToObject(go, "targets");
        const ct_scheme *s = NULL;
        for (int i = 0; i < p->n_layers; i++) {
            if (grp[i] != g) continue;
            s = &sc[i];
            sbuf t = {0};
            sb_puts(&t, "re:^");
            export_regex_escape(&t, p->layers[i].hf_name);
            sb_puts(&t, "$");
            char *ts = sb_take(&t);
            if (!ts) {
                st = mpq_err_set(err, MPQ_ERR_NOMEM, "export compressed-tensors: out of memory");
                goto done;
            }
            cJSON_AddItemToArray(targets, cJSON_CreateString(ts));
            free(ts);
        }
        cJSON *w = cJSON_AddObjectToObject(go, "weights");
        cJSON_AddNumberToObject(w, "num_bits", s->num_bits);
        cJSON_AddStringToObject(w, "type", s->type);
        cJSON_AddBoolToObject(w, "symmetric", s->symmetric);
        cJSON_AddStringToObject(w, "strategy", s->group_size > 0 ? "group" : "channel");
        if (s->group_size > 0) cJSON_AddNumberToObject(w, "group_size", s->group_size);
        else cJSON_AddNullToObject(w, "group_size");
        cJSON_AddBoolToObject(w, "dynamic", false);
        cJSON_AddStringToObject(w, "observer", "minmax");
        cJSON_AddNullToObject(go, "input_activations");
        cJSON_AddNullToObject(go, "output_activations");
        if (mixed) cJSON_AddStringToObject(go, "format", ct_format(s));
    }
    cJSON *ign = cJSON_AddArrayToObject(q, "ignore");
    for (int i = 0; i < p->n_layers; i++)
        if (sc[i].keep) cJSON_AddItemToArray(ign, cJSON_CreateString(p->layers[i].hf_name));
    cJSON_AddItemToArray(ign, cJSON_CreateString("lm_head"));
    int kvmax = 0, kvmin = 99;
    for (int b = 0; b < p->n_blocks; b++) {
        int hi = p->kv[b].k_bits > p->kv[b].v_bits ? p->kv[b].k_bits : p->kv[b].v_bits;
        int lo = p->kv[b].k_bits < p->kv[b].v_bits ? p->kv[b].k_bits : p->kv[b].v_bits;
        if (hi > kvmax) kvmax = hi;
        if (lo < kvmin) kvmin = lo;
    }
    if (kvmax < 16) {
        cJSON *kv = cJSON_AddObjectToObject(q, "kv_cache_scheme");
        cJSON_AddNumberToObject(kv, "num_bits", kvmax);
        cJSON_AddStringToObject(kv, "type", "int");
        cJSON_AddBoolToObject(kv, "symmetric", false);
        cJSON_AddStringToObject(kv, "strategy", "group");
        cJSON_AddNumberToObject(kv, "group_size", p->kv_scheme.group_size);
        cJSON_AddBoolToObject(kv, "dynamic", true);
        if (kvmin != kvmax)
            sb_printf(&n, "note: the per-layer KV plan (%d..%d bits) was collapsed to one kv_cache_scheme of %d bits\n",
                      kvmin, kvmax, kvmax);
        sb_printf(&n, "note: vLLM implements only 8-bit float KV caches; this kv_cache_scheme (int, %s group %d) "
                      "documents the plan for runtimes that read it\n", mpq_kv_mode_name(p->kv_scheme.mode),
                  p->kv_scheme.group_size);
    } else {
        cJSON_AddNullToObject(q, "kv_cache_scheme");
        if (kvmin < 16)
            sb_printf(&n, "note: only K or only V is quantized in some blocks; compressed-tensors has one "
                          "kv_cache_scheme for both, so none was written\n");
    }
    sb_printf(&n, "note: merge \"quantization_config\" into the model's config.json; %d config group(s)%s\n", n_groups,
              mixed ? " with per-group formats (mixed-precision)" : "");
    sb_printf(&n, "note: mpq's asymmetric int grids use an fp16 zero offset; compressed-tensors stores an integer "
                  "zero point (requantize with the exported scheme)\n");
    char *s = cJSON_Print(root);
    if (!s) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "export compressed-tensors: out of memory");
        goto done;
    }
    sbuf b = {0};
    sb_puts(&b, s);
    sb_puts(&b, "\n");
    cJSON_free(s);
    *text = sb_take(&b);
    if (notes) *notes = sb_take(&n);
    if (!*text) st = mpq_err_set(err, MPQ_ERR_NOMEM, "export compressed-tensors: out of memory");
done:
    sb_free(&n);
    cJSON_Delete(root);
    free(sc);
    free(grp);
    return st;
}

/* ---- KVTuner and HAWQ ------------------------------------------------------------------- */

static mpq_status render_kvtuner(const mpq_export_plan *p, bool yaml, char **text, char **notes, mpq_err *err) {
    sbuf b = {0}, n = {0};
    if (yaml) {
        sb_printf(&b, "# KVTuner-style per-layer KV precision (mpq export; scheme %s, group %d, residual %d)\n",
                  mpq_kv_mode_name(p->kv_scheme.mode), p->kv_scheme.group_size, p->kv_scheme.residual);
        for (int i = 0; i < p->n_blocks; i++)
            sb_printf(&b, "%d:\n  nbits_key: %d\n  nbits_value: %d\n", i, p->kv[i].k_bits, p->kv[i].v_bits);
    } else {
        sb_puts(&b, "{");
        for (int i = 0; i < p->n_blocks; i++)
            sb_printf(&b, "%s\n  \"%d\": {\"nbits_key\": %d, \"nbits_value\": %d}", i ? "," : "", i, p->kv[i].k_bits,
                      p->kv[i].v_bits);
        sb_puts(&b, "\n}\n");
    }
    sb_printf(&n, "note: 16 bits = not quantized in mpq (KVTuner has no such value: it passes 16 to its quantizer); "
                  "mpq measured the pairs with the %s scheme, group %d, residual %d\n",
              mpq_kv_mode_name(p->kv_scheme.mode), p->kv_scheme.group_size, p->kv_scheme.residual);
    /* KVTuner (flexible_quant/flexible_quantized_cache.py) reads per_layer_config_path with
     * yaml.safe_load and indexes the result with the integer layer index: only the YAML form
     * (plain integer keys) loads as it is; JSON keys are strings */
    if (!yaml)
        sb_puts(&n, "note: KVTuner's per_layer_config_path takes the YAML form (--format kvtuner-yaml, integer keys); "
                    "this JSON has string keys: pass {int(k): v for k, v in json.load(f).items()} as per_layer_config\n");
    *text = sb_take(&b);
    if (notes) *notes = sb_take(&n);
    sb_free(&n);
    if (!*text) return mpq_err_set(err, MPQ_ERR_NOMEM, "export kvtuner: out of memory");
    return MPQ_OK;
}

static mpq_status render_hawq(const mpq_export_plan *p, char **text, char **notes, mpq_err *err) {
    sbuf b = {0}, n = {0};
    sb_puts(&b, "{");
    for (int i = 0; i < p->n_layers; i++)
        sb_printf(&b, "%s\n  \"%s\": %d", i ? "," : "", p->layers[i].hf_name, p->layers[i].cand.bits);
    sb_puts(&b, "\n}\n");
    sb_printf(&n, "note: bits are element bits (16/32 = kept); exact bits per weight with scale overhead are in "
                  "the mpq export (average %.4f)\n", p->stats.avg_weight_bits);
    *text = sb_take(&b);
    if (notes) *notes = sb_take(&n);
    sb_free(&n);
    if (!*text) return mpq_err_set(err, MPQ_ERR_NOMEM, "export hawq: out of memory");
    return MPQ_OK;
}

/* Weight formats of other tools cannot express the Q-Palette candidates (rotated weights,
 * codebooks, trellis codes) nor the SAQ candidates (per-segment widths over a stored basis or
 * permutation): MPQ_ERR_UNSUPPORTED naming the first such layer. */
static mpq_status refuse_palette(const mpq_export_plan *p, mpq_export_format f, mpq_err *err) {
    for (int i = 0; i < p->n_layers; i++)
        if (mpq_candidate_is_saq(&p->layers[i].cand))
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "export %s: layer %s: candidate %s is a SAQ quantizer (segments with their own bit "
                               "widths over a stored basis or permutation of the input) that this format cannot "
                               "express",
                               mpq_export_format_name(f), p->layers[i].name, p->layers[i].cand.name);
        else if (mpq_candidate_is_palette(&p->layers[i].cand))
            return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                               "export %s: layer %s: candidate %s is a Q-Palette quantizer (rotated weights with "
                               "codebook or trellis codes) that this format cannot express; export --format mpq",
                               mpq_export_format_name(f), p->layers[i].name, p->layers[i].cand.name);
    return MPQ_OK;
}

mpq_status mpq_export_render(const mpq_export_plan *plan, mpq_export_format f, const mpq_export_opts *opts,
                             char **text, char **notes, mpq_err *err) {
    if (!plan || !text) return mpq_err_set(err, MPQ_ERR_INVALID, "export: plan or text is NULL");
    if (f == MPQ_EXPORT_LLAMACPP || f == MPQ_EXPORT_COMPRESSED_TENSORS || f == MPQ_EXPORT_HAWQ ||
        f == MPQ_EXPORT_GPTQMODEL || f == MPQ_EXPORT_AUTOROUND || f == MPQ_EXPORT_MODELOPT) {
        mpq_status st = refuse_palette(plan, f, err);
        if (st != MPQ_OK) return st;
    }
    if (plan->kv_per_head &&
        (f == MPQ_EXPORT_KVTUNER || f == MPQ_EXPORT_KVTUNER_YAML || f == MPQ_EXPORT_KV_SGLANG ||
         f == MPQ_EXPORT_KV_TRTLLM || f == MPQ_EXPORT_KV_VLLM || f == MPQ_EXPORT_KV_LLAMACPP))
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "export %s: the config has per-KV-head pairs, which this per-layer KV format cannot carry "
                           "(KVTuner's per-head YAML: mpq kv --per-head --export-kvtuner; or --format mpq)",
                           mpq_export_format_name(f));
    if (f != MPQ_EXPORT_MPQ && plan->kv_scheme.mode == MPQ_KV_SAQ) {
        /* SAQ KV codes live in a calibrated per-head PCA basis (mpq_kv_saq): no other format's
         * integer K/V bit widths can express them */
        char nm[64];
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "export %s: the KV cache uses kv scheme saq (pair %s of blk.0 and others coded in a "
                           "calibrated PCA basis), which this format cannot express; export --format mpq",
                           mpq_export_format_name(f), mpq_kv_pair_name(plan->kv[0], nm, sizeof nm));
    }
    *text = NULL;
    if (notes) *notes = NULL;
    mpq_export_opts def = mpq_export_opts_default();
    if (!opts) opts = &def;
    switch (f) {
    case MPQ_EXPORT_MPQ: return render_mpq(plan, text, notes, err);
    case MPQ_EXPORT_LLAMACPP: return render_llamacpp(plan, opts, text, notes, err);
    case MPQ_EXPORT_COMPRESSED_TENSORS: return render_ct(plan, opts, text, notes, err);
    case MPQ_EXPORT_KVTUNER: return render_kvtuner(plan, false, text, notes, err);
    case MPQ_EXPORT_KVTUNER_YAML: return render_kvtuner(plan, true, text, notes, err);
    case MPQ_EXPORT_HAWQ: return render_hawq(plan, text, notes, err);
    case MPQ_EXPORT_IMATRIX:
    case MPQ_EXPORT_IMATRIX_DAT:
        return mpq_err_set(err, MPQ_ERR_INVALID, "export %s: an importance matrix is computed from calibration "
                           "(mpq_imatrix_from_job, mpq_imatrix_serialize), not rendered from a plan",
                           mpq_export_format_name(f));
    case MPQ_EXPORT_KV_SGLANG: return export_render_kv_engine(plan, MPQ_KV_ENGINE_SGLANG, opts, text, notes, err);
    case MPQ_EXPORT_KV_TRTLLM: return export_render_kv_engine(plan, MPQ_KV_ENGINE_TRTLLM, opts, text, notes, err);
    case MPQ_EXPORT_KV_VLLM: return export_render_kv_engine(plan, MPQ_KV_ENGINE_VLLM, opts, text, notes, err);
    case MPQ_EXPORT_KV_LLAMACPP: return export_render_kv_engine(plan, MPQ_KV_ENGINE_LLAMACPP, opts, text, notes, err);
    case MPQ_EXPORT_GPTQMODEL:
    case MPQ_EXPORT_AUTOROUND:
    case MPQ_EXPORT_MODELOPT: return export_render_pyquant(plan, f, opts, text, notes, err);
    }
    return mpq_err_set(err, MPQ_ERR_INVALID, "export: unknown format %d", (int)f);
}
