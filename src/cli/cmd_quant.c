/* cmd_quant.c - `mpq quant`: exact bits per weight and normalised squared error of weight
 * candidates on a seeded N(0,1) matrix or on one layer of a model. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_model.h"
#include "mpq/mpq_quant.h"
#include "mpq/mpq_rng.h"

#define QUANT_MAX_DIM 8192
#define QUANT_MAX_ELEMS ((int64_t)1 << 24)
#define QUANT_MAX_CANDS 64

static const char *quant_help =
    "usage: mpq quant (--gaussian ROWSxCOLS [--seed N] | --model MODEL --layer NAME)\n"
    "                 --candidates LIST [--json]\n"
    "\n"
    "Quantizes one matrix with each candidate of LIST (comma separated, e.g.\n"
    "tcq2,tcq3,vq3,nuq3,int4g32) and prints, per candidate, its exact bits per weight for\n"
    "that shape (codes + scales + zeros), its normalised squared error\n"
    "nmse = ||Q(W) - W||^2 / ||W||^2 and the Gaussian distortion-rate value 2^(-2R) at its\n"
    "code rate R.\n"
    "The matrix: --gaussian draws ROWSxCOLS N(0,1) values, row-major, from the project PRNG\n"
    "seeded with N (xoshiro256**, mpq_rng_seed(N)) by Box-Muller pairs (README, \"mpq quant\");\n"
    "--model and --layer take one linear layer of a model (and print the kurtosis of its\n"
    "weights before and after the palette rotation).\n"
    "\n"
    "  -g, --gaussian RxC     a seeded N(0,1) matrix; 1 <= R, C <= 8192, R*C <= 16777216\n"
    "  -s, --seed N           PRNG seed of --gaussian (0..2^63-1, default 1)\n"
    "  -m, --model MODEL      a model (llama2.c file, Hugging Face directory or GGUF)\n"
    "  -l, --layer NAME       with --model: the layer (stable name or HF alias)\n"
    "  -c, --candidates LIST  comma separated candidates (at most 64)\n"
    "      --json             print a JSON array of objects {candidate, rate,\n"
    "                         bits_per_weight, nmse, dr_bound[, kurtosis, kurtosis_rotated]}\n"
    "  -h, --help             this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage (bad shape, seed or option), 3 cannot read the model,\n"
    "4 malformed model, 5 invalid candidate, 6 shape above a candidate's limit or a\n"
    "candidate that needs calibration statistics (saq<R>, saqc<R>),\n"
    "10 layer not found, 11 out of memory.\n";

/* "256x256" -> rows, cols within the caps. */
static bool parse_shape(const char *s, int64_t *rows, int64_t *cols) {
    const char *x = strchr(s, 'x');
    if (!x || x == s || strchr(x + 1, 'x')) return false;
    for (const char *p = s; *p; p++) /* digits only: no sign, space or exponent */
        if (p != x && (*p < '0' || *p > '9')) return false;
    char a[32];
    size_t la = (size_t)(x - s);
    if (la >= sizeof a) return false;
    memcpy(a, s, la);
    a[la] = '\0';
    long r, c;
    if (!cli_parse_int(a, 1, QUANT_MAX_DIM, &r) || !cli_parse_int(x + 1, 1, QUANT_MAX_DIM, &c)) return false;
    if ((int64_t)r * c > QUANT_MAX_ELEMS) return false;
    *rows = r, *cols = c;
    return true;
}

/* Pearson kurtosis E[(x - mu)^4] / var^2 of n values (3 for a Gaussian). */
static double kurtosis(const float *w, size_t n) {
    double mu = 0.0, m2 = 0.0, m4 = 0.0;
    for (size_t i = 0; i < n; i++) mu += w[i];
    mu /= (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = w[i] - mu, d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
    }
    m2 /= (double)n, m4 /= (double)n;
    return m2 > 0.0 ? m4 / (m2 * m2) : NAN;
}

int cli_quant(int argc, char **argv) {
    static const struct option opts[] = {{"gaussian", required_argument, 0, 'g'}, {"seed", required_argument, 0, 's'},
                                         {"model", required_argument, 0, 'm'},    {"layer", required_argument, 0, 'l'},
                                         {"candidates", required_argument, 0, 'c'}, {"json", no_argument, 0, 'J'},
                                         {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    const char *shape = NULL, *model_path = NULL, *layer = NULL, *list = NULL;
    long seed = 1;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "g:s:m:l:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'g': shape = optarg; break;
        case 's':
            if (!cli_parse_int(optarg, 0, LONG_MAX, &seed))
                return cli_usage_error("quant", "--seed '%s': expected an integer 0..%ld", optarg, LONG_MAX);
            break;
        case 'm': model_path = optarg; break;
        case 'l': layer = optarg; break;
        case 'c': list = optarg; break;
        case 'J': json = true; break;
        case 'h': fputs(quant_help, stdout); return MPQ_EXIT_OK;
        default: fputs(quant_help, stderr); return MPQ_EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_usage_error("quant", "unexpected argument '%s'", argv[optind]);
    if (!list) return cli_usage_error("quant", "--candidates is required");
    if (!shape == !model_path) return cli_usage_error("quant", "give exactly one of --gaussian and --model");
    if (model_path && !layer) return cli_usage_error("quant", "--model needs --layer NAME");
    if (!model_path && layer) return cli_usage_error("quant", "--layer needs --model");
    int64_t rows = 0, cols = 0;
    if (shape && !parse_shape(shape, &rows, &cols))
        return cli_usage_error("quant",
                               "--gaussian '%s': expected ROWSxCOLS with 1 <= ROWS, COLS <= %d and ROWS*COLS <= %lld",
                               shape, QUANT_MAX_DIM, (long long)QUANT_MAX_ELEMS);

    mpq_err err = {0};
    mpq_status st = MPQ_OK;
    int rc = MPQ_EXIT_OK;
    mpq_candidate cands[QUANT_MAX_CANDS];
    int n_cands = 0;
    mpq_model *m = NULL;
    float *w = NULL, *q = NULL;
    cJSON *arr = NULL;
    double kurt = NAN, kurt_rot = NAN;

    /* candidates first: a bad name fails before any model is read */
    char *dup = strdup(list);
    if (!dup) {
        st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (char *save = NULL, *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n_cands == QUANT_MAX_CANDS) {
            free(dup);
            return cli_usage_error("quant", "--candidates: more than %d candidates", QUANT_MAX_CANDS);
        }
        if ((st = mpq_candidate_parse(t, &cands[n_cands], &err)) != MPQ_OK) {
            free(dup);
            goto fail;
        }
        if (mpq_candidate_is_saq(&cands[n_cands])) { /* refused before any output */
            st = mpq_err_set(&err, MPQ_ERR_UNSUPPORTED,
                             "candidate %s needs the layer's calibration statistics X^T X, which mpq quant does not "
                             "compute (measure it in a job: weight_error stage)",
                             cands[n_cands].name);
            free(dup);
            goto fail;
        }
        n_cands++;
    }
    free(dup);
    if (n_cands == 0) return cli_usage_error("quant", "--candidates '%s': no candidate", list);

    const char *what_name = "gaussian";
    if (model_path) {
        if ((st = mpq_model_load(model_path, &m, &err)) != MPQ_OK) goto fail;
        int li = mpq_model_find_linear(m, layer);
        if (li < 0) {
            st = mpq_err_set(&err, MPQ_ERR_NOTFOUND, "%s: no linear layer '%s' (see mpq inspect)", model_path, layer);
            goto fail;
        }
        const mpq_layer_info *info = mpq_model_linear(m, li);
        rows = info->rows, cols = info->cols;
        what_name = info->name;
        if (rows > QUANT_MAX_DIM || cols > QUANT_MAX_DIM || rows * cols > QUANT_MAX_ELEMS) {
            st = mpq_err_set(&err, MPQ_ERR_UNSUPPORTED, "%s: layer %s: %lldx%lld is above the limit of mpq quant",
                             model_path, info->name, (long long)rows, (long long)cols);
            goto fail;
        }
        w = malloc((size_t)(rows * cols) * sizeof *w);
        q = malloc((size_t)(rows * cols) * sizeof *q);
        if (!w || !q) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
        const float *src = mpq_weights_linear_f32(mpq_model_get_weights(m), info, w);
        if (src != w) memcpy(w, src, (size_t)(rows * cols) * sizeof *w);
        memcpy(q, w, (size_t)(rows * cols) * sizeof *q);
        kurt = kurtosis(w, (size_t)(rows * cols));
        if ((st = mpq_palette_rotate(q, rows, cols, false, &err)) != MPQ_OK) goto fail;
        kurt_rot = kurtosis(q, (size_t)(rows * cols));
    } else {
        size_t n = (size_t)(rows * cols);
        w = malloc(n * sizeof *w);
        q = malloc(n * sizeof *q);
        if (!w || !q) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
        mpq_rng r;
        mpq_rng_seed(&r, (uint64_t)seed);
        for (size_t i = 0; i < n; i += 2) {
            /* Box-Muller: rad = sqrt(-2 ln(1 - u1)), cos / sin of 2 pi u2 */
            double u1 = mpq_rng_uniform(&r), u2 = mpq_rng_uniform(&r);
            double rad = sqrt(-2.0 * log(1.0 - u1)), th = 2.0 * 3.14159265358979323846 * u2;
            w[i] = (float)(rad * cos(th));
            if (i + 1 < n) w[i + 1] = (float)(rad * sin(th));
        }
    }
    double norm = 0.0;
    for (int64_t i = 0; i < rows * cols; i++) norm += (double)w[i] * (double)w[i];

    if (json && !(arr = cJSON_CreateArray())) {
        st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!json) {
        if (model_path)
            printf("matrix %s layer %s, %lldx%lld, kurtosis %.4f, after rotation %.4f\n", model_path, what_name,
                   (long long)rows, (long long)cols, kurt, kurt_rot);
        else
            printf("matrix gaussian %lldx%lld, seed %ld\n", (long long)rows, (long long)cols, seed);
        printf("%-12s %8s %16s %12s %12s\n", "candidate", "rate", "bits_per_weight", "nmse", "2^(-2R)");
    }
    for (int k = 0; k < n_cands; k++) {
        memcpy(q, w, (size_t)(rows * cols) * sizeof *q);
        if ((st = mpq_quantize_matrix_checked(&cands[k], q, rows, cols, &err)) != MPQ_OK) goto fail;
        double e = 0.0;
        for (int64_t i = 0; i < rows * cols; i++) {
            double d = (double)q[i] - (double)w[i];
            e += d * d;
        }
        double nmse = norm > 0.0 ? e / norm : NAN;
        double bpw = mpq_candidate_bits_matrix(&cands[k], rows, cols);
        double bound = exp2(-2.0 * cands[k].rate);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            bool ok = o && cJSON_AddItemToArray(arr, o) && cli_json_add_string(o, "candidate", cands[k].name) &&
                      cli_json_add_number(o, "rate", cands[k].rate) &&
                      cli_json_add_number(o, "bits_per_weight", bpw) && cli_json_add_number(o, "nmse", nmse) &&
                      cli_json_add_number(o, "dr_bound", bound);
            if (ok && model_path)
                ok = cli_json_add_number(o, "kurtosis", kurt) && cli_json_add_number(o, "kurtosis_rotated", kurt_rot);
            if (!ok) {
                st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
                goto fail;
            }
        } else {
            printf("%-12s %8g %16.6f %12.6f %12.6f\n", cands[k].name, cands[k].rate, bpw, nmse, bound);
        }
    }
    if (json && (st = cli_write_json(stdout, "stdout", arr, &err)) != MPQ_OK) goto fail;
    goto done;
fail:
    rc = cli_fail("quant", st, &err);
done:
    cJSON_Delete(arr);
    free(w);
    free(q);
    mpq_model_free(m);
    return rc;
}
