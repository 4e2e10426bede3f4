/* job_kvhead.c - per-(block, KV head, pair) units of the kv_sensitivity stage: only that
 * head's keys and values of that block quantized, everything else full precision, measured
 * over the calibration windows exactly like the per-block units (KVTuner's layer-wise
 * sensitivity, refined to KV heads). */
#include "job_kvhead.h"

#include <math.h>
#include <string.h>

mpq_status mpq_job_kv_head_rows(mpq_calib *cal, const mpq_job_unit *u, mpq_kv_pair p, cJSON *prov, int64_t layer_id,
                                mpq_job_hessian_row_fn add, void *user, mpq_err *err) {
    const char *slash = strchr(u->key, '/');
    if (!u->kv_head_unit || !slash) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: not a per-head KV unit", u->key);
    const char *cand = slash + 1; /* "k4v2@h1" */
    mpq_calib_result res;
    mpq_status st = mpq_calib_kv_head(cal, u->block, u->kv_head, p, &res, err);
    if (st != MPQ_OK) return st;
    cJSON_DeleteItemFromObjectCaseSensitive(prov, "kv_head");
    if (!cJSON_AddNumberToObject(prov, "kv_head", u->kv_head)) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    if ((st = add(user, prov, layer_id, cand, "kv_kl_head", res.kl, res.kl_se, res.n_seqs, err)) != MPQ_OK ||
        (st = add(user, prov, layer_id, cand, "kv_dloss_head", res.dloss, res.dloss_se, res.n_seqs, err)) != MPQ_OK ||
        (st = add(user, prov, layer_id, cand, "kv_top1_head", res.top1, res.top1_se, res.n_seqs, err)) != MPQ_OK)
        return st;
    return add(user, prov, layer_id, cand, "kv_attn_rel_head", res.attn_rel, NAN, res.n_seqs, err);
}
