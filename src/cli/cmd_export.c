/* cmd_export.c - `mpq export`: writes a job's solution (or a config file) in a deployment
 * format (mpq JSON, llama.cpp tensor-type file, compressed-tensors, KVTuner, HAWQ) and prints
 * the notes that go with it (the llama-quantize command line and KV flags). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq/mpq_config.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_export.h"
#include "mpq/mpq_job.h"
#include "mpq/mpq_model.h"

static const char *export_help =
    "usage: mpq export JOB[:SOLUTION] --format FMT -o FILE [--db PATH] [--model M] [options]\n"
    "       mpq export --config FILE --model M --format FMT -o FILE [options]\n"
    "       mpq export JOB --format imatrix|imatrix-dat -o FILE [--db PATH]\n"
    "\n"
    "Writes a solution of a job (JOB alone: its newest optimal/feasible solution; JOB:NAME or\n"
    "--solution NAME|ID: that one), or a config file without a database, in the format FMT.\n"
    "Notes (the command to run next, KV flags, collapsed plans, what the target refuses) go\n"
    "to stdout (to stderr when -o -). Only imatrix needs the model file: it runs the job's\n"
    "calibration again and says which file and SHA-256 it needs when that file is gone.\n"
    "\n"
    "FMT:\n"
    "  mpq                 versioned mpq JSON: the config (loadable by mpq eval --config) plus\n"
    "                      model fingerprint, per-layer bits/bytes, KV pairs, scheme, budgets,\n"
    "                      solver and job provenance, totals\n"
    "  llamacpp            llama-quantize --tensor-type-file: '^<GGUF tensor>$=<type>' per line,\n"
    "                      types chosen by bits per weight (never fewer) with llama-quantize's\n"
    "                      row-length fallback applied; prints the command and -ctk/-ctv\n"
    "  compressed-tensors  {\"quantization_config\": ...} for a HF config.json (vLLM); fused\n"
    "                      q/k/v and gate/up must share a scheme (else exit 5); warns where vLLM\n"
    "                      refuses (bits other than 4/8, groups not dividing the inputs)\n"
    "  kvtuner             {\"0\": {\"nbits_key\": 8, \"nbits_value\": 4}, ...}\n"
    "  kvtuner-yaml        the same as YAML\n"
    "  hawq                {\"model.layers.0.self_attn.q_proj\": 4, ...}\n"
    "  imatrix             llama.cpp importance matrix (GGUF) from the job's calibration:\n"
    "                      per layer the sum of squared inputs per column and the token count\n"
    "  imatrix-dat         the same in the legacy .dat layout\n"
    "  sglang-kv           --kv-cache-dtype D --kv-cache-per-layer-dtype 0-1:bf16,... (proposal)\n"
    "  trtllm-kv           0-3:fp8,4-35:nvfp4 (TensorRT-LLM per-layer KV range string, proposal)\n"
    "  vllm-kv             --kv-cache-dtype fp8_e4m3 --kv-cache-dtype-skip-layers I ...\n"
    "  llamacpp-kv         -ctk/-ctv with -ctk-first/-ctk-last/-ctv-first/-ctv-last (ik_llama.cpp)\n"
    "  gptqmodel           GPTQModel QuantizeConfig JSON with \"dynamic\" regex overrides\n"
    "  autoround           AutoRound arguments JSON with \"layer_config\"\n"
    "  modelopt            NVIDIA ModelOpt QUANT_CFG (Python) with wildcard patterns\n"
    "\n"
    "  -f, --format FMT         output format (required)\n"
    "  -o, --output FILE        output file, - for stdout (required; a file for imatrix)\n"
    "  -d, --db PATH            results database (default: $MPQ_DB, else ./mpq.db)\n"
    "  -s, --solution S         solution name or id (instead of JOB:S)\n"
    "  -c, --config FILE        export a config file instead of a solution (needs --model)\n"
    "  -m, --model M            model (default for a job: the job's model)\n"
    "      --imatrix FILE       llamacpp: importance matrix for llama-quantize (allows iq3_xxs)\n"
    "      --skip-imatrix-types llamacpp: without --imatrix, round up past iq3_xxs instead of failing\n"
    "      --embedding-type T   llamacpp: token embedding / output type (default f16)\n"
    "      --gguf IN[:OUT]      llamacpp: GGUF files named in the command (default model-f32.gguf)\n"
    "      --strict             refuse (exit 6) instead of warning where the target would not load\n"
    "                           the file or a layer/block had to be collapsed\n"
    "  -h, --help               this help\n"
    "\n"
    "Exit codes: 0 ok, 2 usage, 3 I/O (imatrix: model file missing), 4 bad config file,\n"
    "5 invalid (fused shards disagree, imatrix type without --imatrix, model file changed),\n"
    "6 unsupported candidate for the format or refused by --strict, 7 database,\n"
    "10 job or solution not found.\n";

/* imatrix: the job's calibration again (needs the model file), written as binary */
static mpq_status export_imatrix(mpq_db *db, const char *job, bool gguf, const char *out, mpq_err *err) {
    mpq_job *j = NULL;
    mpq_imatrix *im = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    FILE *f = NULL;
    mpq_status st;
    if ((st = mpq_job_open(db, job, &j, err)) != MPQ_OK) goto done;
    if ((st = mpq_imatrix_from_job(j, &im, err)) != MPQ_OK) goto done;
    if ((st = mpq_imatrix_serialize(im, gguf, &buf, &len, err)) != MPQ_OK) goto done;
    if (!(f = fopen(out, "wb"))) {
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: cannot open for writing: %s", out, strerror(errno));
        goto done;
    }
    if (fwrite(buf, 1, len, f) != len || fflush(f) != 0)
        st = mpq_err_set(err, MPQ_ERR_IO, "%s: write failed: %s", out, strerror(errno));
    if (fclose(f) != 0 && st == MPQ_OK) st = mpq_err_set(err, MPQ_ERR_IO, "%s: close failed: %s", out, strerror(errno));
    if (st != MPQ_OK) goto done;
    printf("wrote %s (%s, %d tensors, %lld tokens in %d windows of %d from %s)\n", out, gguf ? "imatrix" : "imatrix-dat",
           im->n_entries, (long long)im->n_tokens, im->n_chunks, im->chunk_size, im->dataset);
    printf("llama-quantize --imatrix %s --tensor-type-file tensor-types.txt model-f32.gguf model-mpq.gguf Q4_K_M\n", out);
    printf("note: with it, mpq export %s --format llamacpp --imatrix %s may use iq3_xxs on rows of 256k columns\n",
           job, out);
done:
    free(buf);
    mpq_imatrix_free(im);
    mpq_job_close(j);
    return st;
}

int cli_export(int argc, char **argv) {
    enum { OPT_IMATRIX = 1000, OPT_SKIP, OPT_EMB, OPT_GGUF, OPT_STRICT };
    static const struct option opts[] = {
        {"format", required_argument, 0, 'f'}, {"output", required_argument, 0, 'o'},
        {"db", required_argument, 0, 'd'},     {"solution", required_argument, 0, 's'},
        {"config", required_argument, 0, 'c'}, {"model", required_argument, 0, 'm'},
        {"imatrix", required_argument, 0, OPT_IMATRIX}, {"skip-imatrix-types", no_argument, 0, OPT_SKIP},
        {"embedding-type", required_argument, 0, OPT_EMB}, {"gguf", required_argument, 0, OPT_GGUF},
        {"strict", no_argument, 0, OPT_STRICT},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *fmt = NULL, *out = NULL, *dbpath = NULL, *sol = NULL, *config = NULL, *modelp = NULL;
    char gguf_in[1024] = "", *gguf_out = NULL;
    mpq_export_opts eo = mpq_export_opts_default();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:o:d:s:c:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'o': out = optarg; break;
        case 'd': dbpath = optarg; break;
        case 's': sol = optarg; break;
        case 'c': config = optarg; break;
        case 'm': modelp = optarg; break;
        case OPT_IMATRIX: eo.imatrix_path = optarg; break;
        case OPT_SKIP: eo.skip_imatrix_types = true; break;
        case OPT_EMB: eo.embedding_type = optarg; break;
        case OPT_STRICT: eo.strict = true; break;
        case OPT_GGUF:
            snprintf(gguf_in, sizeof gguf_in, "%s", optarg);
            gguf_out = strchr(gguf_in, ':');
            if (gguf_out) *gguf_out++ = '\0';
            eo.model_gguf = gguf_in;
            if (gguf_out && *gguf_out) eo.output_gguf = gguf_out;
            break;
        case 'h': fputs(export_help, stdout); return MPQ_EXIT_OK;
        default: return cli_usage_error("export", "bad option");
        }
    }
    if (!fmt) return cli_usage_error("export", "--format is required");
    if (!out) return cli_usage_error("export", "-o FILE is required");
    const char *target = optind < argc ? argv[optind] : NULL;
    if (optind + 1 < argc) return cli_usage_error("export", "unexpected argument '%s'", argv[optind + 1]);
    if (config && target) return cli_usage_error("export", "give either JOB[:SOLUTION] or --config, not both");
    if (!config && !target) return cli_usage_error("export", "give JOB[:SOLUTION] or --config FILE --model M");
    if (config && !modelp) return cli_usage_error("export", "--config needs --model");

    mpq_err err = {0};
    mpq_status st = MPQ_OK;
    mpq_export_format f;
    mpq_db *db = NULL;
    mpq_model *model = NULL, *jmodel = NULL;
    mpq_config *cfg = NULL;
    mpq_export_plan *plan = NULL;
    char *text = NULL, *notes = NULL, *job = NULL;
    int rc = MPQ_EXIT_OK;
    if ((st = mpq_export_format_parse(fmt, &f, &err)) != MPQ_OK) return cli_usage_error("export", "%s", err.msg);
    eo.tensor_type_file = strcmp(out, "-") == 0 ? NULL : out;
    if (f == MPQ_EXPORT_LLAMACPP && !eo.tensor_type_file) eo.tensor_type_file = "tensor-types.txt";
    if (f == MPQ_EXPORT_IMATRIX || f == MPQ_EXPORT_IMATRIX_DAT) {
        if (config) return cli_usage_error("export", "%s is computed from a job's calibration: give JOB, not --config", fmt);
        if (strcmp(out, "-") == 0) return cli_usage_error("export", "%s is a binary file: give -o FILE", fmt);
        if (strchr(target, ':') || sol) return cli_usage_error("export", "%s does not depend on a solution: give JOB", fmt);
        if ((st = mpq_db_open(dbpath ? dbpath : cli_default_db(), MPQ_DB_READONLY, &db, &err)) != MPQ_OK) goto done;
        st = export_imatrix(db, target, f == MPQ_EXPORT_IMATRIX, out, &err);
        goto done;
    }

    if (modelp && (st = mpq_model_load(modelp, &model, &err)) != MPQ_OK) goto done;
    if (config) {
        if ((st = mpq_config_load(config, model, &cfg, &err)) != MPQ_OK) goto done;
        if ((st = mpq_export_plan_build(model, cfg, NULL, &plan, &err)) != MPQ_OK) goto done;
    } else {
        job = malloc(strlen(target) + 1);
        if (!job) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        strcpy(job, target);
        char *colon = strchr(job, ':');
        if (colon) {
            *colon = '\0';
            if (sol) {
                rc = cli_usage_error("export", "give the solution as JOB:SOLUTION or --solution, not both");
                goto done;
            }
            sol = colon + 1;
        }
        if ((st = mpq_db_open(dbpath ? dbpath : cli_default_db(), MPQ_DB_READONLY, &db, &err)) != MPQ_OK) goto done;
        if ((st = mpq_export_plan_from_db(db, job, sol, model, &jmodel, &cfg, &plan, &err)) != MPQ_OK) goto done;
    }
    if ((st = mpq_export_render(plan, f, &eo, &text, &notes, &err)) != MPQ_OK) goto done;
    bool to_stdout = strcmp(out, "-") == 0;
    if ((st = cli_write_text(out, text, &err)) != MPQ_OK) goto done;
    FILE *nf = to_stdout ? stderr : stdout;
    if (!to_stdout)
        fprintf(nf, "wrote %s (%s, %d layers, %d blocks%s%s%s)\n", out, mpq_export_format_name(f), plan->n_layers,
                plan->n_blocks, plan->solution_name ? ", solution " : "", plan->solution_name ? plan->solution_name : "",
                "");
    if (notes && *notes) fputs(notes, nf);
done:
    if (st != MPQ_OK) rc = cli_fail("export", st, &err);
    free(text);
    free(notes);
    free(job);
    mpq_export_plan_free(plan);
    mpq_config_free(cfg);
    mpq_model_free(jmodel);
    mpq_model_free(model);
    mpq_db_close(db);
    return rc;
}
