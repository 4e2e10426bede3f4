/* cmd_eval.c - `mpq eval`: perplexity, KL(FP || quantized) and top-1 agreement of a model,
 * optionally quantized by a config (weights and KV cache), with sizes of that config. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_tokenizer.h"

static const char *eval_help =
    "usage: mpq eval --model MODEL --data DATA [options]\n"
    "\n"
    "Runs MODEL over DATA in windows of --seq-len tokens and prints perplexity and\n"
    "cross-entropy; with --config (or --weights / --kv) the model is quantized as\n"
    "configured and compared with the full-precision model on the same windows:\n"
    "KL(P_fp || P_q) per next-token distribution (mean and standard error over windows)\n"
    "and top-1 agreement. The same inputs, seed and --batch give bit-identical numbers.\n"
    "--batch sets the rows of every matrix product, which changes the last bits of every\n"
    "figure; with a quantized KV cache such a last-bit change can move a K or V element to\n"
    "the neighbouring quantization level, so KL and ppl can differ from the 3rd to 5th digit.\n"
    "\n"
    "  -m, --model PATH        llama2.c checkpoint, Hugging Face directory or GGUF file\n"
    "      --weights-dtype D   linear layers (and an untied embedding) in memory as f32\n"
    "                          (default), bf16, f16, or source (the file's BF16 / F16, else\n"
    "                          f32); widened to f32 at use. A BF16 / F16 file kept as such\n"
    "                          gives the f32 figures bit for bit; rounding an F32 file changes\n"
    "                          the model\n"
    "  -d, --data PATH         text file (tokenized with --tokenizer), or .u16 / .u32 token file\n"
    "  -t, --tokenizer PATH    llama2.c tokenizer.bin or GGUF file (needed for text data;\n"
    "                          default for a GGUF model: the model file's own tokenizer)\n"
    "  -c, --config PATH       quantized config (JSON, see README)\n"
    "  -w, --weights CAND      quantize every linear layer with CAND (e.g. int4g32)\n"
    "  -k, --kv PAIR           quantize every layer's KV cache with PAIR (e.g. k4v2)\n"
    "      --kv-mode MODE      kivi (default) | per-token | saq;  --kv-group G (32);  --kv-residual R (0)\n"
    "      --kv-caq            CAQ code adjustment of every quantized KV group (same bits)\n"
    "      --kv-bases FILE     mode saq: the KV bases (a file written by --kv-bases-out)\n"
    "      --kv-fit DATA       mode saq: fit the KV bases on DATA (calibration text or token\n"
    "                          file, windows of --seq-len, --kv-fit-seqs N (16) drawn with seed 1)\n"
    "      --kv-bases-out FILE write the bases fitted by --kv-fit to FILE\n"
    "  -L, --seq-len T         tokens per window (default min(256, model seq len))\n"
    "  -n, --n-seqs N          windows to evaluate (default 0 = all)\n"
    "  -s, --seed S            window sampling seed (default 1)\n"
    "  -b, --batch B           windows per forward batch (default 8)\n"
    "      --workers N         threads evaluating whole batches (default: the number of\n"
    "                          processors); the figures and --logits-out do not depend on N\n"
    "      --json              print the result as JSON\n"
    "  -o, --json-out FILE     also write the JSON result to FILE\n"
    "      --logits-out FILE   write the logits of every evaluated position: float32\n"
    "                          little-endian, shape (n_seqs, seq_len, vocab), row-major, windows\n"
    "                          in evaluation order (of the quantized model when quantized)\n"
    "  -h, --help              this help\n";

typedef struct eval_args {
    const char *model, *data, *tokenizer, *config, *weights, *kv, *kv_mode, *json_out, *logits_out;
    const char *kv_bases, *kv_fit, *kv_bases_out;
    mpq_weights_dtype wdtype;
    long seq_len, n_seqs, seed, batch, kv_group, kv_residual, workers, kv_fit_seqs;
    bool json, kv_caq;
} eval_args;

static int parse_args(int argc, char **argv, eval_args *a) {
    enum { OPT_JSON = 1000, OPT_LOGITS, OPT_KVMODE, OPT_KVGROUP, OPT_KVRES, OPT_WORKERS, OPT_KVCAQ, OPT_KVBASES, OPT_KVFIT,
           OPT_KVBOUT, OPT_KVFITN, OPT_WDTYPE };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"data", required_argument, 0, 'd'},
        {"tokenizer", required_argument, 0, 't'}, {"config", required_argument, 0, 'c'},
        {"weights", required_argument, 0, 'w'}, {"kv", required_argument, 0, 'k'},
        {"kv-mode", required_argument, 0, OPT_KVMODE}, {"kv-group", required_argument, 0, OPT_KVGROUP},
        {"kv-residual", required_argument, 0, OPT_KVRES}, {"kv-caq", no_argument, 0, OPT_KVCAQ},
        {"kv-bases", required_argument, 0, OPT_KVBASES}, {"kv-fit", required_argument, 0, OPT_KVFIT},
        {"kv-bases-out", required_argument, 0, OPT_KVBOUT}, {"kv-fit-seqs", required_argument, 0, OPT_KVFITN},
        {"seq-len", required_argument, 0, 'L'},
        {"n-seqs", required_argument, 0, 'n'},  {"seed", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'},   {"json", no_argument, 0, OPT_JSON},
        {"json-out", required_argument, 0, 'o'}, {"logits-out", required_argument, 0, OPT_LOGITS},
        {"workers", required_argument, 0, OPT_WORKERS}, {"weights-dtype", required_argument, 0, OPT_WDTYPE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->seed = 1;
    a->batch = 8;
    a->kv_group = -1;
    a->kv_residual = -1;
    a->kv_fit_seqs = 16;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:d:t:c:w:k:L:n:s:b:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'd': a->data = optarg; break;
        case 't': a->tokenizer = optarg; break;
        case 'c': a->config = optarg; break;
        case 'w': a->weights = optarg; break;
        case 'k': a->kv = optarg; break;
        case OPT_KVMODE: a->kv_mode = optarg; break;
        case OPT_KVCAQ: a->kv_caq = true; break;
        case OPT_KVBASES: a->kv_bases = optarg; break;
        case OPT_KVFIT: a->kv_fit = optarg; break;
        case OPT_KVBOUT: a->kv_bases_out = optarg; break;
        case OPT_KVFITN:
            if (!cli_parse_int(optarg, 1, 1 << 20, &a->kv_fit_seqs))
                return cli_usage_error("eval", "bad --kv-fit-seqs '%s'", optarg);
            break;
        case OPT_WDTYPE:
            if (!mpq_weights_dtype_parse(optarg, &a->wdtype))
                return cli_usage_error("eval", "bad --weights-dtype '%s' (f32, bf16, f16 or source)", optarg);
            break;
        case OPT_KVGROUP:
            if (!cli_parse_int(optarg, 1, 1 << 20, &a->kv_group)) return cli_usage_error("eval", "bad --kv-group '%s'", optarg);
            break;
        case OPT_KVRES:
            if (!cli_parse_int(optarg, 0, 1 << 30, &a->kv_residual)) return cli_usage_error("eval", "bad --kv-residual '%s'", optarg);
            break;
        case 'L':
            if (!cli_parse_int(optarg, 1, 1 << 20, &a->seq_len)) return cli_usage_error("eval", "bad --seq-len '%s'", optarg);
            break;
        case 'n':
            if (!cli_parse_int(optarg, 0, 1 << 30, &a->n_seqs)) return cli_usage_error("eval", "bad --n-seqs '%s'", optarg);
            break;
        case 's':
            if (!cli_parse_int(optarg, 0, 0x7fffffffL, &a->seed)) return cli_usage_error("eval", "bad --seed '%s'", optarg);
            break;
        case 'b':
            if (!cli_parse_int(optarg, 1, 4096, &a->batch)) return cli_usage_error("eval", "bad --batch '%s'", optarg);
            break;
        case OPT_WORKERS:
            if (!cli_parse_int(optarg, 1, MPQ_EXEC_MAX_WORKERS, &a->workers))
                return cli_usage_error("eval", "bad --workers '%s' (1..%d)", optarg, MPQ_EXEC_MAX_WORKERS);
            break;
        case OPT_JSON: a->json = true; break;
        case 'o': a->json_out = optarg; break;
        case OPT_LOGITS: a->logits_out = optarg; break;
        case 'h': fputs(eval_help, stdout); return -1;
        default: return cli_usage_error("eval", "bad option");
        }
    }
    if (optind != argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!a->model || !a->data) return cli_usage_error("eval", "--model and --data are required");
    if (a->config && (a->weights || a->kv)) return cli_usage_error("eval", "--config excludes --weights / --kv");
    if (a->kv_bases && a->kv_fit) return cli_usage_error("eval", "--kv-bases excludes --kv-fit");
    if (a->kv_bases_out && !a->kv_fit) return cli_usage_error("eval", "--kv-bases-out needs --kv-fit");
    return 0;
}

/* --kv-fit: the bases from --kv-fit-seqs windows of T tokens of the calibration data (seed 1). */
static mpq_status fit_bases(const eval_args *a, const mpq_model *m, const mpq_tokenizer *tok, int T,
                            mpq_kv_saq **out, mpq_err *err) {
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mpq_model_get_config(m)->vocab_size;
    mpq_data *d = NULL;
    mpq_data_seqs *sq = NULL;
    mpq_status st = mpq_data_load(a->kv_fit, tok, &dopt, &d, err);
    if (st == MPQ_OK) st = mpq_data_sequences(d, T, (int)a->kv_fit_seqs, 1, &sq, err);
    if (st == MPQ_OK && sq->n_seqs < 1) st = mpq_err_set(err, MPQ_ERR_INVALID, "%s: no window of %d tokens", a->kv_fit, T);
    if (st == MPQ_OK)
        st = mpq_kv_saq_fit_model(m, sq->tokens, sq->n_seqs, T, T + 1, (int)a->batch, out, err);
    mpq_data_seqs_free(sq);
    mpq_data_free(d);
    return st;
}

/* Builds the config from --config or --weights/--kv and the --kv-* overrides; NULL *out = FP. */
static mpq_status build_config(const eval_args *a, const mpq_model *m, const mpq_tokenizer *tok, int T,
                               mpq_config **out, mpq_err *err) {
    *out = NULL;
    bool kv_opts = a->kv_mode || a->kv_group >= 0 || a->kv_residual >= 0 || a->kv_caq || a->kv_bases || a->kv_fit;
    if (!a->config && !a->weights && !a->kv && !kv_opts) return MPQ_OK;
    mpq_status st;
    if (a->config) st = mpq_config_load(a->config, m, out, err);
    else st = mpq_config_uniform(m, a->weights ? a->weights : "f32", a->kv ? a->kv : "k16v16", out, err);
    if (st != MPQ_OK) return st;
    if (!kv_opts) return mpq_config_check_kv(*out, a->config ? a->config : "eval", err);
    mpq_kv_scheme s = *mpq_config_kv_scheme(*out);
    if (a->kv_mode && (st = mpq_kv_mode_parse(a->kv_mode, &s.mode, err)) != MPQ_OK) return st;
    if (a->kv_group >= 0) s.group_size = (int)a->kv_group;
    if (a->kv_residual >= 0) s.residual = (int)a->kv_residual;
    if (a->kv_caq) s.caq = true;
    if ((st = mpq_config_set_kv_scheme(*out, &s, err)) != MPQ_OK) return st;
    if ((a->kv_bases || a->kv_fit) && s.mode != MPQ_KV_SAQ)
        return mpq_err_set(err, MPQ_ERR_INVALID, "--kv-bases / --kv-fit need kv scheme mode saq (--kv-mode saq)");
    if (a->kv_bases && (st = mpq_config_set_kv_saq(*out, a->kv_bases, NULL, err)) != MPQ_OK) return st;
    if (a->kv_fit) {
        mpq_kv_saq *bases = NULL;
        if ((st = fit_bases(a, m, tok, T, &bases, err)) != MPQ_OK) return st;
        if (a->kv_bases_out && (st = mpq_kv_saq_save(bases, a->kv_bases_out, err)) != MPQ_OK) {
            mpq_kv_saq_free(bases);
            return st;
        }
        if ((st = mpq_config_set_kv_saq(*out, a->kv_bases_out, bases, err)) != MPQ_OK) return st;
    }
    return mpq_config_check_kv(*out, a->config ? a->config : "eval", err);
}

typedef struct eval_result {
    mpq_eval_stats fp, q;
    bool quantized;
    mpq_config_stats sizes;
    int n_seqs, seq_len, batch, workers;
    double seconds;
} eval_result;

/* Everything cli_eval owns; eval_free releases it in reverse order. */
typedef struct eval_ctx {
    mpq_model *m;
    mpq_tokenizer *tok;
    mpq_data *d;
    mpq_data_seqs *seqs;
    mpq_config *cfg;   /* NULL: full precision */
    mpq_config *fpcfg; /* the f32 config whose sizes are reported when cfg is NULL */
    mpq_weights *qw;   /* quantized weights (cfg only): a view of the model owning its quantized layers */
    mpq_kv_pair *pairs;
    mpq_kv_pair *head_pairs; /* per-(block, KV head) pairs of a config that has them */
    mpq_exec_opts qopt;
    int n_workers;
    struct eval_worker { /* one per worker thread */
        mpq_exec *ex;
        mpq_eval_part *fp, *q; /* the batch's contributions, added in batch order */
        float *ref, *logits;
        int *tokens;
        int nb;                /* windows of the batch it holds */
    } *w;
    eval_result *r;
    const char *logits_out;
    FILE *lf; /* --logits-out */
} eval_ctx;

static void eval_free(eval_ctx *c) {
    if (c->lf) fclose(c->lf);
    for (int i = 0; c->w && i < c->n_workers; i++) {
        free(c->w[i].tokens);
        free(c->w[i].logits);
        free(c->w[i].ref);
        mpq_eval_part_free(c->w[i].q);
        mpq_eval_part_free(c->w[i].fp);
        mpq_exec_free(c->w[i].ex);
    }
    free(c->w);
    free(c->pairs);
    free(c->head_pairs);
    mpq_weights_free(c->qw);
    mpq_config_free(c->fpcfg);
    mpq_config_free(c->cfg);
    mpq_data_seqs_free(c->seqs);
    mpq_data_free(c->d);
    mpq_tokenizer_free(c->tok);
    mpq_model_free(c->m);
}

/* Loads model, tokenizer and data, cuts the windows, builds the config and its sizes. */
static mpq_status eval_load(const eval_args *a, eval_ctx *c, eval_result *r, mpq_err *err) {
    mpq_status st;
    if ((st = mpq_model_load_dtype(a->model, a->wdtype, &c->m, err)) != MPQ_OK) return st;
    const mpq_model_config *mc = mpq_model_get_config(c->m);
    /* a GGUF model carries its tokenizer: used for text data when --tokenizer is not given */
    size_t dl = strlen(a->data);
    bool text = !(dl >= 4 && (strcmp(a->data + dl - 4, ".u16") == 0 || strcmp(a->data + dl - 4, ".u32") == 0));
    const char *tp = a->tokenizer ? a->tokenizer : (text && mc->format == MPQ_MODEL_FORMAT_GGUF) ? a->model : NULL;
    if (tp && (st = mpq_tokenizer_load(tp, mc->vocab_size, &c->tok, err)) != MPQ_OK) return st;
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(a->data, c->tok, &dopt, &c->d, err)) != MPQ_OK) return st;
    int T = a->seq_len ? (int)a->seq_len : (mc->seq_len < 256 ? mc->seq_len : 256);
    if (T > mc->seq_len)
        return mpq_err_set(err, MPQ_ERR_INVALID, "--seq-len %d exceeds the model's seq len %d", T, mc->seq_len);
    if ((st = mpq_data_sequences(c->d, T, (int)a->n_seqs, (uint64_t)a->seed, &c->seqs, err)) != MPQ_OK) return st;
    r->n_seqs = c->seqs->n_seqs;
    r->seq_len = T;
    r->batch = (int)a->batch < r->n_seqs ? (int)a->batch : r->n_seqs;
    if ((st = build_config(a, c->m, c->tok, T, &c->cfg, err)) != MPQ_OK) return st;
    r->quantized = c->cfg != NULL;
    if (!c->cfg && (st = mpq_config_uniform(c->m, "f32", "k16v16", &c->fpcfg, err)) != MPQ_OK) return st;
    return mpq_config_get_stats(c->cfg ? c->cfg : c->fpcfg, c->m, T, &r->sizes, err);
}

/* Quantized weights and KV pairs (with a config), the executor, the logit buffers and the
 * --logits-out file. */
static mpq_status eval_prepare(const eval_args *a, eval_ctx *c, eval_result *r, mpq_err *err) {
    mpq_status st;
    const mpq_model_config *mc = mpq_model_get_config(c->m);
    c->qopt = mpq_exec_opts_default();
    if (c->cfg) {
        /* the model's tensors borrowed, the quantized layers owned */
        if ((st = mpq_config_apply_view(c->cfg, c->m, NULL, &c->qw, err)) != MPQ_OK) return st;
        if (!(c->pairs = mpq_calloc((size_t)mc->n_layers, sizeof *c->pairs)))
            return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
        for (int l = 0; l < mc->n_layers; l++) c->pairs[l] = mpq_config_kv(c->cfg, l);
        c->qopt.kv_pairs = c->pairs;
        c->qopt.n_kv_pairs = mc->n_layers;
        c->qopt.kv_scheme = *mpq_config_kv_scheme(c->cfg);
        if (mpq_config_has_kv_heads(c->cfg)) { /* kv.layers entries with "heads" */
            size_t nh = (size_t)mc->n_layers * (size_t)mc->n_kv_heads;
            if (!(c->head_pairs = mpq_calloc(nh, sizeof *c->head_pairs)))
                return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory");
            mpq_config_kv_head_pairs(c->cfg, c->head_pairs);
            c->qopt.kv_head_pairs = c->head_pairs;
            c->qopt.n_kv_head_pairs = (int)nh;
        }
        c->qopt.kv_saq = mpq_config_kv_saq(c->cfg);
    }
    int B = r->batch, T = r->seq_len, n_batches = (r->n_seqs + B - 1) / B;
    c->n_workers = a->workers > 0 ? (int)a->workers : mpq_job_default_workers();
    if (c->n_workers > n_batches) c->n_workers = n_batches > 0 ? n_batches : 1;
    r->workers = c->n_workers;
    if (!(c->w = mpq_calloc((size_t)c->n_workers, sizeof *c->w)))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for %d workers", c->n_workers);
    size_t per_batch;
    if (!mpq_size_mul3((size_t)B, (size_t)T, (size_t)mc->vocab_size, &per_batch))
        return mpq_err_set(err, MPQ_ERR_NOMEM, "%d x %d x %d logits overflow", B, T, mc->vocab_size);
    for (int i = 0; i < c->n_workers; i++) {
        struct eval_worker *w = &c->w[i];
        if ((st = mpq_exec_create_forward(c->m, B, T, &w->ex, err)) != MPQ_OK ||
            (st = mpq_eval_part_create(B, T, &w->fp, err)) != MPQ_OK ||
            (st = mpq_eval_part_create(B, T, &w->q, err)) != MPQ_OK)
            return st;
        /* the reference log-probabilities only feed a quantized pass; the logits only --logits-out */
        if ((r->quantized && !(w->ref = mpq_calloc(per_batch, sizeof *w->ref))) ||
            (a->logits_out && !(w->logits = mpq_calloc(per_batch, sizeof *w->logits))) ||
            !(w->tokens = mpq_calloc((size_t)B * (size_t)(T + 1), sizeof *w->tokens)))
            return mpq_err_set(err, MPQ_ERR_NOMEM, "out of memory for %d x %d x %d logits (worker %d of %d)", B, T,
                               mc->vocab_size, i + 1, c->n_workers);
    }
    if (a->logits_out && !(c->lf = fopen(a->logits_out, "wb")))
        return mpq_err_set(err, MPQ_ERR_IO, "%s: cannot create: %s", a->logits_out, strerror(errno));
    c->logits_out = a->logits_out;
    return MPQ_OK;
}

/* One batch of windows on worker `worker`: the FP pass (reference log-probabilities), then
 * the quantized pass against it, recorded in the worker's parts. */
static mpq_status eval_compute(void *user, int worker, int batch, mpq_err *err) {
    eval_ctx *c = user;
    struct eval_worker *w = &c->w[worker];
    const eval_result *r = c->r;
    const int B = r->batch, T = r->seq_len, s0 = batch * B;
    const int nb = c->seqs->n_seqs - s0 < B ? c->seqs->n_seqs - s0 : B;
    mpq_status st;
    w->nb = nb;
    memcpy(w->tokens, c->seqs->tokens + (size_t)s0 * (size_t)(T + 1), (size_t)nb * (size_t)(T + 1) * sizeof *w->tokens);
    mpq_eval_io fio = {.logprobs_out = w->ref, .logits_out = r->quantized ? NULL : w->logits}; /* NULLs: not kept */
    if ((st = mpq_exec_eval_part(w->ex, mpq_model_get_weights(c->m), NULL, w->tokens, nb, T, &fio, w->fp, err)) != MPQ_OK)
        return st;
    if (r->quantized) {
        mpq_eval_io qio = {.ref_logprobs = w->ref, .logits_out = w->logits};
        st = mpq_exec_eval_part(w->ex, c->qw, &c->qopt, w->tokens, nb, T, &qio, w->q, err);
    }
    return st;
}

/* In batch order: adds the batch's parts to the totals and writes its logits. */
static mpq_status eval_commit(void *user, int worker, int batch, mpq_err *err) {
    (void)batch;
    eval_ctx *c = user;
    struct eval_worker *w = &c->w[worker];
    mpq_eval_stats_add(&c->r->fp, w->fp);
    if (c->r->quantized) mpq_eval_stats_add(&c->r->q, w->q);
    size_t n = (size_t)w->nb * (size_t)c->r->seq_len * (size_t)mpq_model_get_config(c->m)->vocab_size;
    if (c->lf && w->logits && fwrite(w->logits, sizeof *w->logits, n, c->lf) != n)
        return mpq_err_set(err, MPQ_ERR_IO, "%s: write failed: %s", c->logits_out, strerror(errno));
    return MPQ_OK;
}

/* Runs every batch of windows on the workers; writes the logits when asked. */
static mpq_status eval_run(eval_ctx *c, eval_result *r, mpq_err *err) {
    const int n_batches = (r->n_seqs + r->batch - 1) / r->batch;
    c->r = r;
    double t0 = mpq_time_now();
    mpq_status st = mpq_exec_batches_run(c->n_workers, n_batches, eval_compute, eval_commit, c, err);
    if (st != MPQ_OK) return st;
    r->seconds = mpq_time_now() - t0;
    if (!r->quantized) {
        r->q = r->fp;
        r->q.kl_mean = 0;
        r->q.kl_se = 0;
        r->q.top1 = 1;
    }
    if (c->lf) {
        int rc = fclose(c->lf);
        c->lf = NULL;
        if (rc != 0) return mpq_err_set(err, MPQ_ERR_IO, "%s: close failed: %s", c->logits_out, strerror(errno));
    }
    return MPQ_OK;
}

/* The result as a JSON object (NULL when out of memory). Paths and names are escaped by
 * cJSON; a NaN or infinite figure (e.g. from a model with non-finite weights) is null. */
/* Top-1 agreement compares argmaxes, which mean nothing once a logit is NaN or Inf (the
 * cross-entropies then are not finite): NaN, printed as "n/a" / null, rather than 1.0. */
static double top1_or_nan(const eval_result *r) {
    return isfinite(r->fp.ce) && isfinite(r->q.ce) ? r->q.top1 : NAN;
}

static cJSON *eval_json(const eval_args *a, const eval_ctx *c, const eval_result *r) {
    cJSON *o = cJSON_CreateObject();
    bool ok = cli_json_add_string(o, "model", mpq_model_path(c->m)) && cli_json_add_string(o, "data", a->data) &&
              cli_json_add_string(o, "data_sha256", mpq_data_sha256(c->d)) &&
              cli_json_add_string(o, "config", a->config) && cli_json_add_string(o, "weights", a->weights) &&
              cli_json_add_string(o, "kv", a->kv);
    if (ok && c->cfg) {
        const mpq_kv_scheme *s = mpq_config_kv_scheme(c->cfg);
        cJSON *ks = cJSON_AddObjectToObject(o, "kv_scheme");
        ok = cli_json_add_string(ks, "mode", mpq_kv_mode_name(s->mode)) &&
             cli_json_add_number(ks, "group_size", s->group_size) && cli_json_add_number(ks, "residual", s->residual) &&
             (!s->caq || cJSON_AddTrueToObject(ks, "caq") != NULL) &&
             (!mpq_config_kv_saq_path(c->cfg) || cli_json_add_string(ks, "bases", mpq_config_kv_saq_path(c->cfg)));
    }
    const struct { const char *key; double v; } nums[] = {
        {"seq_len", r->seq_len},
        {"n_seqs", r->n_seqs},
        {"seed", (double)a->seed},
        {"batch", r->batch},
        {"n_tokens", (double)r->q.n_tokens},
        {"fp_ppl", r->fp.ppl},
        {"fp_ce", r->fp.ce},
        {"ppl", r->q.ppl},
        {"ce", r->q.ce},
        {"kl", r->q.kl_mean},
        {"kl_stderr", r->q.kl_se},
        {"top1", top1_or_nan(r)},
        {"avg_weight_bits", r->sizes.avg_weight_bits},
        {"weight_bytes", (double)r->sizes.total_weight_bytes},
        {"linear_bytes", (double)r->sizes.linear_bytes},
        {"avg_kv_bits", r->sizes.avg_kv_bits},
        {"kv_bytes_per_token", r->sizes.kv_bytes_per_token},
        {"seconds", round(r->seconds * 1000.0) / 1000.0},
    };
    for (size_t i = 0; ok && i < sizeof nums / sizeof nums[0]; i++) ok = cli_json_add_number(o, nums[i].key, nums[i].v);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* v formatted with fmt, or "n/a" when it is not a number (NaN, Inf): text output never shows
 * "nan" as if it were a figure. buf holds the result. */
static const char *fig(char buf[48], const char *fmt, double v) {
    if (!isfinite(v)) return "n/a";
    snprintf(buf, 48, fmt, v);
    return buf;
}

static void eval_print_text(const eval_args *a, const eval_ctx *c, const eval_result *r) {
    char b[8][48];
    printf("model %s, data %s: %d windows x %d tokens (seed %ld, batch %d), %lld scored tokens\n",
           mpq_model_path(c->m), a->data, r->n_seqs, r->seq_len, a->seed, r->batch, (long long)r->q.n_tokens);
    printf("fp         ppl %s  ce %s nats\n", fig(b[0], "%.4f", r->fp.ppl), fig(b[1], "%.5f", r->fp.ce));
    if (r->quantized)
        printf("quantized  ppl %s  ce %s nats  KL %s +- %s  top-1 agreement %s\n", fig(b[2], "%.4f", r->q.ppl),
               fig(b[3], "%.5f", r->q.ce), fig(b[4], "%.6g", r->q.kl_mean), fig(b[5], "%.2g", r->q.kl_se),
               fig(b[6], "%.4f", top1_or_nan(r)));
    printf("weights    %s bits/weight (linear layers), %lld bytes total\n", fig(b[7], "%.4f", r->sizes.avg_weight_bits),
           (long long)r->sizes.total_weight_bytes);
    printf("kv cache   %s bits/element, %s bytes/token\n", fig(b[0], "%.4f", r->sizes.avg_kv_bits),
           fig(b[1], "%.1f", r->sizes.kv_bytes_per_token));
}

/* Prints the result (text or --json) and writes --json-out. */
static mpq_status eval_output(const eval_args *a, const eval_ctx *c, const eval_result *r, mpq_err *err) {
    if (!a->json && !a->json_out) {
        eval_print_text(a, c, r);
        return MPQ_OK;
    }
    mpq_status st = MPQ_OK;
    cJSON *j = eval_json(a, c, r);
    if (a->json) st = cli_write_json(stdout, "stdout", j, err);
    else eval_print_text(a, c, r);
    if (st == MPQ_OK && a->json_out) {
        FILE *jf = fopen(a->json_out, "w");
        if (!jf) {
            st = mpq_err_set(err, MPQ_ERR_IO, "%s: cannot create: %s", a->json_out, strerror(errno));
        } else {
            st = cli_write_json(jf, a->json_out, j, err);
            if (fclose(jf) != 0 && st == MPQ_OK) st = mpq_err_set(err, MPQ_ERR_IO, "%s: write failed", a->json_out);
        }
    }
    cJSON_Delete(j);
    return st;
}

int cli_eval(int argc, char **argv) {
    eval_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? MPQ_EXIT_OK : rc;
    mpq_err err = {0};
    eval_ctx c;
    eval_result r;
    memset(&c, 0, sizeof c);
    memset(&r, 0, sizeof r);
    mpq_status st = eval_load(&a, &c, &r, &err);
    if (st == MPQ_OK) st = eval_prepare(&a, &c, &r, &err);
    if (st == MPQ_OK) st = eval_run(&c, &r, &err);
    if (st == MPQ_OK) st = eval_output(&a, &c, &r, &err);
    if (st == MPQ_OK && !(isfinite(r.fp.ce) && (!r.quantized || isfinite(r.q.ce))))
        fprintf(stderr, "mpq eval: warning: the model's logits are not finite (NaN or Inf), so perplexity, KL "
                        "and top-1 agreement are not numbers (n/a)\n");
    eval_free(&c);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("eval", st, &err);
}
