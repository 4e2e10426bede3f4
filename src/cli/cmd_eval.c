/* cmd_eval.c - `mpq eval`: perplexity, KL(FP || quantized) and top-1 agreement of a model,
 * optionally quantized by a config (weights and KV cache), with sizes of that config. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_exec.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_tokenizer.h"

static const char *eval_help =
    "usage: mpq eval --model MODEL --data DATA [options]\n"
    "\n"
    "Runs MODEL over DATA in windows of --seq-len tokens and prints perplexity and\n"
    "cross-entropy; with --config (or --weights / --kv) the model is quantized as\n"
    "configured and compared with the full-precision model on the same windows:\n"
    "KL(P_fp || P_q) per next-token distribution (mean and standard error over windows)\n"
    "and top-1 agreement. Same inputs and seed give identical numbers.\n"
    "\n"
    "  -m, --model PATH        llama2.c checkpoint or Hugging Face directory\n"
    "  -d, --data PATH         text file (tokenized with --tokenizer), or .u16 / .u32 token file\n"
    "  -t, --tokenizer PATH    llama2.c tokenizer.bin (needed for text data)\n"
    "  -c, --config PATH       quantized config (JSON, see README)\n"
    "  -w, --weights CAND      quantize every linear layer with CAND (e.g. int4g32)\n"
    "  -k, --kv PAIR           quantize every layer's KV cache with PAIR (e.g. k4v2)\n"
    "      --kv-mode MODE      kivi (default) | per-token;  --kv-group G (32);  --kv-residual R (0)\n"
    "  -L, --seq-len T         tokens per window (default min(256, model seq len))\n"
    "  -n, --n-seqs N          windows to evaluate (default 0 = all)\n"
    "  -s, --seed S            window sampling seed (default 1)\n"
    "  -b, --batch B           windows per forward batch (default 8)\n"
    "      --json              print the result as JSON\n"
    "  -o, --json-out FILE     also write the JSON result to FILE\n"
    "      --logits-out FILE   write the logits of every evaluated position: float32\n"
    "                          little-endian, shape (n_seqs, seq_len, vocab), row-major, windows\n"
    "                          in evaluation order (of the quantized model when quantized)\n"
    "  -h, --help              this help\n";

typedef struct eval_args {
    const char *model, *data, *tokenizer, *config, *weights, *kv, *kv_mode, *json_out, *logits_out;
    long seq_len, n_seqs, seed, batch, kv_group, kv_residual;
    bool json;
} eval_args;

static int parse_args(int argc, char **argv, eval_args *a) {
    enum { OPT_JSON = 1000, OPT_LOGITS, OPT_KVMODE, OPT_KVGROUP, OPT_KVRES };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"data", required_argument, 0, 'd'},
        {"tokenizer", required_argument, 0, 't'}, {"config", required_argument, 0, 'c'},
        {"weights", required_argument, 0, 'w'}, {"kv", required_argument, 0, 'k'},
        {"kv-mode", required_argument, 0, OPT_KVMODE}, {"kv-group", required_argument, 0, OPT_KVGROUP},
        {"kv-residual", required_argument, 0, OPT_KVRES}, {"seq-len", required_argument, 0, 'L'},
        {"n-seqs", required_argument, 0, 'n'},  {"seed", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'},   {"json", no_argument, 0, OPT_JSON},
        {"json-out", required_argument, 0, 'o'}, {"logits-out", required_argument, 0, OPT_LOGITS},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->seed = 1;
    a->batch = 8;
    a->kv_group = -1;
    a->kv_residual = -1;
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
    return 0;
}

/* Builds the config from --config or --weights/--kv and the --kv-* overrides; NULL *out = FP. */
static mpq_status build_config(const eval_args *a, const mpq_model *m, mpq_config **out, mpq_err *err) {
    *out = NULL;
    bool kv_opts = a->kv_mode || a->kv_group >= 0 || a->kv_residual >= 0;
    if (!a->config && !a->weights && !a->kv && !kv_opts) return MPQ_OK;
    mpq_status st;
    if (a->config) st = mpq_config_load(a->config, m, out, err);
    else st = mpq_config_uniform(m, a->weights ? a->weights : "f32", a->kv ? a->kv : "k16v16", out, err);
    if (st != MPQ_OK || !kv_opts) return st;
    mpq_kv_scheme s = *mpq_config_kv_scheme(*out);
    if (a->kv_mode && (st = mpq_kv_mode_parse(a->kv_mode, &s.mode, err)) != MPQ_OK) return st;
    if (a->kv_group >= 0) s.group_size = (int)a->kv_group;
    if (a->kv_residual >= 0) s.residual = (int)a->kv_residual;
    return mpq_config_set_kv_scheme(*out, &s, err);
}

typedef struct eval_result {
    mpq_eval_stats fp, q;
    bool quantized;
    mpq_config_stats sizes;
    int n_seqs, seq_len;
    double seconds;
} eval_result;

static void write_json(FILE *f, const eval_args *a, const mpq_model *m, const mpq_data *d, const eval_result *r) {
    fprintf(f, "{\n  \"model\": \"%s\",\n  \"data\": \"%s\",\n  \"data_sha256\": \"%s\",\n", mpq_model_path(m),
            a->data, mpq_data_sha256(d));
    fprintf(f, "  \"config\": %s%s%s,\n", a->config ? "\"" : "", a->config ? a->config : "null", a->config ? "\"" : "");
    fprintf(f, "  \"seq_len\": %d,\n  \"n_seqs\": %d,\n  \"seed\": %ld,\n  \"n_tokens\": %lld,\n", r->seq_len, r->n_seqs,
            a->seed, (long long)r->q.n_tokens);
    fprintf(f, "  \"fp_ppl\": %.17g,\n  \"fp_ce\": %.17g,\n", r->fp.ppl, r->fp.ce);
    fprintf(f, "  \"ppl\": %.17g,\n  \"ce\": %.17g,\n  \"kl\": %.17g,\n  \"kl_stderr\": %.17g,\n  \"top1\": %.17g,\n",
            r->q.ppl, r->q.ce, r->q.kl_mean, r->q.kl_se, r->q.top1);
    fprintf(f, "  \"avg_weight_bits\": %.17g,\n  \"weight_bytes\": %lld,\n  \"linear_bytes\": %lld,\n",
            r->sizes.avg_weight_bits, (long long)r->sizes.total_weight_bytes, (long long)r->sizes.linear_bytes);
    fprintf(f, "  \"avg_kv_bits\": %.17g,\n  \"kv_bytes_per_token\": %.17g,\n  \"seconds\": %.3f\n}\n",
            r->sizes.avg_kv_bits, r->sizes.kv_bytes_per_token, r->seconds);
}

int cli_eval(int argc, char **argv) {
    eval_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? MPQ_EXIT_OK : rc;

    mpq_err err = {0};
    mpq_status st = MPQ_OK;
    mpq_model *m = NULL;
    mpq_tokenizer *tok = NULL;
    mpq_data *d = NULL;
    mpq_data_seqs *seqs = NULL;
    mpq_config *cfg = NULL, *fpcfg = NULL;
    mpq_weights *qw = NULL;
    mpq_exec *ex = NULL;
    float *ref = NULL, *logits = NULL;
    int *tokens = NULL;
    FILE *lf = NULL;
    eval_result r;
    memset(&r, 0, sizeof r);

    if ((st = mpq_model_load(a.model, &m, &err)) != MPQ_OK) goto done;
    const mpq_model_config *mc = mpq_model_get_config(m);
    if (a.tokenizer && (st = mpq_tokenizer_load(a.tokenizer, mc->vocab_size, &tok, &err)) != MPQ_OK) goto done;
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mc->vocab_size;
    if ((st = mpq_data_load(a.data, tok, &dopt, &d, &err)) != MPQ_OK) goto done;
    int T = a.seq_len ? (int)a.seq_len : (mc->seq_len < 256 ? mc->seq_len : 256);
    if (T > mc->seq_len) {
        st = mpq_err_set(&err, MPQ_ERR_INVALID, "--seq-len %d exceeds the model's seq len %d", T, mc->seq_len);
        goto done;
    }
    if ((st = mpq_data_sequences(d, T, (int)a.n_seqs, (uint64_t)a.seed, &seqs, &err)) != MPQ_OK) goto done;
    if (seqs->n_seqs == 0) {
        st = mpq_err_set(&err, MPQ_ERR_INVALID, "%s: %zu tokens hold no window of %d+1 tokens", a.data,
                         mpq_data_n_tokens(d), T);
        goto done;
    }
    r.n_seqs = seqs->n_seqs;
    r.seq_len = T;
    if ((st = build_config(&a, m, &cfg, &err)) != MPQ_OK) goto done;
    r.quantized = cfg != NULL;
    if (!cfg && (st = mpq_config_uniform(m, "f32", "k16v16", &fpcfg, &err)) != MPQ_OK) goto done;
    if ((st = mpq_config_get_stats(cfg ? cfg : fpcfg, m, T, &r.sizes, &err)) != MPQ_OK) goto done;

    const mpq_weights *fw = mpq_model_get_weights(m);
    const mpq_weights *w = fw;
    mpq_exec_opts qopt = mpq_exec_opts_default();
    mpq_kv_pair *pairs = NULL;
    if (cfg) {
        if ((st = mpq_weights_clone(m, &qw, &err)) != MPQ_OK) goto done;
        if ((st = mpq_config_apply(cfg, m, qw, &err)) != MPQ_OK) goto done;
        w = qw;
        pairs = mpq_calloc((size_t)mc->n_layers, sizeof *pairs);
        if (!pairs) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int l = 0; l < mc->n_layers; l++) pairs[l] = mpq_config_kv(cfg, l);
        qopt.kv_pairs = pairs;
        qopt.n_kv_pairs = mc->n_layers;
        qopt.kv_scheme = *mpq_config_kv_scheme(cfg);
    }
    int B = (int)a.batch < seqs->n_seqs ? (int)a.batch : seqs->n_seqs;
    if ((st = mpq_exec_create(m, B, T, &ex, &err)) != MPQ_OK) goto done_pairs;
    size_t per_batch;
    if (!mpq_size_mul3((size_t)B, (size_t)T, (size_t)mc->vocab_size, &per_batch) ||
        !(ref = mpq_calloc(per_batch, sizeof *ref)) || !(logits = mpq_calloc(per_batch, sizeof *logits)) ||
        !(tokens = mpq_calloc((size_t)B * (size_t)(T + 1), sizeof *tokens))) {
        st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory for %d x %d x %d logits", B, T, mc->vocab_size);
        goto done_pairs;
    }
    if (a.logits_out && !(lf = fopen(a.logits_out, "wb"))) {
        st = mpq_err_set(&err, MPQ_ERR_IO, "%s: cannot create: %s", a.logits_out, strerror(errno));
        goto done_pairs;
    }
    double t0 = mpq_time_now();
    for (int s0 = 0; s0 < seqs->n_seqs; s0 += B) {
        int nb = seqs->n_seqs - s0 < B ? seqs->n_seqs - s0 : B;
        for (size_t i = 0; i < (size_t)nb * (size_t)(T + 1); i++)
            tokens[i] = seqs->tokens[(size_t)s0 * (size_t)(T + 1) + i];
        /* FP pass: its log-softmax is the reference of the quantized pass on the same batch. */
        mpq_eval_io fio = {.logprobs_out = ref, .logits_out = r.quantized ? NULL : logits};
        if ((st = mpq_exec_eval(ex, fw, NULL, tokens, nb, T, &fio, &r.fp, &err)) != MPQ_OK) goto done_pairs;
        if (r.quantized) {
            mpq_eval_io qio = {.ref_logprobs = ref, .logits_out = logits};
            if ((st = mpq_exec_eval(ex, w, &qopt, tokens, nb, T, &qio, &r.q, &err)) != MPQ_OK) goto done_pairs;
        }
        if (lf) {
            size_t n = (size_t)nb * (size_t)T * (size_t)mc->vocab_size;
            if (fwrite(logits, sizeof *logits, n, lf) != n) {
                st = mpq_err_set(&err, MPQ_ERR_IO, "%s: write failed: %s", a.logits_out, strerror(errno));
                goto done_pairs;
            }
        }
    }
    r.seconds = mpq_time_now() - t0;
    if (!r.quantized) {
        r.q = r.fp;
        r.q.kl_mean = 0;
        r.q.kl_se = 0;
        r.q.top1 = 1;
    }
    if (lf) {
        int rc_close = fclose(lf);
        lf = NULL;
        if (rc_close != 0) {
            st = mpq_err_set(&err, MPQ_ERR_IO, "%s: close failed: %s", a.logits_out, strerror(errno));
            goto done_pairs;
        }
    }
    if (a.json) {
        write_json(stdout, &a, m, d, &r);
    } else {
        printf("model %s, data %s: %d windows x %d tokens (seed %ld), %lld scored tokens\n", mpq_model_path(m), a.data,
               r.n_seqs, T, a.seed, (long long)r.q.n_tokens);
        printf("fp         ppl %.4f  ce %.5f nats\n", r.fp.ppl, r.fp.ce);
        if (r.quantized)
            printf("quantized  ppl %.4f  ce %.5f nats  KL %.6g +- %.2g  top-1 agreement %.4f\n", r.q.ppl, r.q.ce,
                   r.q.kl_mean, r.q.kl_se, r.q.top1);
        printf("weights    %.4f bits/weight (linear layers), %lld bytes total\n", r.sizes.avg_weight_bits,
               (long long)r.sizes.total_weight_bytes);
        printf("kv cache   %.4f bits/element, %.1f bytes/token\n", r.sizes.avg_kv_bits, r.sizes.kv_bytes_per_token);
    }
    if (a.json_out) {
        FILE *jf = fopen(a.json_out, "w");
        if (!jf) {
            st = mpq_err_set(&err, MPQ_ERR_IO, "%s: cannot create: %s", a.json_out, strerror(errno));
            goto done_pairs;
        }
        write_json(jf, &a, m, d, &r);
        if (fclose(jf) != 0) st = mpq_err_set(&err, MPQ_ERR_IO, "%s: write failed", a.json_out);
    }
done_pairs:
    free(pairs);
done:
    if (lf) fclose(lf);
    free(tokens);
    free(logits);
    free(ref);
    mpq_exec_free(ex);
    mpq_weights_free(qw);
    mpq_config_free(fpcfg);
    mpq_config_free(cfg);
    mpq_data_seqs_free(seqs);
    mpq_data_free(d);
    mpq_tokenizer_free(tok);
    mpq_model_free(m);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("eval", st, &err);
}
