/*
 * test_export.c - the export plan and every exporter on the real stories260K model with a
 * fixed mixed config (tests/fixtures/export/mixed.json): golden files for each format, GGUF
 * names of all 35 layers, llama-quantize's row-length fallback (stories260K rows are 64 and
 * 172 long, so every K-quant falls back), the imatrix rule, '#'-free tensor-type files whose
 * regexes match exactly one tensor, fused-shard refusal for compressed-tensors, the mpq JSON
 * loading back with mpq_config_parse, and a solution read from a results database.
 * Regenerate the golden files with MPQ_UPDATE_GOLDEN=1 (then review the diff).
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf.h"
#include "mpq/mpq_calib.h"
#include "mpq/mpq_config.h"
#include "mpq/mpq_data.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_export.h"
#include "test_util.h"
#include "job_fixture.h"
#include "test_main.h"

static mpq_model *g_model;

static void setup(void) {
    mpq_err err = {0};
    if (mpq_model_load(shared_path("models/stories260K/stories260K.bin"), &g_model, &err) != MPQ_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        g_model = NULL;
    }
}

static void teardown(void) {
    mpq_model_free(g_model);
    g_model = NULL;
}

/* tests/fixtures/export/<name>, located from this source file's path */
static const char *fixture(const char *name) {
    static char buf[4096];
    const char *f = __FILE__;
    const char *u = strstr(f, "tests/unit/");
    size_t n = u ? (size_t)(u - f) : 0;
    snprintf(buf, sizeof buf, "%.*stests/fixtures/export/%s", (int)n, f, name);
    return buf;
}

static mpq_export_plan *mixed_plan(mpq_config **cfg_out) {
    mpq_err err = {0};
    mpq_config *cfg = NULL;
    mpq_export_plan *plan = NULL;
    ck_assert_ptr_nonnull(g_model);
    ck_assert_msg(mpq_config_load(fixture("mixed.json"), g_model, &cfg, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_export_plan_build(g_model, cfg, NULL, &plan, &err) == MPQ_OK, "%s", err.msg);
    if (cfg_out) *cfg_out = cfg;
    else mpq_config_free(cfg);
    return plan;
}

static char *render(const mpq_export_plan *plan, mpq_export_format f, bool skip_imatrix, char **notes) {
    mpq_err err = {0};
    mpq_export_opts o = mpq_export_opts_default();
    o.skip_imatrix_types = skip_imatrix;
    char *text = NULL;
    ck_assert_msg(mpq_export_render(plan, f, &o, &text, notes, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_ptr_nonnull(text);
    return text;
}

static void check_golden(const char *text, const char *name) {
    const char *path = fixture(name);
    const char *upd = getenv("MPQ_UPDATE_GOLDEN");
    if (upd && *upd == '1') ck_assert_int_eq(test_write_file(path, text, strlen(text)), 0);
    size_t n = 0;
    char *want = test_read_file(path, &n);
    ck_assert_msg(want != NULL, "missing golden file %s (run with MPQ_UPDATE_GOLDEN=1)", path);
    char *w = malloc(n + 1);
    memcpy(w, want, n);
    w[n] = '\0';
    ck_assert_msg(strcmp(w, text) == 0, "%s differs from the golden file", name);
    free(w);
    free(want);
}

START_TEST(test_golden_all_formats) {
    mpq_export_plan *plan = mixed_plan(NULL);
    static const struct { mpq_export_format f; const char *file; } g[] = {
        {MPQ_EXPORT_MPQ, "mixed.mpq.json"},       {MPQ_EXPORT_LLAMACPP, "mixed.llamacpp.txt"},
        {MPQ_EXPORT_COMPRESSED_TENSORS, "mixed.compressed-tensors.json"},
        {MPQ_EXPORT_KVTUNER, "mixed.kvtuner.json"}, {MPQ_EXPORT_KVTUNER_YAML, "mixed.kvtuner.yaml"},
        {MPQ_EXPORT_HAWQ, "mixed.hawq.json"},
        {MPQ_EXPORT_KV_SGLANG, "mixed.sglang-kv.txt"},   {MPQ_EXPORT_KV_TRTLLM, "mixed.trtllm-kv.txt"},
        {MPQ_EXPORT_KV_VLLM, "mixed.vllm-kv.txt"},       {MPQ_EXPORT_KV_LLAMACPP, "mixed.llamacpp-kv.txt"},
        {MPQ_EXPORT_GPTQMODEL, "mixed.gptqmodel.json"},  {MPQ_EXPORT_AUTOROUND, "mixed.autoround.json"},
        {MPQ_EXPORT_MODELOPT, "mixed.modelopt.py"},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        char *notes = NULL;
        char *t = render(plan, g[i].f, true, &notes);
        check_golden(t, g[i].file);
        free(t);
        free(notes);
    }
    mpq_export_plan_free(plan);
}
END_TEST

START_TEST(test_plan_names_and_totals) {
    mpq_export_plan *plan = mixed_plan(NULL);
    static const char *const kinds[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    static const char *const hf[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    ck_assert_int_eq(plan->n_layers, 35);
    ck_assert_int_eq(plan->n_blocks, 5);
    int64_t sum = 0;
    for (int b = 0; b < 5; b++)
        for (int k = 0; k < 7; k++) {
            const mpq_export_layer *L = &plan->layers[b * 7 + k];
            char want[128];
            snprintf(want, sizeof want, "blk.%d.%s.weight", b, kinds[k]); /* llama.cpp LLM_TENSOR_NAMES */
            ck_assert_str_eq(L->gguf_name, want);
            snprintf(want, sizeof want, "model.layers.%d.%s", b, hf[k]);
            ck_assert_str_eq(L->hf_name, want);
            ck_assert_int_eq(L->cols, k == 6 ? 172 : 64);
            sum += L->bytes;
        }
    ck_assert_int_eq(sum, plan->stats.linear_bytes);
    ck_assert_str_eq(plan->layers[0].cand.name, "int8c");
    ck_assert_str_eq(plan->layers[28].cand.name, "f16"); /* given by its HF alias */
    ck_assert_int_eq(plan->kv[2].k_bits, 4);
    ck_assert_int_eq(plan->kv[2].v_bits, 2);
    ck_assert_int_eq(plan->kv_scheme.residual, 16);
    ck_assert_str_eq(plan->model_file, "stories260K.bin");
    ck_assert_int_eq((int)strlen(plan->model_sha256), 64);
    ck_assert_int_eq(strncmp(plan->model_sha256, "b0a507e7ad0f6266", 16), 0); /* shared/README */
    mpq_export_plan_free(plan);
}
END_TEST

/* Every line is ^<escaped name>$=<type>; its regex (ECMAScript in llama.cpp; these patterns
 * use only ^ $ and \. which mean the same in POSIX ERE) matches its own tensor and no other. */
START_TEST(test_llamacpp_lines) {
    mpq_export_plan *plan = mixed_plan(NULL);
    char *t = render(plan, MPQ_EXPORT_LLAMACPP, true, NULL);
    ck_assert_ptr_null(strchr(t, '#'));
    int n = 0;
    for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n"), n++) {
        ck_assert_int_lt(n, 35);
        char *eq = strrchr(line, '=');
        ck_assert_ptr_nonnull(eq);
        *eq = '\0';
        const char *type = eq + 1;
        ck_assert_ptr_nonnull(mpq_ggml_type_find(type));
        for (const char *c = type; *c; c++) ck_assert(!(*c >= 'A' && *c <= 'Z'));
        ck_assert_int_eq(line[0], '^');
        ck_assert_int_eq(line[strlen(line) - 1], '$');
        regex_t re;
        ck_assert_int_eq(regcomp(&re, line, REG_EXTENDED | REG_NOSUB), 0);
        for (int j = 0; j < 35; j++) {
            int m = regexec(&re, plan->layers[j].gguf_name, 0, NULL, 0) == 0;
            ck_assert_int_eq(m, j == n);
        }
        ck_assert_int_ne(regexec(&re, "blk.0Xattn_q.weight", 0, NULL, 0), 0);
        regfree(&re);
    }
    ck_assert_int_eq(n, 35);
    free(t);
    mpq_export_plan_free(plan);
}
END_TEST

/* Type choice and llama-quantize's fallback. Bytes: rows * cols/block * type_size (ggml
 * type_traits): q5_1 24 B / 32, q5_0 22 B / 32, q4_0 18 B / 32, iq4_nl 18 B / 32, q8_0 34 B / 32,
 * q4_k 144 B / 256, iq3_xxs 98 B / 256, q3_k 110 B / 256. */
START_TEST(test_ggml_fallback) {
    mpq_err err = {0};
    mpq_ggml_choice ch;
    mpq_candidate c;
    static const struct {
        const char *cand;
        int64_t rows, cols;
        const char *req, *res;
        int64_t bytes;
    } t[] = {
        {"int4g32", 64, 64, "q5_k", "q5_1", 64 * 2 * 24},       /* 5.0 bpw; 64 % 256 -> Q5_K->Q5_1 */
        {"int4g32s", 64, 64, "q4_k", "q5_0", 64 * 2 * 22},      /* 4.5 bpw; Q4_K->Q5_0 */
        {"int3g32", 64, 64, "iq4_xs", "iq4_nl", 64 * 2 * 18},   /* 4.0 bpw; IQ4_XS->IQ4_NL */
        {"int2g32", 64, 64, "iq3_xxs", "iq4_nl", 64 * 2 * 18},  /* 3.0 bpw; IQ3_XXS->IQ4_NL, no imatrix */
        {"int2c", 64, 64, "q2_k", "q4_0", 64 * 2 * 18},         /* 2.5 bpw; Q2_K->Q4_0 */
        {"int6g32", 64, 64, "q8_0", "q8_0", 64 * 2 * 34},       /* 7.0 bpw > q6_k 6.5625 */
        {"int5g32", 64, 64, "q6_k", "q8_0", 64 * 2 * 34},       /* 5 + 1 = 6.0 -> Q6_K->Q8_0 */
        {"int5g64", 64, 64, "q5_k", "q5_1", 64 * 2 * 24},       /* 5 + 0.5 = 5.5 -> Q5_K->Q5_1 */
        {"int4g32", 64, 172, "q5_k", "f16", 64 * 172 * 2},      /* 172 % 32 != 0: F16 */
        {"int8c", 64, 172, "q8_0", "f16", 64 * 172 * 2},        /* llama.cpp has no q8_0 fallback */
        {"int4g128", 64, 256, "q4_k", "q4_k", 64 * 144},        /* 4.25 -> iq4_xs? no: 4.25 bits */
        {"f16", 8, 64, "f16", "f16", 8 * 64 * 2},
        {"f32", 8, 64, "f32", "f32", 8 * 64 * 4},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        ck_assert_int_eq(mpq_candidate_parse(t[i].cand, &c, &err), MPQ_OK);
        ck_assert_msg(mpq_export_ggml_choose(&c, t[i].rows, t[i].cols, false, true, &ch, &err) == MPQ_OK, "%s",
                      err.msg);
        if (strcmp(t[i].cand, "int4g128") == 0) {
            /* 4 + 32/128 = 4.25 exactly: iq4_xs (4.25) is the cheapest type with >= bits */
            ck_assert_str_eq(ch.requested->name, "iq4_xs");
            ck_assert_str_eq(ch.resolved->name, "iq4_xs");
            ck_assert_int_eq(ch.bytes, 64 * 136);
            continue;
        }
        ck_assert_msg(strcmp(ch.requested->name, t[i].req) == 0, "%s: requested %s", t[i].cand, ch.requested->name);
        ck_assert_msg(strcmp(ch.resolved->name, t[i].res) == 0, "%s: resolved %s", t[i].cand, ch.resolved->name);
        ck_assert_int_eq(ch.bytes, t[i].bytes);
        ck_assert_int_eq(ch.fallback, strcmp(t[i].req, t[i].res) != 0);
    }
    /* a row of 256: no fallback for K-quants */
    ck_assert_int_eq(mpq_candidate_parse("int4g32s", &c, &err), MPQ_OK);
    ck_assert_int_eq(mpq_export_ggml_choose(&c, 10, 512, false, false, &ch, &err), MPQ_OK);
    ck_assert_str_eq(ch.resolved->name, "q4_k");
    ck_assert_int_eq(ch.bytes, 10 * 2 * 144);
    ck_assert(!ch.fallback);
}
END_TEST

START_TEST(test_imatrix_rule) {
    mpq_err err = {0};
    mpq_ggml_choice ch;
    mpq_candidate c;
    ck_assert_int_eq(mpq_candidate_parse("int2g32", &c, &err), MPQ_OK); /* 3.0 bpw -> iq3_xxs 3.0625 */
    ck_assert_int_eq(mpq_export_ggml_choose(&c, 4, 256, false, false, &ch, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "importance matrix"));
    ck_assert_int_eq(mpq_export_ggml_choose(&c, 4, 256, true, false, &ch, &err), MPQ_OK);
    ck_assert_str_eq(ch.resolved->name, "iq3_xxs");
    ck_assert_int_eq(ch.bytes, 4 * 98);
    ck_assert_int_eq(mpq_export_ggml_choose(&c, 4, 256, false, true, &ch, &err), MPQ_OK);
    ck_assert_str_eq(ch.resolved->name, "q3_k");
    ck_assert_int_eq(ch.bytes, 4 * 110);

    /* llama-quantize applies the row-length fallback BEFORE its imatrix test: on 192 columns
     * iq3_xxs becomes iq4_nl, which needs none; on 512 columns iq3_xxs stays and is refused */
    ck_assert_int_eq(mpq_export_ggml_choose(&c, 4, 192, false, false, &ch, &err), MPQ_OK);
    ck_assert_str_eq(ch.requested->name, "iq3_xxs");
    ck_assert_str_eq(ch.resolved->name, "iq4_nl");
    ck_assert_int_eq(ch.bytes, 4 * 6 * 18);
    ck_assert_int_eq(mpq_export_ggml_choose(&c, 4, 512, false, false, &ch, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "iq3_xxs"));

    /* the stories260K plan with int2g32 on blk.2.attn_o (64 columns): iq3_xxs falls back to
     * iq4_nl (llama.cpp tensor_type_fallback), so no importance matrix is needed */
    mpq_export_plan *plan = mixed_plan(NULL);
    mpq_export_opts o = mpq_export_opts_default();
    char *text = NULL, *notes = NULL;
    ck_assert_msg(mpq_export_render(plan, MPQ_EXPORT_LLAMACPP, &o, &text, &notes, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_ptr_nonnull(strstr(text, "^blk\\.2\\.attn_output\\.weight$=iq4_nl\n"));
    free(text);
    free(notes);
    o.imatrix_path = "imatrix.dat";
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_LLAMACPP, &o, &text, &notes, &err), MPQ_OK);
    ck_assert_ptr_nonnull(strstr(text, "^blk\\.2\\.attn_output\\.weight$=iq4_nl\n"));
    ck_assert_ptr_nonnull(strstr(notes, "--imatrix imatrix.dat"));
    free(text);
    free(notes);
    mpq_export_plan_free(plan);
}
END_TEST

START_TEST(test_llamacpp_notes) {
    mpq_export_plan *plan = mixed_plan(NULL);
    char *notes = NULL;
    char *t = render(plan, MPQ_EXPORT_LLAMACPP, true, &notes);
    /* K bits 4..8, V bits 2..8 -> one global q8_0/q8_0; V quantized -> flash attention */
    ck_assert_ptr_nonnull(strstr(notes, "-ctk q8_0 -ctv q8_0 -fa on"));
    ck_assert_ptr_nonnull(strstr(notes, "collapsed"));
    ck_assert_ptr_nonnull(strstr(notes, "--tensor-type-file tensor-types.txt --token-embedding-type f16 "
                                        "--output-tensor-type f16 model-f32.gguf model-mpq.gguf "));
    ck_assert_ptr_nonnull(strstr(t, "^blk\\.1\\.ffn_down\\.weight$=f16\n")); /* q8_0 on 172 cols */
    free(t);
    free(notes);
    ck_assert_str_eq(mpq_export_llama_kv_type(16), "f16");
    ck_assert_str_eq(mpq_export_llama_kv_type(8), "q8_0");
    ck_assert_str_eq(mpq_export_llama_kv_type(2), "q4_1");
    mpq_export_plan_free(plan);
}
END_TEST

START_TEST(test_mpq_json_loads_back) {
    mpq_config *cfg = NULL, *back = NULL;
    mpq_err err = {0};
    mpq_export_plan *plan = mixed_plan(&cfg);
    char *t = render(plan, MPQ_EXPORT_MPQ, false, NULL);
    ck_assert_msg(mpq_config_parse(t, "export.json", g_model, &back, &err) == MPQ_OK, "%s", err.msg);
    for (int i = 0; i < 35; i++)
        ck_assert_str_eq(mpq_config_layer(back, i)->name, mpq_config_layer(cfg, i)->name);
    for (int b = 0; b < 5; b++) {
        ck_assert_int_eq(mpq_config_kv(back, b).k_bits, mpq_config_kv(cfg, b).k_bits);
        ck_assert_int_eq(mpq_config_kv(back, b).v_bits, mpq_config_kv(cfg, b).v_bits);
    }
    cJSON *j = cJSON_Parse(t);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "mpq_export_version")->valueint, MPQ_EXPORT_VERSION);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "tensors")), 35);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "note")->valuestring,
                     "fixed mixed config for the exporter golden files (tests/unit/test_export.c)");
    /* the totals equal mpq_config_get_stats */
    mpq_config_stats st;
    ck_assert_int_eq(mpq_config_get_stats(cfg, g_model, 0, &st, &err), MPQ_OK);
    cJSON *tot = cJSON_GetObjectItem(j, "totals");
    ck_assert_int_eq((int64_t)cJSON_GetObjectItem(tot, "linear_bytes")->valuedouble, st.linear_bytes);
    /* cJSON prints doubles with 15-17 significant digits: relative error <= 1e-15 */
    ck_assert_double_eq_tol(cJSON_GetObjectItem(tot, "avg_weight_bits")->valuedouble, st.avg_weight_bits, 1e-12);
    cJSON_Delete(j);
    /* exporting the loaded-back config again gives the same text (extra keys kept, replaced) */
    mpq_export_plan *p2 = NULL;
    ck_assert_int_eq(mpq_export_plan_build(g_model, back, NULL, &p2, &err), MPQ_OK);
    char *t2 = render(p2, MPQ_EXPORT_MPQ, false, NULL);
    ck_assert_msg(strcmp(t, t2) == 0, "re-export differs");
    free(t2);
    free(t);
    mpq_export_plan_free(p2);
    mpq_export_plan_free(plan);
    mpq_config_free(back);
    mpq_config_free(cfg);
}
END_TEST

START_TEST(test_compressed_tensors) {
    mpq_export_plan *plan = mixed_plan(NULL);
    char *t = render(plan, MPQ_EXPORT_COMPRESSED_TENSORS, false, NULL);
    cJSON *j = cJSON_Parse(t);
    ck_assert_ptr_nonnull(j);
    cJSON *q = cJSON_GetObjectItem(j, "quantization_config");
    ck_assert_str_eq(cJSON_GetObjectItem(q, "quant_method")->valuestring, "compressed-tensors");
    ck_assert_str_eq(cJSON_GetObjectItem(q, "format")->valuestring, "mixed-precision"); /* int + fp8 groups */
    /* every quantized layer is the target of exactly one group, by an anchored regex */
    int hits[35] = {0};
    cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(q, "config_groups")) {
        cJSON *tg;
        cJSON_ArrayForEach(tg, cJSON_GetObjectItem(g, "targets")) {
            const char *s = tg->valuestring;
            ck_assert_int_eq(strncmp(s, "re:^model\\.layers\\.", 19), 0);
            regex_t re;
            ck_assert_int_eq(regcomp(&re, s + 3, REG_EXTENDED | REG_NOSUB), 0);
            for (int i = 0; i < 35; i++) hits[i] += regexec(&re, plan->layers[i].hf_name, 0, NULL, 0) == 0;
            regfree(&re);
        }
    }
    cJSON *ign = cJSON_GetObjectItem(q, "ignore");
    int n_ign = cJSON_GetArraySize(ign);
    ck_assert_str_eq(cJSON_GetArrayItem(ign, n_ign - 1)->valuestring, "lm_head");
    for (int i = 0; i < 35; i++) {
        bool keep = plan->layers[i].cand.type == MPQ_QTYPE_F16;
        ck_assert_int_eq(hits[i], keep ? 0 : 1);
    }
    ck_assert_int_eq(n_ign, 4 + 1); /* blk.0.ffn_down, blk.4 q/k/v + lm_head */
    cJSON *kv = cJSON_GetObjectItem(q, "kv_cache_scheme");
    ck_assert_int_eq(cJSON_GetObjectItem(kv, "num_bits")->valueint, 8);
    cJSON_Delete(j);
    free(t);
    mpq_export_plan_free(plan);
}
END_TEST

START_TEST(test_fused_shard_refusal) {
    mpq_err err = {0};
    mpq_config *cfg = NULL;
    mpq_export_plan *plan = NULL;
    char *t = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "int4g32", "k8v8", &cfg, &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_set_layer(cfg, 3 * 7 + 5, "int8c", &err), MPQ_OK); /* blk.3.ffn_up */
    ck_assert_int_eq(mpq_export_plan_build(g_model, cfg, NULL, &plan, &err), MPQ_OK);
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_COMPRESSED_TENSORS, NULL, &t, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.3.ffn_gate"));
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.3.ffn_up"));
    ck_assert_ptr_null(t);
    mpq_export_plan_free(plan);
    /* q kept f16 while k/v are quantized is also a disagreement */
    ck_assert_int_eq(mpq_config_set_layer(cfg, 3 * 7 + 5, "int4g32", &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_set_layer(cfg, 7, "f16", &err), MPQ_OK); /* blk.1.attn_q */
    ck_assert_int_eq(mpq_export_plan_build(g_model, cfg, NULL, &plan, &err), MPQ_OK);
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_COMPRESSED_TENSORS, NULL, &t, NULL, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.1.attn_q"));
    mpq_export_plan_free(plan);
    /* nf4 has no compressed-tensors scheme; the other formats take it */
    ck_assert_int_eq(mpq_config_set_layer(cfg, 7, "int4g32", &err), MPQ_OK);
    ck_assert_int_eq(mpq_config_set_layer(cfg, 3, "nf4g64", &err), MPQ_OK);
    ck_assert_int_eq(mpq_export_plan_build(g_model, cfg, NULL, &plan, &err), MPQ_OK);
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_COMPRESSED_TENSORS, NULL, &t, NULL, &err),
                     MPQ_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.0.attn_o"));
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_HAWQ, NULL, &t, NULL, &err), MPQ_OK);
    free(t);
    mpq_export_plan_free(plan);
    mpq_config_free(cfg);
}
END_TEST

START_TEST(test_kvtuner_hawq) {
    mpq_export_plan *plan = mixed_plan(NULL);
    char *t = render(plan, MPQ_EXPORT_KVTUNER, false, NULL);
    cJSON *j = cJSON_Parse(t);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetArraySize(j), 5);
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "2"), "nbits_key")->valueint, 4);
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "2"), "nbits_value")->valueint, 2);
    cJSON_Delete(j);
    free(t);
    t = render(plan, MPQ_EXPORT_HAWQ, false, NULL);
    j = cJSON_Parse(t);
    ck_assert_int_eq(cJSON_GetArraySize(j), 35);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "model.layers.0.self_attn.q_proj")->valueint, 8);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "model.layers.0.mlp.down_proj")->valueint, 16);
    cJSON_Delete(j);
    free(t);
    mpq_export_plan_free(plan);
}
END_TEST

START_TEST(test_format_names) {
    mpq_err err = {0};
    mpq_export_format f;
    static const char *const bad[] = {"", "gguf", "MPQ", "llamacpp ", "kvtuner-yml"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_int_eq(mpq_export_format_parse(bad[i], &f, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_export_format_parse(NULL, &f, &err), MPQ_ERR_INVALID);
    for (int i = 0; i <= MPQ_EXPORT_MODELOPT; i++) {
        ck_assert_int_eq(mpq_export_format_parse(mpq_export_format_name((mpq_export_format)i), &f, &err), MPQ_OK);
        ck_assert_int_eq(f, i);
    }
    ck_assert_ptr_null(mpq_ggml_type_find("q9_k"));
    ck_assert_str_eq(mpq_ggml_type_find("Q4_K")->name, "q4_k");
}
END_TEST

/* The HF copy of the model gives the same names, hashed through model.safetensors. */
START_TEST(test_hf_model_plan) {
    mpq_err err = {0};
    mpq_model *hf = NULL;
    mpq_config *cfg = NULL;
    mpq_export_plan *a = NULL, *b = mixed_plan(NULL);
    ck_assert_msg(mpq_model_load(shared_path("models/stories260K-hf"), &hf, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_msg(mpq_config_load(fixture("mixed.json"), hf, &cfg, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(mpq_export_plan_build(hf, cfg, NULL, &a, &err), MPQ_OK);
    ck_assert_str_eq(a->model_file, "stories260K-hf");
    ck_assert_int_eq((int)strlen(a->model_sha256), 64);
    for (int i = 0; i < 35; i++) {
        ck_assert_str_eq(a->layers[i].gguf_name, b->layers[i].gguf_name);
        ck_assert_str_eq(a->layers[i].hf_name, b->layers[i].hf_name);
        ck_assert_int_eq(a->layers[i].bytes, b->layers[i].bytes);
    }
    char *ta = render(a, MPQ_EXPORT_LLAMACPP, true, NULL), *tb = render(b, MPQ_EXPORT_LLAMACPP, true, NULL);
    ck_assert_msg(strcmp(ta, tb) == 0, "HF and llama2.c exports differ");
    free(ta);
    free(tb);
    mpq_export_plan_free(a);
    mpq_export_plan_free(b);
    mpq_config_free(cfg);
    mpq_model_free(hf);
}
END_TEST

/* A solution stored in a results database: newest feasible by default, by name, by id. */
START_TEST(test_plan_from_db) {
    char dir[256], path[300];
    mpq_err err = {0};
    mpq_db *db = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/e.db", dir);
    ck_assert_int_eq(mpq_db_open(path, MPQ_DB_CREATE, &db, &err), MPQ_OK);
    int64_t mid, jid, s1, s2, s3;
    fixture_store_job(db, g_model, "ab", "j", "[\"int4g32\",\"int8c\"]", false, &mid, NULL, &jid);
    size_t n = 0;
    char *mixed = test_read_file(fixture("mixed.json"), &n);
    ck_assert_ptr_nonnull(mixed);
    mixed = realloc(mixed, n + 1);
    mixed[n] = '\0';
    mpq_db_solution s = {.job_id = jid, .solver = "ilp", .status = "optimal", .metric_expr = "kl",
                         .budgets_json = "{\"bits_per_weight\":5.5}", .config_json = mixed,
                         .objective = 0.25, .bound = NAN, .gap = 0, .seconds = 0.1};
    snprintf(s.name, sizeof s.name, "mixed");
    ck_assert_int_eq(mpq_db_solution_insert(db, &s, NULL, 0, &s1, &err), MPQ_OK);
    snprintf(s.name, sizeof s.name, "later");
    ck_assert_int_eq(mpq_db_solution_insert(db, &s, NULL, 0, &s2, &err), MPQ_OK);
    snprintf(s.name, sizeof s.name, "bad");
    snprintf(s.status, sizeof s.status, "infeasible");
    s.config_json = NULL;
    ck_assert_int_eq(mpq_db_solution_insert(db, &s, NULL, 0, &s3, &err), MPQ_OK);

    mpq_model *own = NULL;
    mpq_config *cfg = NULL;
    mpq_export_plan *plan = NULL;
    ck_assert_msg(mpq_export_plan_from_db(db, "j", NULL, NULL, &own, &cfg, &plan, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_ptr_nonnull(own);
    ck_assert_str_eq(plan->solution_name, "later"); /* newest feasible, not the infeasible one */
    ck_assert_str_eq(plan->solver, "ilp");
    ck_assert_double_eq_tol(plan->objective, 0.25, 1e-15);
    char *t = render(plan, MPQ_EXPORT_MPQ, false, NULL);
    cJSON *j = cJSON_Parse(t);
    cJSON *prov = cJSON_GetObjectItem(j, "provenance");
    ck_assert_str_eq(cJSON_GetObjectItem(prov, "job")->valuestring, "j");
    ck_assert_str_eq(cJSON_GetObjectItem(prov, "solution")->valuestring, "later");
    /* the fingerprint the job recorded, not a hash of the file at that path now */
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "sha256")->valuestring, "ab");
    ck_assert_double_eq_tol(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "budgets"), "bits_per_weight")->valuedouble,
                            5.5, 1e-15);
    cJSON_Delete(j);
    free(t);
    mpq_export_plan_free(plan);
    mpq_config_free(cfg);
    plan = NULL;
    cfg = NULL;
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)s1);
    ck_assert_int_eq(mpq_export_plan_from_db(db, "j", idbuf, g_model, NULL, &cfg, &plan, &err), MPQ_OK);
    ck_assert_str_eq(plan->solution_name, "mixed");
    mpq_export_plan_free(plan);
    mpq_config_free(cfg);
    ck_assert_int_eq(mpq_export_plan_from_db(db, "j", "nope", g_model, NULL, &cfg, &plan, &err), MPQ_ERR_NOTFOUND);
    ck_assert_int_eq(mpq_export_plan_from_db(db, "j", "bad", g_model, NULL, &cfg, &plan, &err), MPQ_ERR_NOTFOUND);
    ck_assert_int_eq(mpq_export_plan_from_db(db, "nojob", NULL, g_model, NULL, &cfg, &plan, &err), MPQ_ERR_NOTFOUND);
    ck_assert_ptr_null(plan);
    mpq_model_free(own);
    free(mixed);
    mpq_db_close(db);
    remove(path);
}
END_TEST

/* compressed-tensors: what vLLM will not load is a warning naming the layer, or with strict a
 * refusal (int3 / int2: WNA16 has 4 and 8 bits; group 32 on 172 inputs: 172 // 32 scales) */
START_TEST(test_ct_vllm_checks) {
    mpq_err err = {0};
    mpq_export_plan *plan = mixed_plan(NULL);
    char *notes = NULL, *t = render(plan, MPQ_EXPORT_COMPRESSED_TENSORS, false, &notes);
    ck_assert_ptr_nonnull(strstr(notes, "vLLM will refuse model.layers.1.self_attn.o_proj (int3g32): num_bits 3"));
    ck_assert_ptr_nonnull(strstr(notes, "model.layers.2.mlp.down_proj (int4g32): group_size 32 does not divide its "
                                        "172 input features: vLLM sizes the group scales as 172 // 32 = 5"));
    ck_assert_ptr_null(strstr(notes, "model.layers.0.self_attn.q_proj (int8c)"));
    free(t);
    free(notes);
    mpq_export_opts o = mpq_export_opts_default();
    o.strict = true;
    t = NULL;
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_COMPRESSED_TENSORS, &o, &t, &notes, &err), MPQ_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.1.attn_o"));
    ck_assert_ptr_nonnull(strstr(err.msg, "only 4 and 8 bits"));
    ck_assert_ptr_null(t);
    mpq_export_plan_free(plan);
}
END_TEST

/* KV engines: the dtype rule, the menu test, collapse notes and --strict refusals */
START_TEST(test_kv_engines) {
    mpq_err err = {0};
    int b = 0;
    ck_assert_str_eq(mpq_kv_engine_dtype(MPQ_KV_ENGINE_TRTLLM, 2, &b), "nvfp4");
    ck_assert_int_eq(b, 4);
    ck_assert_str_eq(mpq_kv_engine_dtype(MPQ_KV_ENGINE_SGLANG, 8, &b), "fp8_e4m3");
    ck_assert_str_eq(mpq_kv_engine_dtype(MPQ_KV_ENGINE_VLLM, 4, &b), "fp8_e4m3");
    ck_assert_int_eq(b, 8);
    ck_assert_str_eq(mpq_kv_engine_dtype(MPQ_KV_ENGINE_VLLM, 16, NULL), "auto");
    ck_assert_str_eq(mpq_kv_engine_dtype(MPQ_KV_ENGINE_LLAMACPP, 3, NULL), "q4_1");
    ck_assert(mpq_kv_engine_offers(MPQ_KV_ENGINE_TRTLLM, (mpq_kv_pair){4, 4}));
    ck_assert(!mpq_kv_engine_offers(MPQ_KV_ENGINE_TRTLLM, (mpq_kv_pair){8, 4})); /* one dtype per layer */
    ck_assert(!mpq_kv_engine_offers(MPQ_KV_ENGINE_VLLM, (mpq_kv_pair){4, 4}));   /* fp8 only */
    ck_assert(mpq_kv_engine_offers(MPQ_KV_ENGINE_LLAMACPP, (mpq_kv_pair){8, 4}));
    ck_assert(!mpq_kv_engine_offers(MPQ_KV_ENGINE_LLAMACPP, (mpq_kv_pair){4, 2}));
    mpq_kv_engine e;
    ck_assert_int_eq(mpq_kv_engine_parse("tgi", &e, &err), MPQ_ERR_INVALID);
    ck_assert_int_eq(mpq_kv_engine_parse("vllm", &e, &err), MPQ_OK);

    mpq_export_plan *plan = mixed_plan(NULL); /* KV k8v4 k4v4 k4v2 k8v8 k8v8 */
    char *notes = NULL, *t = render(plan, MPQ_EXPORT_KV_TRTLLM, false, &notes);
    ck_assert_str_eq(t, "0-0:fp8,1-2:nvfp4,3-4:fp8\n");
    ck_assert_ptr_nonnull(strstr(notes, "block 0 k8v4 -> fp8 for K and V (one dtype per layer for K and V)"));
    ck_assert_ptr_nonnull(strstr(notes, "open PR NVIDIA/TensorRT-LLM#13695"));
    free(t);
    free(notes);
    t = render(plan, MPQ_EXPORT_KV_SGLANG, false, &notes);
    ck_assert_str_eq(t, "--kv-cache-dtype fp8_e4m3 --kv-cache-per-layer-dtype 1-2:fp4_e2m1\n");
    ck_assert_ptr_nonnull(strstr(notes, "is a proposal"));
    free(t);
    free(notes);
    t = render(plan, MPQ_EXPORT_KV_LLAMACPP, false, &notes);
    ck_assert_str_eq(t, "-ctk q4_1 -ctv q4_1 -ctk-first q8_0,1 -ctk-last q8_0,2 -ctv-last q8_0,2 -fa on\n");
    ck_assert_ptr_nonnull(strstr(notes, "block 2 k4v2 -> K q4_1, V q4_1"));
    free(t);
    free(notes);
    mpq_export_opts o = mpq_export_opts_default();
    o.strict = true;
    static const mpq_export_format kvf[] = {MPQ_EXPORT_KV_SGLANG, MPQ_EXPORT_KV_TRTLLM, MPQ_EXPORT_KV_VLLM,
                                            MPQ_EXPORT_KV_LLAMACPP};
    for (size_t i = 0; i < 4; i++) {
        t = NULL;
        ck_assert_int_eq(mpq_export_render(plan, kvf[i], &o, &t, &notes, &err), MPQ_ERR_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(err.msg, "block"));
        ck_assert_ptr_null(t);
    }
    mpq_export_plan_free(plan);

    /* uniform k8v8 with two unquantized blocks: vLLM skip list, nothing collapsed */
    mpq_config *cfg = NULL;
    ck_assert_int_eq(mpq_config_uniform(g_model, "f32", NULL, &cfg, &err), MPQ_OK);
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(mpq_config_set_kv(cfg, k, k == 0 || k == 4 ? (mpq_kv_pair){16, 16} : (mpq_kv_pair){8, 8}, &err),
                         MPQ_OK);
    ck_assert_int_eq(mpq_export_plan_build(g_model, cfg, NULL, &plan, &err), MPQ_OK);
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_KV_VLLM, &o, &t, &notes, &err), MPQ_OK);
    ck_assert_str_eq(t, "--kv-cache-dtype fp8_e4m3 --kv-cache-dtype-skip-layers 0 4\n");
    ck_assert_ptr_nonnull(strstr(notes, "0 of 5 block(s) collapsed"));
    free(t);
    free(notes);
    mpq_export_plan_free(plan);
    mpq_config_free(cfg);
}
END_TEST

/* Python quantizers: fp8 is collapsed to int8 per channel for GPTQModel / AutoRound (kept by
 * ModelOpt), int2/int3 rounded up to 4 bits for ModelOpt; strict refuses naming the layer */
START_TEST(test_pyquant) {
    mpq_err err = {0};
    mpq_export_plan *plan = mixed_plan(NULL);
    char *notes = NULL, *t = render(plan, MPQ_EXPORT_GPTQMODEL, false, &notes);
    cJSON *j = cJSON_Parse(t);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "bits")->valueint, 4);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "group_size")->valueint, 32);
    cJSON *d = cJSON_GetObjectItem(j, "dynamic");
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(d, "-:^model\\.layers\\.0\\.mlp\\.down_proj$"));
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "+:^model\\.layers\\.2\\.self_attn\\.o_proj$"), "bits")
                         ->valueint, 2);
    ck_assert_ptr_nonnull(strstr(notes, "model.layers.4.self_attn.o_proj fp8e4m3 -> int8 per channel"));
    cJSON_Delete(j);
    free(t);
    free(notes);
    t = render(plan, MPQ_EXPORT_AUTOROUND, false, &notes);
    j = cJSON_Parse(t);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "layer_config"),
                                                             "model.layers.0.mlp.down_proj"), "bits")->valueint, 16);
    cJSON_Delete(j);
    free(t);
    free(notes);
    t = render(plan, MPQ_EXPORT_MODELOPT, false, &notes);
    ck_assert_ptr_nonnull(strstr(t, "\"*model.layers.4.self_attn.o_proj.weight_quantizer\": {\"num_bits\": (4, 3)"));
    ck_assert_ptr_nonnull(strstr(notes, "int2g32 -> 4 bits (ModelOpt has no 2-bit integer type)"));
    free(t);
    free(notes);
    mpq_export_opts o = mpq_export_opts_default();
    o.strict = true;
    t = NULL;
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_GPTQMODEL, &o, &t, &notes, &err), MPQ_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.4.attn_o"));
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_MODELOPT, &o, &t, &notes, &err), MPQ_ERR_UNSUPPORTED);
    ck_assert_int_eq(mpq_export_render(plan, MPQ_EXPORT_IMATRIX, &o, &t, &notes, &err), MPQ_ERR_INVALID);
    mpq_export_plan_free(plan);
}
END_TEST

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static float rdf(const unsigned char *p) {
    uint32_t u = rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The importance matrix from a real calibration of stories260K, written in both layouts and
 * read back: GGUF in_sum2 = diag(X^T X / N) * N and counts = N (through mpq's GGUF reader);
 * legacy: int n_entries, per entry int len, name, int ncall, int nval, float values, then the
 * chunk count and dataset name, with values / ncall = diag. Floats are rounded once from
 * double, so the relative tolerance is float epsilon (2^-23 ~ 1.2e-7), doubled. */
START_TEST(test_imatrix_file) {
    mpq_err err = {0};
    mpq_data *data = NULL;
    mpq_data_seqs *seqs = NULL;
    mpq_data_opts dopt = mpq_data_opts_default();
    dopt.vocab_size = mpq_model_get_config(g_model)->vocab_size;
    ck_assert_msg(mpq_data_load(shared_path("data/tinystories-calib.tok512.u16"), NULL, &dopt, &data, &err) == MPQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(mpq_data_sequences(data, 32, 3, 1, &seqs, &err), MPQ_OK);
    int tokens[3 * 33];
    for (int i = 0; i < 3 * 33; i++) tokens[i] = (int)seqs->tokens[i];
    mpq_calib_opts co = mpq_calib_opts_default();
    mpq_calib *cal = NULL;
    ck_assert_int_eq(mpq_calib_create(g_model, tokens, 3, 32, &co, &cal, &err), MPQ_OK);
    mpq_imatrix *im = NULL;
    ck_assert_int_eq(mpq_imatrix_from_calib(cal, g_model, "calib.u16", &im, &err), MPQ_OK);
    ck_assert_int_eq(im->n_entries, 35);
    ck_assert_int_eq(im->n_tokens, 96);
    ck_assert_str_eq(im->entries[3].name, "blk.0.attn_output.weight");
    const double N = 96.0;
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/im.gguf", dir);
    unsigned char *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(mpq_imatrix_serialize(im, true, &buf, &len, &err), MPQ_OK);
    ck_assert_int_eq(test_write_file(path, buf, len), 0);
    free(buf);
    mpq_gguf_file *g = NULL;
    ck_assert_msg(mpq_gguf_open(path, &g, &err) == MPQ_OK, "%s", err.msg);
    ck_assert_int_eq(g->n_tensors, 70);
    const char *sv;
    size_t sl;
    ck_assert_int_eq(mpq_gguf_get_string(g, "general.type", &sv, &sl, NULL, &err), MPQ_OK);
    ck_assert(sl == 7 && memcmp(sv, "imatrix", 7) == 0);
    int64_t v;
    ck_assert_int_eq(mpq_gguf_get_int(g, "imatrix.chunk_count", 0, 1 << 30, &v, NULL, &err), MPQ_OK);
    ck_assert_int_eq(v, 3);
    ck_assert_int_eq(mpq_gguf_get_int(g, "imatrix.chunk_size", 0, 1 << 30, &v, NULL, &err), MPQ_OK);
    ck_assert_int_eq(v, 32);
    ck_assert_ptr_nonnull(mpq_gguf_find_kv(g, "imatrix.datasets"));
    for (int i = 0; i < mpq_model_n_linear(g_model); i++) {
        int64_t cols = 0;
        const double *S = mpq_calib_xtx_packed(cal, i, &cols);
        char nm[160];
        snprintf(nm, sizeof nm, "%s.in_sum2", im->entries[i].name);
        const mpq_gguf_tensor *ts = mpq_gguf_find_tensor(g, nm);
        snprintf(nm, sizeof nm, "%s.counts", im->entries[i].name);
        const mpq_gguf_tensor *tc = mpq_gguf_find_tensor(g, nm);
        ck_assert_ptr_nonnull(ts);
        ck_assert_ptr_nonnull(tc);
        ck_assert_int_eq(ts->ne[0], cols);
        ck_assert_int_eq(ts->ne[1], 1);
        ck_assert_int_eq(tc->n_elems, 1);
        float *x = malloc((size_t)cols * sizeof *x), c1;
        mpq_gguf_read_f32(g, ts, x);
        mpq_gguf_read_f32(g, tc, &c1);
        ck_assert(c1 == (float)N); /* an integer below 2^24: exact in float */
        for (int64_t c = 0; c < cols; c++) {
            double want = S[mpq_xtx_index(cols, c, c)] * N;
            ck_assert_double_eq_tol(x[c], want, 2.4e-7 * want);
        }
        free(x);
    }
    mpq_gguf_close(g);

    ck_assert_int_eq(mpq_imatrix_serialize(im, false, &buf, &len, &err), MPQ_OK);
    const unsigned char *q = buf, *end = buf + len;
    ck_assert_int_eq(rd32(q), 35);
    q += 4;
    for (int i = 0; i < 35; i++) {
        uint32_t nl = rd32(q);
        q += 4;
        ck_assert(nl == strlen(im->entries[i].name) && memcmp(q, im->entries[i].name, nl) == 0);
        q += nl;
        uint32_t ncall = rd32(q), nval = rd32(q + 4);
        q += 8;
        int64_t cols = 0;
        const double *S = mpq_calib_xtx_packed(cal, i, &cols);
        ck_assert_int_eq(ncall, 3);
        ck_assert_int_eq(nval, cols);
        for (uint32_t c = 0; c < nval; c++) {
            double want = S[mpq_xtx_index(cols, c, c)];
            ck_assert_double_eq_tol(rdf(q + 4 * c) / ncall, want, 2.4e-7 * want);
        }
        q += 4 * (size_t)nval;
    }
    ck_assert_int_eq(rd32(q), 3);
    ck_assert_int_eq(rd32(q + 4), 9);
    ck_assert(memcmp(q + 8, "calib.u16", 9) == 0);
    ck_assert(q + 17 == end);
    free(buf);
    /* no X^T X collected: refused */
    mpq_imatrix_free(im);
    im = NULL;
    mpq_calib_free(cal);
    co.collect_xtx = false;
    ck_assert_int_eq(mpq_calib_create(g_model, tokens, 3, 32, &co, &cal, &err), MPQ_OK);
    ck_assert_int_eq(mpq_imatrix_from_calib(cal, g_model, "x", &im, &err), MPQ_ERR_INVALID);
    ck_assert_ptr_null(im);
    mpq_calib_free(cal);
    mpq_data_seqs_free(seqs);
    mpq_data_free(data);
    remove(path);
    rmdir(dir);
}
END_TEST

static Suite *export_suite(void) {
    Suite *s = suite_create("export");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_golden_all_formats);
    tcase_add_test(tc, test_plan_names_and_totals);
    tcase_add_test(tc, test_llamacpp_lines);
    tcase_add_test(tc, test_ggml_fallback);
    tcase_add_test(tc, test_imatrix_rule);
    tcase_add_test(tc, test_llamacpp_notes);
    tcase_add_test(tc, test_mpq_json_loads_back);
    tcase_add_test(tc, test_compressed_tensors);
    tcase_add_test(tc, test_fused_shard_refusal);
    tcase_add_test(tc, test_kvtuner_hawq);
    tcase_add_test(tc, test_format_names);
    tcase_add_test(tc, test_hf_model_plan);
    tcase_add_test(tc, test_plan_from_db);
    tcase_add_test(tc, test_ct_vllm_checks);
    tcase_add_test(tc, test_kv_engines);
    tcase_add_test(tc, test_pyquant);
    tcase_add_test(tc, test_imatrix_file);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(export_suite)
