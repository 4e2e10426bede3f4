/*
 * kv_head.c - per-(block, KV head) KV precision pairs: the sensitivity table of a job's
 * per-head kv_sensitivity units (spec kv.per_head), per-head configs and stored solutions.
 * API: include/mpq/mpq_kvsearch.h ("per-(block, KV head) pairs").
 *
 * Reference: KVTuner (Li et al. 2025) searches one (K bits, V bits) pair per layer; this refines
 * its items to the KV heads of a layer (each head's cache is stored and read on its own), with
 * the same per-item sensitivity measurement, pruning and exact frontier.
 */
#include "mpq/mpq_kvsearch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_job.h"

mpq_status mpq_kvsearch_table_load_heads(mpq_db *db, int64_t job_id, const char *metric, mpq_kvsearch_table **out,
                                         mpq_err *err) {
    if (!db || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: NULL argument");
    *out = NULL;
    char mname[64];
    if (!metric) metric = "kv_kl_head";
    size_t ml = strlen(metric);
    if (ml >= 5 && strcmp(metric + ml - 5, "_head") == 0)
        snprintf(mname, sizeof mname, "%s", metric);
    else if (ml + 6 <= sizeof mname)
        snprintf(mname, sizeof mname, "%s_head", metric);
    else
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv table: metric name '%.64s...' too long", metric);
    mpq_job *jh = NULL;
    mpq_kv_pair *pairs = NULL;
    int64_t *ids = NULL, *bids = NULL;
    double *val = NULL, *se = NULL;
    mpq_kvsearch_table *t = NULL;
    mpq_status st = mpq_job_open_id(db, job_id, &jh, err);
    if (st != MPQ_OK) goto done;
    const mpq_db_job *job = mpq_job_get_row(jh);
    const mpq_job_spec *spec = mpq_job_get_spec(jh);
    if (!spec->has_kv || spec->n_kv_pairs < 1) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s' has no KV pairs (its spec has no \"kv\" section)", job->name);
        goto done;
    }
    const mpq_model_config *mc = mpq_model_get_config(mpq_job_get_shape(jh));
    const int nb = mpq_job_n_blocks(jh), H = mc->n_kv_heads, hd = mc->head_dim, np = spec->n_kv_pairs;
    if (nb < 1 || H < 1 || hd < 1 || nb > (1 << 20) / H) {
        st = mpq_err_set(err, MPQ_ERR_FORMAT, "job '%s': %d blocks x %d KV heads of width %d", job->name, nb, H, hd);
        goto done;
    }
    const int ni = nb * H;
    if (!(pairs = mpq_calloc((size_t)np, sizeof *pairs)) || !(ids = mpq_calloc((size_t)ni, sizeof *ids)) ||
        !(bids = mpq_calloc((size_t)nb, sizeof *bids)) || !(val = mpq_calloc((size_t)nb, sizeof *val)) ||
        !(se = mpq_calloc((size_t)nb, sizeof *se))) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int j = 0; j < np; j++)
        if ((st = mpq_kv_pair_parse(spec->kv_pairs[j], &pairs[j], err)) != MPQ_OK) goto done;
    for (int b = 0; b < nb; b++) {
        const mpq_db_layer *l = mpq_job_kv_layer(jh, b);
        if (!l) {
            st = mpq_err_set(err, MPQ_ERR_NOTFOUND, "job '%s': no KV layer row blk.%d.kv", job->name, b);
            goto done;
        }
        for (int h = 0; h < H; h++) ids[b * H + h] = l->id;
    }
    if ((st = mpq_kvsearch_table_create(ni, np, hd, &spec->kv_scheme, pairs, &t, err)) != MPQ_OK) goto done;
    memcpy(t->layer_ids, ids, (size_t)ni * sizeof *ids);
    snprintf(t->metric, sizeof t->metric, "%s", mname);
    t->n_heads = H;
    int total = 0;
    for (int j = 0; j < np; j++)
        for (int h = 0; h < H; h++) { /* one fetch per (pair, head) over the blocks' rows */
            char cand[64];
            snprintf(cand, sizeof cand, "%s@h%d", t->pair_names[j], h);
            int found = 0;
            for (int b = 0; b < nb; b++) bids[b] = ids[b * H + h];
            if ((st = mpq_db_metric_fetch(db, job_id, mname, cand, nb, bids, val, se, &found, err)) != MPQ_OK)
                goto done;
            for (int b = 0; b < nb; b++) {
                t->err[(size_t)(b * H + h) * np + j] = val[b];
                t->se[(size_t)(b * H + h) * np + j] = se[b];
            }
            total += found;
        }
    if (total == 0) {
        st = mpq_err_set(err, MPQ_ERR_NOTFOUND,
                         "job '%s' has no '%s' rows (per-head KV sensitivity: set \"per_head\": true in the spec's kv "
                         "section and run its kv_sensitivity stage)",
                         job->name, mname);
        goto done;
    }
    *out = t;
    t = NULL;
done:
    mpq_kvsearch_table_free(t);
    mpq_job_close(jh);
    free(pairs);
    free(ids);
    free(bids);
    free(val);
    free(se);
    return st;
}

mpq_status mpq_kvsearch_config_json_heads(const mpq_model *model, const mpq_kv_pair *head_pairs,
                                          const mpq_kv_scheme *scheme, char **out, mpq_err *err) {
    if (!model || !head_pairs || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv config: NULL argument");
    *out = NULL;
    mpq_config *cfg = NULL;
    const mpq_model_config *mc = mpq_model_get_config(model);
    const int nb = mc->n_layers, H = mc->n_kv_heads;
    mpq_status st = mpq_config_uniform(model, "f32", NULL, &cfg, err);
    if (st == MPQ_OK && scheme) st = mpq_config_set_kv_scheme(cfg, scheme, err);
    for (int b = 0; st == MPQ_OK && b < nb; b++) {
        const mpq_kv_pair *hp = head_pairs + (size_t)b * H;
        bool same = true;
        for (int h = 1; h < H; h++) same = same && hp[h].k_bits == hp[0].k_bits && hp[h].v_bits == hp[0].v_bits;
        st = same ? mpq_config_set_kv(cfg, b, hp[0], err) : mpq_config_set_kv_heads(cfg, b, hp, err);
    }
    if (st == MPQ_OK && !(*out = mpq_config_to_json(cfg, model))) st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    mpq_config_free(cfg);
    return st;
}

mpq_status mpq_kvsearch_solution_store_heads(mpq_db *db, int64_t job_id, const mpq_kvsearch_table *t,
                                             const char *name, const int *pair_idx, double loss,
                                             const char *budgets_json, const char *config_json,
                                             int64_t *solution_id, mpq_err *err) {
    if (!db || !t || !name || !pair_idx || !config_json || t->n_heads < 1)
        return mpq_err_set(err, MPQ_ERR_INVALID, "kv solution store (per head): bad argument");
    const int H = t->n_heads, nb = t->n_blocks / H;
    mpq_db_assignment *a = mpq_calloc((size_t)nb, sizeof *a);
    if (!a) return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
    for (int b = 0; b < nb; b++) {
        const int *ix = pair_idx + (size_t)b * H;
        bool same = true;
        for (int h = 1; h < H; h++) same = same && ix[h] == ix[0];
        a[b].layer_id = t->layer_ids[(size_t)b * H];
        if (same) {
            snprintf(a[b].kv_pair, sizeof a[b].kv_pair, "%s", t->pair_names[ix[0]]);
            continue;
        }
        /* heads differ: their pairs in KV-head order joined by "," (README "The results
         * database"), "mixed" when that does not fit */
        size_t len = 0;
        for (int h = 0; h < H && len < sizeof a[b].kv_pair; h++) {
            int w = snprintf(a[b].kv_pair + len, sizeof a[b].kv_pair - len, "%s%s", h ? "," : "", t->pair_names[ix[h]]);
            len = w < 0 ? sizeof a[b].kv_pair : len + (size_t)w;
        }
        if (len >= sizeof a[b].kv_pair) snprintf(a[b].kv_pair, sizeof a[b].kv_pair, "mixed");
    }
    mpq_db_solution s = {.job_id = job_id, .metric_expr = (char *)t->metric, .budgets_json = (char *)budgets_json,
                         .config_json = (char *)config_json, .objective = loss, .bound = NAN, .gap = NAN,
                         .seconds = NAN};
    snprintf(s.name, sizeof s.name, "%s", name);
    snprintf(s.solver, sizeof s.solver, "kv-frontier-heads");
    snprintf(s.status, sizeof s.status, "optimal");
    mpq_status st = mpq_db_solution_insert(db, &s, a, nb, solution_id, err);
    free(a);
    return st;
}

char *mpq_kvsearch_kvtuner_heads_yaml(const mpq_kv_pair *head_pairs, int n_blocks, int n_heads) {
    if (!head_pairs || n_blocks < 1 || n_heads < 1 || n_blocks > (1 << 20) / n_heads) return NULL;
    /* "L:\n" + per head "  H:\n    nbits_key: K\n    nbits_value: V\n": < 64 bytes a head */
    size_t cap = 64 + (size_t)n_blocks * (16 + 64 * (size_t)n_heads), len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    int w = snprintf(out, cap, "# KVTuner per_head_config (layer -> KV head -> bits; mpq kv --per-head)\n");
    len = (size_t)w;
    for (int b = 0; b < n_blocks; b++) {
        len += (size_t)snprintf(out + len, cap - len, "%d:\n", b);
        for (int h = 0; h < n_heads; h++) {
            const mpq_kv_pair *p = &head_pairs[(size_t)b * n_heads + h];
            len += (size_t)snprintf(out + len, cap - len, "  %d:\n    nbits_key: %d\n    nbits_value: %d\n", h,
                                    p->k_bits, p->v_bits);
        }
    }
    return out;
}
