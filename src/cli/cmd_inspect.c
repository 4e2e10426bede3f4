/* cmd_inspect.c - `mpq inspect MODEL`: a model's configuration and its layer table (text or JSON). */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "mpq/mpq_model.h"

static const char *inspect_help =
    "usage: mpq inspect [--json] MODEL\n"
    "\n"
    "Prints the configuration of MODEL (a llama2.c checkpoint file or a Hugging Face\n"
    "directory with config.json + model.safetensors) and its table of quantizable linear\n"
    "layers: stable name, HF alias, block, kind, rows (out), cols (in), parameters.\n"
    "\n"
    "  --json      print one JSON object instead of the text table\n"
    "  -h, --help  this help\n";

static const char *arch_name(mpq_arch a) {
    switch (a) {
    case MPQ_ARCH_LLAMA: return "llama";
    case MPQ_ARCH_MISTRAL: return "mistral";
    case MPQ_ARCH_QWEN2: return "qwen2";
    }
    return "?";
}

static const char *format_name(mpq_model_format f) {
    switch (f) {
    case MPQ_MODEL_FORMAT_LLAMA2C_LEGACY: return "llama2c-legacy";
    case MPQ_MODEL_FORMAT_LLAMA2C_V1: return "llama2c-v1";
    case MPQ_MODEL_FORMAT_HF: return "hf";
    }
    return "?";
}

/* JSON string output with escaping of the few characters a path or name may hold. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void print_json(const mpq_model *m) {
    const mpq_model_config *c = mpq_model_get_config(m);
    printf("{\n  \"path\": ");
    json_str(stdout, mpq_model_path(m));
    printf(",\n  \"format\": \"%s\",\n  \"arch\": \"%s\",\n  \"dtype\": ", format_name(c->format), arch_name(c->arch));
    json_str(stdout, c->source_dtype);
    printf(",\n  \"dim\": %d,\n  \"hidden_dim\": %d,\n  \"n_layers\": %d,\n  \"n_heads\": %d,\n"
           "  \"n_kv_heads\": %d,\n  \"head_dim\": %d,\n  \"vocab_size\": %d,\n  \"seq_len\": %d,\n"
           "  \"rope_theta\": %.9g,\n  \"norm_eps\": %.9g,\n  \"shared_classifier\": %s,\n  \"qkv_bias\": %s,\n"
           "  \"n_params\": %lld,\n  \"layers\": [",
           c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len,
           (double)c->rope_theta, (double)c->norm_eps, c->shared_classifier ? "true" : "false",
           c->qkv_bias ? "true" : "false", (long long)mpq_model_n_params(m));
    for (int i = 0; i < mpq_model_n_linear(m); i++) {
        const mpq_layer_info *li = mpq_model_linear(m, i);
        printf("%s\n    {\"name\": ", i ? "," : "");
        json_str(stdout, li->name);
        printf(", \"hf_name\": ");
        json_str(stdout, li->hf_name);
        printf(", \"block\": %d, \"kind\": \"%s\", \"rows\": %lld, \"cols\": %lld, \"n_params\": %lld}", li->block,
               mpq_layer_kind_name(li->kind), (long long)li->rows, (long long)li->cols, (long long)li->n_params);
    }
    printf("\n  ]\n}\n");
}

static void print_text(const mpq_model *m) {
    const mpq_model_config *c = mpq_model_get_config(m);
    printf("model      %s\nformat     %s (%s)\narch       %s\n", mpq_model_path(m), format_name(c->format),
           c->source_dtype, arch_name(c->arch));
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

int cli_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'h': fputs(inspect_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("inspect", "bad option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("inspect", "expected one MODEL path");
    mpq_err err = {0};
    mpq_model *m = NULL;
    mpq_status st = mpq_model_load(argv[optind], &m, &err);
    if (st != MPQ_OK) return cli_fail("inspect", st, &err);
    if (json) print_json(m);
    else print_text(m);
    mpq_model_free(m);
    return MPQ_EXIT_OK;
}
