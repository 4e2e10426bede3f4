/* cmd_inspect.c - `mpq inspect`: a model's configuration and its layer table, a tokenizer
 * (size, pieces, an encoding), or a data file (token count, hash, BOS count, id range). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_data.h"
#include "mpq/mpq_model.h"
#include "mpq/mpq_tokenizer.h"

static const char *inspect_help =
    "usage: mpq inspect [--json] MODEL\n"
    "       mpq inspect --tokenizer TOK [--encode TEXT]\n"
    "       mpq inspect --data FILE [--tokenizer TOK]\n"
    "\n"
    "Prints the configuration of MODEL (a llama2.c checkpoint file, a Hugging Face\n"
    "directory with config.json + model.safetensors, or a GGUF file) and its table of\n"
    "quantizable linear layers: stable name, HF alias, block, kind, rows (out), cols (in),\n"
    "parameters.\n"
    "With --tokenizer: the vocabulary size and first pieces, or the ids of --encode TEXT\n"
    "(with BOS). With --data: the token count, SHA-256, BOS count and id range of a text\n"
    "file (tokenized with --tokenizer) or a .u16 / .u32 token file.\n"
    "\n"
    "      --json             print one JSON object instead of the text table (MODEL)\n"
    "  -t, --tokenizer TOK    llama2.c tokenizer.bin, or a GGUF file (its own tokenizer)\n"
    "  -e, --encode TEXT      with --tokenizer: print the ids of TEXT and their pieces\n"
    "  -d, --data FILE        a data file\n"
    "  -h, --help             this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 cannot read, 4 malformed file, 6 unsupported model.\n";

/* A float as the double of its shortest decimal spelling (1e-05, not 9.99999974737875e-06). */
static double float_value(float f) {
    char buf[32];
    for (int p = 6; p < 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

/* One layer-table row as a JSON object (NULL when out of memory). */
static cJSON *layer_json(const mpq_layer_info *li) {
    cJSON *o = cJSON_CreateObject();
    if (cli_json_add_string(o, "name", li->name) && cli_json_add_string(o, "hf_name", li->hf_name) &&
        cli_json_add_number(o, "block", li->block) && cli_json_add_string(o, "kind", mpq_layer_kind_name(li->kind)) &&
        cli_json_add_number(o, "rows", (double)li->rows) && cli_json_add_number(o, "cols", (double)li->cols) &&
        cli_json_add_number(o, "n_params", (double)li->n_params))
        return o;
    cJSON_Delete(o);
    return NULL;
}

/* The model's configuration and layer table as one JSON object (NULL when out of memory).
 * Strings (the path may hold any byte) are escaped by cJSON; a non-finite number is null. */
static cJSON *model_json(const mpq_model *m) {
    const mpq_model_config *c = mpq_model_get_config(m);
    cJSON *o = cJSON_CreateObject();
    bool ok = cli_json_add_string(o, "path", mpq_model_path(m)) &&
              cli_json_add_string(o, "format", mpq_model_format_name(c->format)) &&
              cli_json_add_string(o, "arch", mpq_arch_name(c->arch)) && cli_json_add_string(o, "dtype", c->source_dtype);
    const struct { const char *key; double v; } nums[] = {
        {"dim", c->dim},           {"hidden_dim", c->hidden_dim},
        {"n_layers", c->n_layers}, {"n_heads", c->n_heads},
        {"n_kv_heads", c->n_kv_heads}, {"head_dim", c->head_dim},
        {"vocab_size", c->vocab_size}, {"seq_len", c->seq_len},
        {"rope_theta", float_value(c->rope_theta)}, {"norm_eps", float_value(c->norm_eps)},
    };
    for (size_t i = 0; ok && i < sizeof nums / sizeof nums[0]; i++) ok = cli_json_add_number(o, nums[i].key, nums[i].v);
    ok = ok && cli_json_add_bool(o, "shared_classifier", c->shared_classifier) &&
         cli_json_add_bool(o, "qkv_bias", c->qkv_bias) &&
         cli_json_add_number(o, "n_params", (double)mpq_model_n_params(m));
    cJSON *layers = ok ? cJSON_AddArrayToObject(o, "layers") : NULL;
    ok = layers != NULL;
    for (int i = 0; ok && i < mpq_model_n_linear(m); i++) {
        cJSON *l = layer_json(mpq_model_linear(m, i));
        ok = l && cJSON_AddItemToArray(layers, l);
        if (!ok) cJSON_Delete(l);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int print_json(const mpq_model *m) {
    mpq_err err = {0};
    cJSON *j = model_json(m);
    mpq_status st = cli_write_json(stdout, "stdout", j, &err);
    cJSON_Delete(j);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("inspect", st, &err);
}

static void print_text(const mpq_model *m) {
    const mpq_model_config *c = mpq_model_get_config(m);
    printf("model      %s\nformat     %s (%s)\narch       %s\n", mpq_model_path(m), mpq_model_format_name(c->format),
           c->source_dtype, mpq_arch_name(c->arch));
    printf("dim %d, hidden %d, layers %d, heads %d, kv heads %d (head dim %d), vocab %d, seq len %d\n", c->dim,
           c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len);
    printf("rope theta %g, rms eps %g, classifier %s, qkv bias %s, parameters %lld\n\n", (double)c->rope_theta,
           (double)c->norm_eps, c->shared_classifier ? "shared" : "separate", c->qkv_bias ? "yes" : "no",
           (long long)mpq_model_n_params(m));
    printf("%-18s %-36s %5s %-9s %7s %7s %10s\n", "layer", "hf name", "block", "kind", "rows", "cols", "params");
    int64_t total = 0;
    for (int i = 0; i < mpq_model_n_linear(m); i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        printf("%-18s %-36s %5d %-9s %7lld %7lld %10lld\n", li->name, li->hf_name, li->block,
               mpq_layer_kind_name(li->kind), (long long)li->rows, (long long)li->cols, (long long)li->n_params);
        total += li->n_params;
    }
    printf("%d linear layers, %lld quantizable parameters\n", mpq_model_n_linear(m), (long long)total);
}

/* Prints a piece with control bytes escaped, so one piece stays on one line. */
static void print_piece(const char *p) {
    putchar('[');
    for (; p && *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '\n') fputs("\\n", stdout);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    putchar(']');
}

static int inspect_tokenizer(const char *path, const char *text) {
    mpq_err err = {0};
    mpq_tokenizer *tok = NULL;
    int *ids = NULL, n = 0;
    mpq_status st = mpq_tokenizer_load(path, 0, &tok, &err);
    if (st != MPQ_OK) return cli_fail("inspect", st, &err);
    int nv = mpq_tokenizer_n_vocab(tok);
    printf("tokenizer  %s\npieces     %d\n", path, nv);
    if (text) {
        if ((st = mpq_tokenizer_encode(tok, text, true, false, &ids, &n, &err)) == MPQ_OK) {
            printf("ids       ");
            for (int i = 0; i < n; i++) printf(" %d", ids[i]);
            printf("\npieces    ");
            for (int i = 0; i < n; i++) {
                putchar(' ');
                print_piece(mpq_tokenizer_piece(tok, ids[i]));
            }
            printf("\n");
        }
    } else {
        for (int i = 0; i < nv && i < 8; i++) {
            printf("  %5d  ", i);
            print_piece(mpq_tokenizer_piece(tok, i));
            printf("  score %g\n", (double)mpq_tokenizer_score(tok, i));
        }
        printf("  ...\n");
    }
    free(ids);
    mpq_tokenizer_free(tok);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("inspect", st, &err);
}

static int inspect_data(const char *path, const char *tok_path) {
    mpq_err err = {0};
    mpq_tokenizer *tok = NULL;
    mpq_data *d = NULL;
    mpq_status st = MPQ_OK;
    if (tok_path && (st = mpq_tokenizer_load(tok_path, 0, &tok, &err)) != MPQ_OK) goto done;
    mpq_data_opts o = mpq_data_opts_default();
    if ((st = mpq_data_load(path, tok, &o, &d, &err)) != MPQ_OK) goto done;
    const int32_t *t = mpq_data_tokens(d);
    size_t n = mpq_data_n_tokens(d), n_bos = 0;
    int32_t lo = n ? t[0] : 0, hi = n ? t[0] : 0;
    for (size_t i = 0; i < n; i++) {
        n_bos += t[i] == MPQ_TOKEN_BOS;
        if (t[i] < lo) lo = t[i];
        if (t[i] > hi) hi = t[i];
    }
    printf("data       %s\nsha256     %s\ntokens     %zu\nBOS        %zu\nid range   %d..%d\n", path,
           mpq_data_sha256(d), n, n_bos, (int)lo, (int)hi);
done:
    mpq_data_free(d);
    mpq_tokenizer_free(tok);
    return st == MPQ_OK ? MPQ_EXIT_OK : cli_fail("inspect", st, &err);
}

int cli_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},        {"tokenizer", required_argument, 0, 't'},
                                         {"encode", required_argument, 0, 'e'}, {"data", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    bool json = false;
    const char *tok = NULL, *text = NULL, *data = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "jt:e:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 't': tok = optarg; break;
        case 'e': text = optarg; break;
        case 'd': data = optarg; break;
        case 'h': fputs(inspect_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("inspect", "bad option");
        }
    }
    if (data) {
        if (optind != argc) return cli_usage_error("inspect", "--data takes no MODEL");
        return inspect_data(data, tok);
    }
    if (tok) {
        if (optind != argc) return cli_usage_error("inspect", "--tokenizer takes no MODEL");
        return inspect_tokenizer(tok, text);
    }
    if (text) return cli_usage_error("inspect", "--encode needs --tokenizer");
    if (optind != argc - 1) return cli_usage_error("inspect", "expected one MODEL path");
    mpq_err err = {0};
    mpq_model *m = NULL;
    mpq_status st = mpq_model_load(argv[optind], &m, &err);
    if (st != MPQ_OK) return cli_fail("inspect", st, &err);
    int rc = MPQ_EXIT_OK;
    if (json) rc = print_json(m);
    else print_text(m);
    mpq_model_free(m);
    return rc;
}
