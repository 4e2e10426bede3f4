/*
 * config.c - quantized configurations (per-layer weight candidate, per-block KV pair, KV
 * scheme): the versioned JSON file format of include/mpq/mpq_config.h (read with cJSON),
 * building and editing configs, applying one to a weight copy, and its size statistics.
 * Reference: include/mpq/mpq_config.h (format and contract); mpq_quant.h (candidates, pairs).
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "mpq/mpq_config.h"
#include "util/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_FILE_MAX (64u << 20) /* a config is a few KB; refuse absurd files */

struct mpq_config {
    int n_linear;
    int n_blocks;
    mpq_candidate *layers; /* n_linear */
    mpq_kv_pair *kv;       /* n_blocks */
    mpq_candidate wdefault;
    mpq_kv_pair kvdefault;
    mpq_kv_scheme scheme;
    int n_kv_heads, head_dim; /* of the model (saq bases and rates, per-head pairs) */
    char *saq_path;           /* kv.scheme.bases (mode saq), owned, or NULL */
    mpq_kv_saq *saq;          /* the bases, owned, or NULL */
    cJSON *extras; /* object with the other top-level keys of a parsed file, or NULL */
    /* per-(block, KV head) pairs: kv_heads[b * n_kv_heads + h] is used for block b when
     * kv_has_heads[b] (both NULL until a block gets per-head pairs) */
    mpq_kv_pair *kv_heads;
    bool *kv_has_heads;
};

void mpq_config_free(mpq_config *cfg) {
    if (!cfg) return;
    cJSON_Delete(cfg->extras);
    free(cfg->kv_heads);
    free(cfg->kv_has_heads);
    mpq_kv_saq_free(cfg->saq);
    free(cfg->saq_path);
    free(cfg->kv);
    free(cfg->layers);
    free(cfg);
}

static mpq_status config_new(const mpq_model *model, mpq_config **out, mpq_err *err) {
    *out = NULL;
    if (!model) return mpq_err_set(err, MPQ_ERR_INVALID, "config: model is NULL");
    int nl = mpq_model_n_linear(model);
    int nb = mpq_model_get_config(model)->n_layers;
    if (nl <= 0 || nb <= 0) return mpq_err_set(err, MPQ_ERR_INVALID, "config: model has no layers");
    mpq_config *c = calloc(1, sizeof *c);
    if (!c) return mpq_err_set(err, MPQ_ERR_NOMEM, "config: out of memory");
    c->n_linear = nl;
    c->n_blocks = nb;
    c->n_kv_heads = mpq_model_get_config(model)->n_kv_heads;
    c->head_dim = mpq_model_get_config(model)->head_dim;
    c->layers = mpq_calloc((size_t)nl, sizeof *c->layers);
    c->kv = mpq_calloc((size_t)nb, sizeof *c->kv);
    if (!c->layers || !c->kv) {
        mpq_config_free(c);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "config: out of memory");
    }
    (void)mpq_candidate_parse("f32", &c->wdefault, NULL);
    c->kvdefault.k_bits = 16;
    c->kvdefault.v_bits = 16;
    c->scheme = mpq_kv_scheme_default();
    for (int i = 0; i < nl; i++) c->layers[i] = c->wdefault;
    for (int b = 0; b < nb; b++) c->kv[b] = c->kvdefault;
    *out = c;
    return MPQ_OK;
}

/* ---------------- accessors and setters ---------------- */

int mpq_config_n_linear(const mpq_config *cfg) { return cfg ? cfg->n_linear : 0; }
int mpq_config_n_blocks(const mpq_config *cfg) { return cfg ? cfg->n_blocks : 0; }

const mpq_candidate *mpq_config_layer(const mpq_config *cfg, int i) {
    if (!cfg || i < 0 || i >= cfg->n_linear) return NULL;
    return &cfg->layers[i];
}

mpq_kv_pair mpq_config_kv(const mpq_config *cfg, int block) {
    mpq_kv_pair p16 = {16, 16};
    if (!cfg || block < 0 || block >= cfg->n_blocks) return p16;
    return cfg->kv[block];
}

const mpq_kv_scheme *mpq_config_kv_scheme(const mpq_config *cfg) { return cfg ? &cfg->scheme : NULL; }
const mpq_candidate *mpq_config_weights_default(const mpq_config *cfg) { return cfg ? &cfg->wdefault : NULL; }

mpq_status mpq_config_set_layer_candidate(mpq_config *cfg, int i, const mpq_candidate *c, mpq_err *err) {
    if (!cfg || !c) return mpq_err_set(err, MPQ_ERR_INVALID, "config: NULL argument");
    if (i < 0 || i >= cfg->n_linear)
        return mpq_err_set(err, MPQ_ERR_INVALID, "config: layer index %d out of range (%d linear layers)", i,
                           cfg->n_linear);
    mpq_candidate chk;
    if (mpq_candidate_parse(c->name, &chk, err) != MPQ_OK) return MPQ_ERR_INVALID;
    cfg->layers[i] = chk;
    return MPQ_OK;
}

mpq_status mpq_config_set_layer(mpq_config *cfg, int i, const char *candidate, mpq_err *err) {
    if (!cfg || !candidate) return mpq_err_set(err, MPQ_ERR_INVALID, "config: NULL argument");
    if (i < 0 || i >= cfg->n_linear)
        return mpq_err_set(err, MPQ_ERR_INVALID, "config: layer index %d out of range (%d linear layers)", i,
                           cfg->n_linear);
    mpq_candidate c;
    if (mpq_candidate_parse(candidate, &c, err) != MPQ_OK) return MPQ_ERR_INVALID;
    cfg->layers[i] = c;
    return MPQ_OK;
}

static bool kv_pair_valid(mpq_kv_pair p) {
    char buf[32];
    mpq_kv_pair chk;
    return mpq_kv_pair_parse(mpq_kv_pair_name(p, buf, sizeof buf), &chk, NULL) == MPQ_OK;
}

mpq_status mpq_config_set_kv(mpq_config *cfg, int block, mpq_kv_pair pair, mpq_err *err) {
    if (!cfg) return mpq_err_set(err, MPQ_ERR_INVALID, "config: NULL argument");
    if (block < 0 || block >= cfg->n_blocks)
        return mpq_err_set(err, MPQ_ERR_INVALID, "config: block %d out of range (%d blocks)", block, cfg->n_blocks);
    if (!kv_pair_valid(pair))
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "config: block %d: kv pair k%dv%d: bits must be 2, 3, 4, 8 or 16 (or a fractional SAQ rate)",
                           block, pair.k_bits, pair.v_bits);
    cfg->kv[block] = pair;
    if (cfg->kv_has_heads) cfg->kv_has_heads[block] = false;
    return MPQ_OK;
}

mpq_status mpq_config_set_kv_scheme(mpq_config *cfg, const mpq_kv_scheme *s, mpq_err *err) {
    if (!cfg || !s) return mpq_err_set(err, MPQ_ERR_INVALID, "config: NULL argument");
    if (s->mode != MPQ_KV_KIVI && s->mode != MPQ_KV_PER_TOKEN && s->mode != MPQ_KV_SAQ)
        return mpq_err_set(err, MPQ_ERR_INVALID, "config: kv scheme mode %d unknown", (int)s->mode);
    if (s->group_size <= 0 || s->residual < 0)
        return mpq_err_set(err, MPQ_ERR_INVALID, "config: kv scheme group_size %d must be > 0 and residual %d >= 0",
                           s->group_size, s->residual);
    cfg->scheme = *s;
    return MPQ_OK;
}

const mpq_kv_saq *mpq_config_kv_saq(const mpq_config *cfg) { return cfg ? cfg->saq : NULL; }
const char *mpq_config_kv_saq_path(const mpq_config *cfg) { return cfg ? cfg->saq_path : NULL; }

mpq_status mpq_config_set_kv_saq(mpq_config *cfg, const char *path, mpq_kv_saq *bases, mpq_err *err) {
    if (!cfg || (!path && !bases)) {
        mpq_kv_saq_free(bases);
        return mpq_err_set(err, MPQ_ERR_INVALID, "config: kv saq: NULL argument");
    }
    mpq_status st = MPQ_OK;
    char *p = NULL;
    if (!bases && (st = mpq_kv_saq_load(path, &bases, err)) != MPQ_OK) return st;
    if ((st = mpq_kv_saq_check(bases, cfg->n_blocks, cfg->n_kv_heads, cfg->head_dim, path ? path : "kv saq bases",
                               err)) != MPQ_OK)
        goto fail;
    if (path && (p = malloc(strlen(path) + 1)) != NULL) memcpy(p, path, strlen(path) + 1);
    if (path && !p) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "config: out of memory");
        goto fail;
    }
    mpq_kv_saq_free(cfg->saq);
    free(cfg->saq_path);
    cfg->saq = bases;
    cfg->saq_path = p;
    return MPQ_OK;
fail:
    mpq_kv_saq_free(bases);
    return st;
}

mpq_status mpq_config_check_kv(const mpq_config *cfg, const char *what, mpq_err *err) {
    if (!cfg) return mpq_err_set(err, MPQ_ERR_INVALID, "config: NULL argument");
    if (!what) what = "config";
    char nm[64];
    bool saq = cfg->scheme.mode == MPQ_KV_SAQ;
    if (saq && !cfg->saq)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: kv.scheme.mode saq needs the bases (kv.scheme.bases, or --kv-bases / --kv-fit)", what);
    for (int b = 0; b < cfg->n_blocks; b++) {
        mpq_kv_pair p = cfg->kv[b];
        if (!saq) {
            if (mpq_kv_pair_fractional(p))
                return mpq_err_set(err, MPQ_ERR_INVALID, "%s: kv pair %s of blk.%d: fractional rates need kv.scheme.mode saq",
                                   what, mpq_kv_pair_name(p, nm, sizeof nm), b);
            continue;
        }
        for (int half = 0; half < 2; half++) {
            int f = half ? p.v_bits : p.k_bits;
            if (f == 16) continue;
            mpq_status st = mpq_kv_saq_check_rate(mpq_kv_rate_q(f), cfg->head_dim, err);
            if (st != MPQ_OK) {
                mpq_err_prefix(err, "%s: kv pair %s of blk.%d", what, mpq_kv_pair_name(p, nm, sizeof nm), b);
                return st;
            }
        }
    }
    return MPQ_OK;
}

mpq_status mpq_config_uniform(const mpq_model *model, const char *weight_candidate, const char *kv_pair,
                              mpq_config **out, mpq_err *err) {
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "config: out is NULL");
    *out = NULL;
    mpq_candidate c;
    mpq_kv_pair p = {16, 16};
    if (!weight_candidate) return mpq_err_set(err, MPQ_ERR_INVALID, "config: weight candidate is NULL");
    if (mpq_candidate_parse(weight_candidate, &c, err) != MPQ_OK) return MPQ_ERR_INVALID;
    if (kv_pair && mpq_kv_pair_parse(kv_pair, &p, err) != MPQ_OK) return MPQ_ERR_INVALID;
    mpq_config *cfg = NULL;
    mpq_status st = config_new(model, &cfg, err);
    if (st != MPQ_OK) return st;
    cfg->wdefault = c;
    cfg->kvdefault = p;
    for (int i = 0; i < cfg->n_linear; i++) cfg->layers[i] = c;
    for (int b = 0; b < cfg->n_blocks; b++) cfg->kv[b] = p;
    *out = cfg;
    return MPQ_OK;
}

mpq_status mpq_config_clone(const mpq_config *cfg, mpq_config **out, mpq_err *err) {
    if (!cfg || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "config: NULL argument");
    *out = NULL;
    mpq_config *c = calloc(1, sizeof *c);
    if (!c) return mpq_err_set(err, MPQ_ERR_NOMEM, "config: out of memory");
    *c = *cfg;
    c->layers = NULL;
    c->kv = NULL;
    c->extras = NULL;
    c->kv_heads = NULL;
    c->kv_has_heads = NULL;
    if (cfg->kv_heads) {
        size_t nh = (size_t)cfg->n_blocks * (size_t)cfg->n_kv_heads;
        c->kv_heads = mpq_calloc(nh, sizeof *c->kv_heads);
        c->kv_has_heads = mpq_calloc((size_t)cfg->n_blocks, sizeof *c->kv_has_heads);
        if (!c->kv_heads || !c->kv_has_heads) {
            mpq_config_free(c);
            return mpq_err_set(err, MPQ_ERR_NOMEM, "config: out of memory");
        }
        memcpy(c->kv_heads, cfg->kv_heads, nh * sizeof *c->kv_heads);
        memcpy(c->kv_has_heads, cfg->kv_has_heads, (size_t)cfg->n_blocks * sizeof *c->kv_has_heads);
    }
    c->saq = NULL;
    c->saq_path = NULL;
    c->layers = mpq_calloc((size_t)cfg->n_linear, sizeof *c->layers);
    c->kv = mpq_calloc((size_t)cfg->n_blocks, sizeof *c->kv);
    if (cfg->extras) c->extras = cJSON_Duplicate(cfg->extras, 1);
    if (!c->layers || !c->kv || (cfg->extras && !c->extras)) {
        mpq_config_free(c);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "config: out of memory");
    }
    memcpy(c->layers, cfg->layers, (size_t)cfg->n_linear * sizeof *c->layers);
    memcpy(c->kv, cfg->kv, (size_t)cfg->n_blocks * sizeof *c->kv);
    if (cfg->saq_path) { /* the bases are reloaded from their file */
        mpq_status st = mpq_config_set_kv_saq(c, cfg->saq_path, NULL, err);
        if (st != MPQ_OK) {
            mpq_config_free(c);
            return st;
        }
    } else if (cfg->saq) {
        mpq_config_free(c);
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "config: clone: kv saq bases without a file");
    }
    *out = c;
    return MPQ_OK;
}

/* ---------------- parsing ---------------- */

/* Integer value of a JSON number that is integral and within [lo, hi]. */
static bool json_int(const cJSON *it, long lo, long hi, long *out) {
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi) return false;
    *out = (long)d;
    return true;
}

/* Block index from "blk.N" or "model.layers.N" (N decimal, no sign, no leading zeros); -1 if not. */
static long block_key(const char *key) {
    const char *p;
    if (strncmp(key, "blk.", 4) == 0)
        p = key + 4;
    else if (strncmp(key, "model.layers.", 13) == 0)
        p = key + 13;
    else
        return -1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '\0')) return -1;
    long n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || n > 100000000L) return -1;
        n = n * 10 + (*p - '0');
    }
    return n;
}

static mpq_status parse_weights(mpq_config *cfg, const cJSON *w, const char *src, const mpq_model *model,
                                mpq_err *err) {
    if (!cJSON_IsObject(w)) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights: expected an object", src);
    const cJSON *it;
    const cJSON *def = NULL, *layers = NULL;
    cJSON_ArrayForEach(it, w) {
        if (strcmp(it->string, "default") == 0 && !def)
            def = it;
        else if (strcmp(it->string, "layers") == 0 && !layers)
            layers = it;
        else
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.%s: unknown or repeated key (expected default, layers)",
                               src, it->string);
    }
    if (def) {
        if (!cJSON_IsString(def))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.default: expected a string (candidate name)", src);
        mpq_err pe = {0};
        if (mpq_candidate_parse(def->valuestring, &cfg->wdefault, &pe) != MPQ_OK)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.default: unknown candidate '%.64s' (%.400s)", src,
                               def->valuestring, pe.msg);
        for (int i = 0; i < cfg->n_linear; i++) cfg->layers[i] = cfg->wdefault;
    }
    if (!layers) return MPQ_OK;
    if (!cJSON_IsObject(layers))
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.layers: expected an object", src);
    bool *seen = mpq_calloc((size_t)cfg->n_linear, sizeof *seen);
    if (!seen) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", src);
    mpq_status st = MPQ_OK;
    cJSON_ArrayForEach(it, layers) {
        int idx = mpq_model_find_linear(model, it->string);
        if (idx < 0 || idx >= cfg->n_linear) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.layers.%.200s: no such layer in model (%d blocks)", src,
                             it->string, cfg->n_blocks);
            goto done;
        }
        if (seen[idx]) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.layers.%.200s: layer %s is given twice", src, it->string,
                             mpq_model_linear(model, idx)->name);
            goto done;
        }
        seen[idx] = true;
        if (!cJSON_IsString(it)) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.layers.%.200s: expected a string (candidate name)", src,
                             it->string);
            goto done;
        }
        mpq_err pe = {0};
        if (mpq_candidate_parse(it->valuestring, &cfg->layers[idx], &pe) != MPQ_OK) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: weights.layers.%.200s: unknown candidate '%.64s' (%.400s)", src,
                             it->string, it->valuestring, pe.msg);
            goto done;
        }
    }
done:
    free(seen);
    return st;
}

/* base_dir: the directory a relative kv.scheme.bases is resolved against (NULL: the cwd). */
static mpq_status parse_scheme(mpq_config *cfg, const cJSON *s, const char *src, const char *base_dir,
                               mpq_err *err) {
    if (!cJSON_IsObject(s)) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.scheme: expected an object", src);
    const cJSON *it;
    cJSON_ArrayForEach(it, s) {
        if (strcmp(it->string, "mode") != 0 && strcmp(it->string, "group_size") != 0 &&
            strcmp(it->string, "residual") != 0 && strcmp(it->string, "caq") != 0 && strcmp(it->string, "bases") != 0)
            return mpq_err_set(err, MPQ_ERR_FORMAT,
                               "%s: kv.scheme.%s: unknown key (expected mode, group_size, residual, caq, bases)", src,
                               it->string);
    }
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(s, "mode");
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(s, "group_size");
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(s, "residual");
    long v;
    if (mode) {
        if (!cJSON_IsString(mode) || mpq_kv_mode_parse(mode->valuestring, &cfg->scheme.mode, NULL) != MPQ_OK)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.scheme.mode: expected \"kivi\", \"per-token\" or \"saq\"", src);
    }
    if (gs) {
        if (!json_int(gs, 1, 1L << 20, &v))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.scheme.group_size: expected a positive integer", src);
        cfg->scheme.group_size = (int)v;
    }
    if (res) {
        if (!json_int(res, 0, 1L << 30, &v))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.scheme.residual: expected a non-negative integer", src);
        cfg->scheme.residual = (int)v;
    }
    const cJSON *caq = cJSON_GetObjectItemCaseSensitive(s, "caq");
    if (caq) {
        if (!cJSON_IsBool(caq))
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.scheme.caq: expected true or false", src);
        cfg->scheme.caq = cJSON_IsTrue(caq);
    }
    const cJSON *bases = cJSON_GetObjectItemCaseSensitive(s, "bases");
    if (bases) {
        if (!cJSON_IsString(bases) || !*bases->valuestring || cfg->scheme.mode != MPQ_KV_SAQ)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.scheme.bases: expected a file name (with mode \"saq\")", src);
        const char *bp = bases->valuestring;
        char *joined = NULL;
        if (bp[0] != '/' && base_dir) { /* relative to the config file's directory */
            size_t nd = strlen(base_dir), nb = strlen(bp);
            if (!(joined = malloc(nd + nb + 2))) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", src);
            memcpy(joined, base_dir, nd);
            joined[nd] = '/';
            memcpy(joined + nd + 1, bp, nb + 1);
            /* absolute, so that the config written back elsewhere (mpq export, eval --json)
             * still names the same file; if it cannot be resolved the load below names it */
            char *abs = realpath(joined, NULL);
            if (abs) {
                free(joined);
                joined = abs;
            }
            bp = joined;
        }
        mpq_status st = mpq_config_set_kv_saq(cfg, bp, NULL, err);
        free(joined);
        if (st != MPQ_OK) {
            mpq_err_prefix(err, "%s: kv.scheme.bases", src);
            return st == MPQ_ERR_INVALID ? MPQ_ERR_FORMAT : st;
        }
    }
    return MPQ_OK;
}

static mpq_status alloc_kv_heads(mpq_config *cfg) {
    if (cfg->kv_heads) return MPQ_OK;
    cfg->kv_heads = mpq_calloc((size_t)cfg->n_blocks * (size_t)cfg->n_kv_heads, sizeof *cfg->kv_heads);
    cfg->kv_has_heads = mpq_calloc((size_t)cfg->n_blocks, sizeof *cfg->kv_has_heads);
    if (cfg->kv_heads && cfg->kv_has_heads) return MPQ_OK;
    free(cfg->kv_heads);
    free(cfg->kv_has_heads);
    cfg->kv_heads = NULL;
    cfg->kv_has_heads = NULL;
    return MPQ_ERR_NOMEM;
}

/* kv.layers.blk.N = {"heads": [pair per KV head]} (the scheme is already parsed). */
static mpq_status parse_kv_heads(mpq_config *cfg, int b, const cJSON *obj, const char *src, mpq_err *err) {
    const cJSON *it, *heads = NULL;
    cJSON_ArrayForEach(it, obj) {
        if (strcmp(it->string, "heads") != 0 || heads)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.layers.%.200s.%.64s: unknown or repeated key (expected heads)",
                               src, obj->string, it->string);
        heads = it;
    }
    if (!heads || !cJSON_IsArray(heads))
        return mpq_err_set(err, MPQ_ERR_FORMAT,
                           "%s: kv.layers.%.200s: expected a KV pair such as \"k8v4\" or {\"heads\": [one pair per KV "
                           "head]}",
                           src, obj->string);
    int n = cJSON_GetArraySize(heads);
    if (n != cfg->n_kv_heads)
        return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.layers.%.200s.heads: %d pairs for a model with %d KV heads", src,
                           obj->string, n, cfg->n_kv_heads);
    if (cfg->scheme.group_size > cfg->head_dim || cfg->head_dim % cfg->scheme.group_size != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "%s: kv.layers.%.200s.heads: per-head pairs need kv.scheme.group_size (%d) to divide "
                           "head_dim (%d); otherwise a group would straddle two KV heads",
                           src, obj->string, cfg->scheme.group_size, cfg->head_dim);
    if (alloc_kv_heads(cfg) != MPQ_OK) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", src);
    int h = 0;
    cJSON_ArrayForEach(it, heads) {
        mpq_kv_pair *p = &cfg->kv_heads[(size_t)b * cfg->n_kv_heads + h];
        if (!cJSON_IsString(it) || mpq_kv_pair_parse(it->valuestring, p, NULL) != MPQ_OK)
            return mpq_err_set(err, MPQ_ERR_FORMAT,
                               "%s: kv.layers.%.200s.heads[%d]: expected a KV pair such as \"k8v4\" (got %s%.64s%s)", src,
                               obj->string, h, cJSON_IsString(it) ? "'" : "",
                               cJSON_IsString(it) ? it->valuestring : "a non-string", cJSON_IsString(it) ? "'" : "");
        h++;
    }
    cfg->kv_has_heads[b] = true;
    return MPQ_OK;
}

static mpq_status parse_kv(mpq_config *cfg, const cJSON *kv, const char *src, const char *base_dir, mpq_err *err) {
    if (!cJSON_IsObject(kv)) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv: expected an object", src);
    const cJSON *it, *scheme = NULL, *def = NULL, *layers = NULL;
    cJSON_ArrayForEach(it, kv) {
        if (strcmp(it->string, "scheme") == 0 && !scheme)
            scheme = it;
        else if (strcmp(it->string, "default") == 0 && !def)
            def = it;
        else if (strcmp(it->string, "layers") == 0 && !layers)
            layers = it;
        else
            return mpq_err_set(err, MPQ_ERR_FORMAT,
                               "%s: kv.%s: unknown or repeated key (expected scheme, default, layers)", src, it->string);
    }
    if (scheme) {
        mpq_status st = parse_scheme(cfg, scheme, src, base_dir, err);
        if (st != MPQ_OK) return st;
    }
    if (def) {
        if (!cJSON_IsString(def) || mpq_kv_pair_parse(def->valuestring, &cfg->kvdefault, NULL) != MPQ_OK)
            return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.default: expected a KV pair such as \"k8v4\" (got %s%.64s%s)",
                               src, cJSON_IsString(def) ? "'" : "", cJSON_IsString(def) ? def->valuestring : "a non-string",
                               cJSON_IsString(def) ? "'" : "");
        for (int b = 0; b < cfg->n_blocks; b++) cfg->kv[b] = cfg->kvdefault;
    }
    if (!layers) return MPQ_OK;
    if (!cJSON_IsObject(layers)) return mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.layers: expected an object", src);
    /* a block listed twice ("blk.0" and "model.layers.0") is an error; track with a bitmap */
    bool *seen = mpq_calloc((size_t)cfg->n_blocks, sizeof *seen);
    if (!seen) return mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", src);
    mpq_status st = MPQ_OK;
    cJSON_ArrayForEach(it, layers) {
        long b = block_key(it->string);
        if (b < 0) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.layers.%.200s: expected a block name \"blk.N\"", src,
                             it->string);
            goto done;
        }
        if (b >= cfg->n_blocks) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.layers.%.200s: no such block in model (%d blocks)", src,
                             it->string, cfg->n_blocks);
            goto done;
        }
        if (seen[b]) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.layers.%.200s: block %ld is given twice", src, it->string, b);
            goto done;
        }
        seen[b] = true;
        if (cJSON_IsObject(it)) { /* {"heads": ["k4v2", ...]}: one pair per KV head */
            if ((st = parse_kv_heads(cfg, (int)b, it, src, err)) != MPQ_OK) goto done;
            continue;
        }
        if (!cJSON_IsString(it) || mpq_kv_pair_parse(it->valuestring, &cfg->kv[b], NULL) != MPQ_OK) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: kv.layers.%.200s: expected a KV pair such as \"k8v4\" (got %s%.64s%s)",
                             src, it->string, cJSON_IsString(it) ? "'" : "",
                             cJSON_IsString(it) ? it->valuestring : "a non-string", cJSON_IsString(it) ? "'" : "");
            goto done;
        }
    }
done:
    free(seen);
    return st;
}

/* 1-based line and column of byte offset off in text. */
static void line_col(const char *text, size_t off, long *line, long *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static mpq_status config_parse(const char *json_text, const char *source_name, const char *base_dir,
                               const mpq_model *model, mpq_config **out, mpq_err *err) {
    const char *src = (source_name && *source_name) ? source_name : "config";
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: out is NULL", src);
    *out = NULL;
    if (!json_text) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: text is NULL", src);
    mpq_config *cfg = NULL;
    cJSON *root = NULL;
    mpq_status st = config_new(model, &cfg, err);
    if (st != MPQ_OK) goto done;
    const char *end = NULL;
    root = cJSON_ParseWithOpts(json_text, &end, 1);
    if (!root) {
        size_t off = end ? (size_t)(end - json_text) : 0;
        long line, col;
        line_col(json_text, off, &line, &col);
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: invalid JSON at line %ld column %ld (byte %zu)", src, line, col, off);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: expected a JSON object at the top level", src);
        goto done;
    }
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "mpq_config_version");
    long v = 0;
    if (!ver) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: mpq_config_version: missing (this mpq writes %d)", src,
                         MPQ_CONFIG_VERSION);
        goto done;
    }
    if (!json_int(ver, 1, 1000000000L, &v)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: mpq_config_version: expected a positive integer", src);
        goto done;
    }
    if (v > MPQ_CONFIG_VERSION) {
        st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED, "%s: mpq_config_version %ld is newer than this mpq (%d)", src, v,
                         MPQ_CONFIG_VERSION);
        goto done;
    }
    /* keys are matched case-sensitively; a repeated top-level key is ambiguous */
    int n_ver = 0, n_w = 0, n_kv = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        n_ver += strcmp(it->string, "mpq_config_version") == 0;
        n_w += strcmp(it->string, "weights") == 0;
        n_kv += strcmp(it->string, "kv") == 0;
    }
    if (n_ver > 1 || n_w > 1 || n_kv > 1) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s: key repeated", src,
                         n_ver > 1 ? "mpq_config_version" : n_w > 1 ? "weights" : "kv");
        goto done;
    }
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "weights");
    if (w && (st = parse_weights(cfg, w, src, model, err)) != MPQ_OK) goto done;
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(root, "kv");
    if (kv && (st = parse_kv(cfg, kv, src, base_dir, err)) != MPQ_OK) goto done;
    if ((st = mpq_config_check_kv(cfg, src, err)) != MPQ_OK) {
        if (st == MPQ_ERR_INVALID) st = MPQ_ERR_FORMAT;
        goto done;
    }
    /* keep the other keys, in order */
    cJSON_DeleteItemFromObjectCaseSensitive(root, "mpq_config_version");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "weights");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "kv");
    if (root->child) {
        cfg->extras = root;
        root = NULL;
    }
    *out = cfg;
    cfg = NULL;
done:
    cJSON_Delete(root);
    mpq_config_free(cfg);
    return st;
}

mpq_status mpq_config_parse(const char *json_text, const char *source_name, const mpq_model *model,
                            mpq_config **out, mpq_err *err) {
    return config_parse(json_text, source_name, NULL, model, out, err);
}

mpq_status mpq_config_load(const char *path, const mpq_model *model, mpq_config **out, mpq_err *err) {
    if (!out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_load: out is NULL");
    *out = NULL;
    if (!path) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_load: path is NULL");
    char *buf = NULL;
    size_t n = 0;
    mpq_status st = mpq_file_read_text(path, CONFIG_FILE_MAX, "a config", &buf, &n, err);
    if (st != MPQ_OK) goto done;
    const char *nul = memchr(buf, '\0', n);
    if (nul) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: NUL byte at offset %zu; not a JSON text", path, (size_t)(nul - buf));
        goto done;
    }
    const char *slash = strrchr(path, '/'); /* the file's directory, for a relative kv.scheme.bases */
    if (!slash) {
        st = config_parse(buf, path, ".", model, out, err);
    } else {
        size_t nd = (size_t)(slash - path); /* 0 for a file in /: joined as "" + "/" + name */
        char *dir = malloc(nd + 1);
        if (!dir) {
            st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        memcpy(dir, path, nd);
        dir[nd] = '\0';
        st = config_parse(buf, path, dir, model, out, err);
        free(dir);
    }
done:
    free(buf);
    return st;
}

/* ---------------- writing ---------------- */

static bool model_matches(const mpq_config *cfg, const mpq_model *model) {
    return cfg && model && mpq_model_n_linear(model) == cfg->n_linear &&
           mpq_model_get_config(model)->n_layers == cfg->n_blocks;
}

char *mpq_config_to_json(const mpq_config *cfg, const mpq_model *model) {
    if (!model_matches(cfg, model)) return NULL;
    char *text = NULL;
    char pbuf[32];
    cJSON *root = cJSON_CreateObject();
    if (!root) goto done;
    if (!cJSON_AddNumberToObject(root, "mpq_config_version", MPQ_CONFIG_VERSION)) goto done;
    cJSON *w = cJSON_AddObjectToObject(root, "weights");
    if (!w || !cJSON_AddStringToObject(w, "default", cfg->wdefault.name)) goto done;
    cJSON *wl = cJSON_AddObjectToObject(w, "layers");
    if (!wl) goto done;
    for (int i = 0; i < cfg->n_linear; i++) {
        if (strcmp(cfg->layers[i].name, cfg->wdefault.name) == 0) continue;
        if (!cJSON_AddStringToObject(wl, mpq_model_linear(model, i)->name, cfg->layers[i].name)) goto done;
    }
    cJSON *kv = cJSON_AddObjectToObject(root, "kv");
    if (!kv) goto done;
    cJSON *sc = cJSON_AddObjectToObject(kv, "scheme");
    if (!sc || !cJSON_AddStringToObject(sc, "mode", mpq_kv_mode_name(cfg->scheme.mode)) ||
        !cJSON_AddNumberToObject(sc, "group_size", cfg->scheme.group_size) ||
        !cJSON_AddNumberToObject(sc, "residual", cfg->scheme.residual) ||
        (cfg->scheme.caq && !cJSON_AddTrueToObject(sc, "caq")) ||
        (cfg->saq_path && !cJSON_AddStringToObject(sc, "bases", cfg->saq_path)))
        goto done;
    if (!cJSON_AddStringToObject(kv, "default", mpq_kv_pair_name(cfg->kvdefault, pbuf, sizeof pbuf))) goto done;
    cJSON *kl = cJSON_AddObjectToObject(kv, "layers");
    if (!kl) goto done;
    for (int b = 0; b < cfg->n_blocks; b++) {
        if (cfg->kv_has_heads && cfg->kv_has_heads[b]) { /* {"heads": [...]} */
            char key[32];
            snprintf(key, sizeof key, "blk.%d", b);
            cJSON *ho = cJSON_AddObjectToObject(kl, key);
            cJSON *ha = ho ? cJSON_AddArrayToObject(ho, "heads") : NULL;
            if (!ha) goto done;
            for (int h = 0; h < cfg->n_kv_heads; h++) {
                cJSON *x = cJSON_CreateString(
                    mpq_kv_pair_name(cfg->kv_heads[(size_t)b * cfg->n_kv_heads + h], pbuf, sizeof pbuf));
                if (!x || !cJSON_AddItemToArray(ha, x)) {
                    cJSON_Delete(x);
                    goto done;
                }
            }
            continue;
        }
        if (cfg->kv[b].k_bits == cfg->kvdefault.k_bits && cfg->kv[b].v_bits == cfg->kvdefault.v_bits) continue;
        char key[32];
        snprintf(key, sizeof key, "blk.%d", b);
        if (!cJSON_AddStringToObject(kl, key, mpq_kv_pair_name(cfg->kv[b], pbuf, sizeof pbuf))) goto done;
    }
    if (cfg->extras) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cfg->extras) {
            cJSON *dup = cJSON_Duplicate(it, 1);
            if (!dup) goto done;
            if (!cJSON_AddItemToObject(root, it->string, dup)) {
                cJSON_Delete(dup);
                goto done;
            }
        }
    }
    text = cJSON_Print(root);
done:
    cJSON_Delete(root);
    return text;
}

mpq_status mpq_config_save(const mpq_config *cfg, const mpq_model *model, const char *path, mpq_err *err) {
    if (!path) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_save: path is NULL");
    if (!model_matches(cfg, model))
        return mpq_err_set(err, MPQ_ERR_INVALID, "%s: config does not match the model's layers", path);
    mpq_status st = MPQ_OK;
    char *text = mpq_config_to_json(cfg, model);
    FILE *f = NULL;
    if (!text) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    f = fopen(path, "wb");
    if (!f) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    size_t n = strlen(text);
    if (fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
done:
    if (f && fclose(f) != 0 && st == MPQ_OK) st = mpq_err_set(err, MPQ_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    free(text);
    return st;
}

/* ---------------- apply and stats ---------------- */

mpq_status mpq_config_apply(const mpq_config *cfg, const mpq_model *model, mpq_weights *dst, mpq_err *err) {
    return mpq_config_apply_xtx(cfg, model, dst, NULL, err);
}

bool mpq_config_needs_xtx(const mpq_config *cfg) {
    for (int i = 0; cfg && i < cfg->n_linear; i++)
        if (mpq_candidate_is_saq(&cfg->layers[i])) return true;
    return false;
}

/* The model has weights and the config was made for its shape (both apply functions). */
static mpq_status apply_check(const mpq_config *cfg, const mpq_model *model, mpq_err *err) {
    if (!mpq_model_has_weights(model))
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_apply: %s: shape only (no weights loaded)",
                           mpq_model_path(model));
    if (!model_matches(cfg, model))
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_apply: config has %d layers / %d blocks, model %d / %d",
                           cfg->n_linear, cfg->n_blocks, mpq_model_n_linear(model), mpq_model_get_config(model)->n_layers);
    return MPQ_OK;
}

mpq_status mpq_config_apply_xtx(const mpq_config *cfg, const mpq_model *model, mpq_weights *dst,
                                const double *const *xtx, mpq_err *err) {
    if (!cfg || !model || !dst) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_apply: NULL argument");
    mpq_status cs = apply_check(cfg, model, err);
    if (cs != MPQ_OK) return cs;
    const mpq_weights *src = mpq_model_get_weights(model);
    if (dst->n_layers != src->n_layers || dst->n_floats != src->n_floats || !dst->blocks)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "mpq_config_apply: destination weights (%d blocks, %zu floats) are not a clone of %s "
                           "(%d blocks, %zu floats)",
                           dst->n_layers, dst->n_floats, mpq_model_path(model), src->n_layers, src->n_floats);
    for (int i = 0; i < cfg->n_linear; i++) {
        const mpq_layer_info *li = mpq_model_linear(model, i);
        float *w = mpq_weights_linear(dst, li);
        if (!w) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_apply: %s: no matrix in destination", li->name);
        mpq_status st =
            mpq_quantize_matrix_ctx(&cfg->layers[i], w, li->rows, li->cols, xtx ? xtx[i] : NULL, err);
        if (st != MPQ_OK) {
            mpq_err_prefix(err, "mpq_config_apply: layer %s", li->name);
            return st;
        }
    }
    return MPQ_OK;
}

mpq_status mpq_config_apply_view(const mpq_config *cfg, const mpq_model *model, const double *const *xtx,
                                 mpq_weights **out, mpq_err *err) {
    if (!cfg || !model || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_apply: NULL argument");
    *out = NULL;
    mpq_status cs = apply_check(cfg, model, err);
    if (cs != MPQ_OK) return cs;
    mpq_weights *q = NULL;
    mpq_status st = mpq_weights_view(model, &q, err);
    for (int i = 0; st == MPQ_OK && i < cfg->n_linear; i++) {
        if (cfg->layers[i].type == MPQ_QTYPE_F32) continue; /* unchanged: borrowed */
        const mpq_layer_info *li = mpq_model_linear(model, i);
        float *w = NULL;
        if ((st = mpq_weights_own_linear(q, li, mpq_model_get_weights(model), &w, err)) != MPQ_OK) break;
        if ((st = mpq_quantize_matrix_ctx(&cfg->layers[i], w, li->rows, li->cols, xtx ? xtx[i] : NULL, err)) != MPQ_OK)
            mpq_err_prefix(err, "mpq_config_apply: layer %s", li->name);
    }
    if (st == MPQ_OK) *out = q;
    else mpq_weights_free(q);
    return st;
}

mpq_status mpq_config_get_stats(const mpq_config *cfg, const mpq_model *model, int64_t context_len,
                                mpq_config_stats *out, mpq_err *err) {
    if (!cfg || !model || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_get_stats: NULL argument");
    if (!model_matches(cfg, model))
        return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_get_stats: config has %d layers / %d blocks, model %d / %d",
                           cfg->n_linear, cfg->n_blocks, mpq_model_n_linear(model), mpq_model_get_config(model)->n_layers);
    memset(out, 0, sizeof *out);
    double bits = 0.0;
    for (int i = 0; i < cfg->n_linear; i++) {
        const mpq_layer_info *li = mpq_model_linear(model, i);
        int64_t by = mpq_candidate_bytes(&cfg->layers[i], li->rows, li->cols);
        if (by < 0 || out->linear_bytes > INT64_MAX - by)
            return mpq_err_set(err, MPQ_ERR_INVALID, "mpq_config_get_stats: %s: size overflows", li->name);
        out->linear_params += li->n_params;
        out->linear_bytes += by;
        bits += mpq_candidate_bits_matrix(&cfg->layers[i], li->rows, li->cols) * (double)li->n_params;
    }
    out->avg_weight_bits = out->linear_params > 0 ? bits / (double)out->linear_params : 0.0;
    out->other_params = mpq_model_n_params(model) - out->linear_params;
    if (out->other_params < 0) out->other_params = 0;
    out->total_weight_bytes = out->linear_bytes + 4 * out->other_params;
    const mpq_model_config *mc = mpq_model_get_config(model);
    int kv_dim = mc->n_kv_heads * mc->head_dim;
    double kvbits = 0.0, kvbytes = 0.0;
    for (int b = 0; b < cfg->n_blocks; b++) {
        if (cfg->kv_has_heads && cfg->kv_has_heads[b]) {
            /* per-head pairs (group_size divides head_dim, so it divides kv_dim: the per-element
             * figure of a head is that of the block formula with the head's bits) */
            for (int h = 0; h < cfg->n_kv_heads; h++) {
                mpq_kv_pair p = cfg->kv_heads[(size_t)b * cfg->n_kv_heads + h];
                double kb = mpq_kv_bits_per_element_hd(p, &cfg->scheme, kv_dim, mc->head_dim, context_len, true, true);
                double vb = mpq_kv_bits_per_element_hd(p, &cfg->scheme, kv_dim, mc->head_dim, context_len, false, true);
                kvbits += 0.5 * (kb + vb) / (double)cfg->n_kv_heads;
                kvbytes += (kb + vb) * (double)mc->head_dim / 8.0;
            }
            continue;
        }
        double kb = mpq_kv_bits_per_element_hd(cfg->kv[b], &cfg->scheme, kv_dim, mc->head_dim, context_len, true, true);
        double vb = mpq_kv_bits_per_element_hd(cfg->kv[b], &cfg->scheme, kv_dim, mc->head_dim, context_len, false, true);
        kvbits += 0.5 * (kb + vb);
        kvbytes += (kb + vb) * (double)kv_dim / 8.0;
    }
    out->avg_kv_bits = kvbits / (double)cfg->n_blocks;
    out->kv_bytes_per_token = kvbytes;
    return MPQ_OK;
}

/* ---------------- per-(block, KV head) pairs ---------------- */

int mpq_config_n_kv_heads(const mpq_config *cfg) { return cfg ? cfg->n_kv_heads : 0; }

bool mpq_config_has_kv_heads(const mpq_config *cfg) {
    for (int b = 0; cfg && cfg->kv_has_heads && b < cfg->n_blocks; b++)
        if (cfg->kv_has_heads[b]) return true;
    return false;
}

bool mpq_config_kv_heads(const mpq_config *cfg, int block, mpq_kv_pair *out) {
    if (!cfg || block < 0 || block >= cfg->n_blocks) return false;
    bool has = cfg->kv_has_heads && cfg->kv_has_heads[block];
    for (int h = 0; out && h < cfg->n_kv_heads; h++)
        out[h] = has ? cfg->kv_heads[(size_t)block * cfg->n_kv_heads + h] : cfg->kv[block];
    return has;
}

void mpq_config_kv_head_pairs(const mpq_config *cfg, mpq_kv_pair *out) {
    for (int b = 0; cfg && out && b < cfg->n_blocks; b++)
        (void)mpq_config_kv_heads(cfg, b, out + (size_t)b * cfg->n_kv_heads);
}

mpq_status mpq_config_set_kv_heads(mpq_config *cfg, int block, const mpq_kv_pair *pairs, mpq_err *err) {
    if (!cfg || !pairs) return mpq_err_set(err, MPQ_ERR_INVALID, "config: NULL argument");
    if (block < 0 || block >= cfg->n_blocks)
        return mpq_err_set(err, MPQ_ERR_INVALID, "config: block %d outside 0..%d", block, cfg->n_blocks - 1);
    for (int h = 0; h < cfg->n_kv_heads; h++)
        if (!kv_pair_valid(pairs[h]))
            return mpq_err_set(err, MPQ_ERR_INVALID,
                               "config: block %d head %d: kv pair k%dv%d: bits must be 2, 3, 4, 8 or 16", block, h,
                               pairs[h].k_bits, pairs[h].v_bits);
    if (cfg->scheme.group_size > cfg->head_dim || cfg->head_dim % cfg->scheme.group_size != 0)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "config: block %d: per-head pairs need group_size %d to divide head_dim %d", block,
                           cfg->scheme.group_size, cfg->head_dim);
    if (alloc_kv_heads(cfg) != MPQ_OK) return mpq_err_set(err, MPQ_ERR_NOMEM, "config: out of memory");
    memcpy(cfg->kv_heads + (size_t)block * cfg->n_kv_heads, pairs, (size_t)cfg->n_kv_heads * sizeof *pairs);
    cfg->kv_has_heads[block] = true;
    return MPQ_OK;
}
