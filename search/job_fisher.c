/*
 * job_fisher.c - the fisher stage of a job: one unit per transformer block, each one
 * forward + backward (down to the block) per calibration batch of the FP model, storing
 * fisher_err per (linear layer, candidate) (ModelOpt AutoQuantize's score; mpq_fisher.h).
 * A unit depends only on the model, the calibration windows, the spec's batch and the
 * candidates, so the numbers are the same for any worker count and after a resume.
 */
#include "job_fisher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_fisher.h"

int mpq_job_fisher_n_units(const mpq_job_spec *spec, const mpq_model *m) {
    if (!spec || !m || !spec->stages[MPQ_JOB_STAGE_FISHER]) return 0;
    int n = 0, nb = mpq_model_get_config(m)->n_layers;
    for (int b = 0; b < nb; b++) n += mpq_fisher_block_layers(m, b, NULL) > 0;
    return n;
}

mpq_status mpq_job_fisher_units(const mpq_job_spec *spec, const mpq_model *m, mpq_job_unit *out, int n) {
    if (n != mpq_job_fisher_n_units(spec, m)) return MPQ_ERR_INVALID;
    int k = 0, nb = mpq_model_get_config(m)->n_layers;
    for (int b = 0; b < nb && k < n; b++) {
        if (mpq_fisher_block_layers(m, b, NULL) == 0) continue;
        out[k] = (mpq_job_unit){.stage = MPQ_JOB_STAGE_FISHER, .linear_index = -1, .block = b, .option = -1};
        snprintf(out[k].key, sizeof out[k].key, "blk.%d", b);
        k++;
    }
    return k == n ? MPQ_OK : MPQ_ERR_INVALID;
}

mpq_status mpq_job_fisher_compute(const mpq_job_fisher_env *env, const mpq_job_unit *u, cJSON *prov, mpq_err *err) {
    const mpq_job_spec *s = env->spec;
    int first = -1, nl = mpq_fisher_block_layers(env->model, u->block, &first);
    int nc = s->n_candidates, ns = env->n_seqs;
    if (nc < 1) return mpq_err_set(err, MPQ_ERR_INVALID, "%s: the fisher stage needs candidates", s->source);
    size_t n_out;
    double *win = NULL;
    mpq_status st = MPQ_OK;
    if (!mpq_size_mul3((size_t)nl, (size_t)nc, (size_t)ns, &n_out) ||
        !(win = mpq_calloc(n_out ? n_out : 1, sizeof *win)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "fisher: out of memory");
    cJSON *fo = cJSON_AddObjectToObject(prov, "fisher");
    if (!fo || !cJSON_AddStringToObject(fo, "loss", "next-token cross-entropy") ||
        !cJSON_AddStringToObject(fo, "per", "token, mean over windows")) {
        st = mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = mpq_fisher_block(env->model, env->tokens, ns, env->seq_len, s->calib.batch, u->block, env->cands, nc,
                               win, err)) != MPQ_OK)
        goto done;
    for (int j = 0; j < nl && st == MPQ_OK; j++)
        for (int c = 0; c < nc && st == MPQ_OK; c++) {
            mpq_fisher_stat fs = mpq_fisher_summarize(win + ((size_t)j * nc + c) * ns, ns);
            st = env->add_row(env->row_user, prov, env->layer_ids[first + j], s->candidates[c], "fisher_err", fs.mean,
                              fs.se, fs.n, err);
        }
done:
    free(win);
    return st;
}
