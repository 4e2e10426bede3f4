/*
 * kv_export.c - KV configurations as files: the KVTuner layer config
 * {"0": {"nbits_key": 8, "nbits_value": 4}, ...} (write and strict parse) and the mpq config
 * (mpq_config.h: weights f32, kv.scheme, kv.layers). API: include/mpq/mpq_kvsearch.h.
 */
#include "mpq/mpq_kvsearch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "search/kv_internal.h"

/* ---- export ------------------------------------------------------------------------------- */

char *mpq_kvsearch_kvtuner_json(const mpq_kv_pair *pairs, int n_blocks) {
    if (!pairs || n_blocks < 1) return NULL;
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    for (int b = 0; ok && b < n_blocks; b++) {
        char key[16];
        snprintf(key, sizeof key, "%d", b);
        cJSON *l = cJSON_AddObjectToObject(o, key);
        ok = l && cJSON_AddNumberToObject(l, "nbits_key", pairs[b].k_bits) &&
             cJSON_AddNumberToObject(l, "nbits_value", pairs[b].v_bits);
    }
    char *s = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!s) return NULL;
    char *c = malloc(strlen(s) + 1); /* plain malloc'd for the caller's free() */
    if (c) memcpy(c, s, strlen(s) + 1);
    cJSON_free(s);
    return c;
}

mpq_status mpq_kvsearch_kvtuner_parse(const char *json, const char *source, int n_blocks, mpq_kv_pair *pairs_out,
                                      mpq_err *err) {
    if (!source) source = "kvtuner";
    if (!json || !pairs_out || n_blocks < 1) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: NULL argument", source);
    cJSON *o = cJSON_Parse(json);
    bool *seen = mpq_calloc((size_t)n_blocks, sizeof *seen);
    mpq_status st = MPQ_OK;
    if (!seen) {
        cJSON_Delete(o);
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    }
    if (!cJSON_IsObject(o)) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: expected a JSON object {\"0\": {\"nbits_key\": .., \"nbits_value\": ..}}",
                         source);
        goto done;
    }
    const cJSON *l;
    cJSON_ArrayForEach(l, o) {
        const char *k = l->string;
        char *end = NULL;
        long b = (k && *k >= '0' && *k <= '9') ? strtol(k, &end, 10) : -1;
        if (b < 0 || !end || *end || b >= n_blocks || (k[0] == '0' && k[1])) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: key '%s': expected a block index 0..%d", source, k ? k : "",
                             n_blocks - 1);
            goto done;
        }
        if (seen[b]) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: block %ld given twice", source, b);
            goto done;
        }
        seen[b] = true;
        if (!cJSON_IsObject(l) || cJSON_GetArraySize(l) != 2) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s: expected {\"nbits_key\": N, \"nbits_value\": N}", source, k);
            goto done;
        }
        const char *names[2] = {"nbits_key", "nbits_value"};
        int bits[2];
        for (int h = 0; h < 2; h++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(l, names[h]);
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
                v->valuedouble > 64 || !kv_valid_bits((int)v->valuedouble)) {
                st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: %s.%s: expected 2, 3, 4, 8 or 16", source, k, names[h]);
                goto done;
            }
            bits[h] = (int)v->valuedouble;
        }
        pairs_out[b] = (mpq_kv_pair){bits[0], bits[1]};
    }
    for (int b = 0; b < n_blocks; b++)
        if (!seen[b]) {
            st = mpq_err_set(err, MPQ_ERR_FORMAT, "%s: block %d missing (model has %d blocks)", source, b, n_blocks);
            goto done;
        }
done:
    free(seen);
    cJSON_Delete(o);
    return st;
}

mpq_status mpq_kvsearch_config_json(const mpq_model *model, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                    char **out, mpq_err *err) {
    if (!model || !pairs || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv config: NULL argument");
    *out = NULL;
    mpq_config *cfg = NULL;
    mpq_status st = mpq_config_uniform(model, "f32", NULL, &cfg, err);
    int nb = mpq_model_get_config(model)->n_layers;
    for (int b = 0; st == MPQ_OK && b < nb; b++) st = mpq_config_set_kv(cfg, b, pairs[b], err);
    if (st == MPQ_OK && scheme) st = mpq_config_set_kv_scheme(cfg, scheme, err);
    if (st == MPQ_OK && !(*out = mpq_config_to_json(cfg, model))) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_config_free(cfg);
    return st;
}

mpq_status mpq_kvsearch_config_json_saq(const mpq_model *model, const mpq_kv_pair *pairs, const mpq_kv_scheme *scheme,
                                        const char *bases_ref, const mpq_kv_saq *bases, char **out, mpq_err *err) {
    if (!model || !pairs || !scheme || !bases_ref || !bases || !out)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv config: NULL argument");
    *out = NULL;
    const mpq_model_config *mc = mpq_model_get_config(model);
    mpq_config *cfg = NULL;
    mpq_kv_saq *copy = NULL; /* the config owns its bases: a copy through the JSON text */
    char *text = NULL;
    mpq_status st = mpq_kv_saq_to_json(bases, &text, err);
    if (st == MPQ_OK) st = mpq_kv_saq_from_json(text, strlen(text), bases_ref, &copy, err);
    free(text);
    if (st == MPQ_OK) st = mpq_config_uniform(model, "f32", NULL, &cfg, err);
    for (int b = 0; st == MPQ_OK && b < mc->n_layers; b++) st = mpq_config_set_kv(cfg, b, pairs[b], err);
    if (st == MPQ_OK) st = mpq_config_set_kv_scheme(cfg, scheme, err);
    if (st == MPQ_OK) {
        st = mpq_config_set_kv_saq(cfg, bases_ref, copy, err); /* takes copy */
        copy = NULL;
    }
    if (st == MPQ_OK) st = mpq_config_check_kv(cfg, "kv config", err);
    if (st == MPQ_OK && !(*out = mpq_config_to_json(cfg, model))) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_kv_saq_free(copy);
    mpq_config_free(cfg);
    return st;
}
