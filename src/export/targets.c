/*
 * targets.c - exports for serving engines' per-layer KV-cache options and for the Python
 * weight quantizers (mpq_export.h).
 *
 * KV engines (menus and the dtype rule: mpq_export.h, "KV cache dtypes of serving engines"):
 * - sglang: --kv-cache-dtype D (mainline) and --kv-cache-per-layer-dtype "0-1:bf16,62:fp8_e4m3"
 *   (the syntax of the unmerged PRs sgl-project/sglang #15420 and #17530: ranges override the
 *   global dtype).
 * - TensorRT-LLM: "0-3:fp8,4-35:nvfp4" (the range string of the open PR
 *   NVIDIA/TensorRT-LLM #13695 for KvCacheConfig; released versions take one dtype).
 * - vLLM: --kv-cache-dtype fp8_e4m3 --kv-cache-dtype-skip-layers 0 5 (merged, PR #33695:
 *   listed layer indices keep the model dtype); a per-layer map is RFC vllm-project/vllm#57445.
 * - llama.cpp forks: ik_llama.cpp (PR #1599, merged) -ctk-first T,N -ctk-last T,M
 *   -ctv-first T,N -ctv-last T,M on top of -ctk/-ctv; mainline llama.cpp has one -ctk/-ctv.
 * Python quantizers:
 * - GPTQModel QuantizeConfig: bits, group_size (-1 = per channel), sym, desc_act and
 *   "dynamic": {"+:regex": {"bits": b, "group_size": g}, "-:regex": {}} (override / skip a
 *   module; regexes on module names).
 * - AutoRound: AutoRound(model, tokenizer, bits=, group_size=, sym=, layer_config={module:
 *   {"bits", "group_size", "sym"}}); bits 16 keeps a layer.
 * - NVIDIA ModelOpt: mtq.quantize(model, cfg, forward_loop) with cfg {"quant_cfg": {wildcard:
 *   {"num_bits", "block_sizes" | "axis", "enable"}}, "algorithm": "max"}; patterns are fnmatch
 *   wildcards on quantizer names, applied in order (later wins), "default" first.
 */
#include "mpq/mpq_export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"

/* ---- engine menus --------------------------------------------------------------------------- */

typedef struct kv_dtype {
    const char *name;
    int bits;
} kv_dtype;

static const kv_dtype menu_sglang[] = {{"fp4_e2m1", 4}, {"fp8_e4m3", 8}, {"bf16", 16}};
static const kv_dtype menu_trtllm[] = {{"nvfp4", 4}, {"fp8", 8}, {"bf16", 16}};
static const kv_dtype menu_vllm[] = {{"fp8_e4m3", 8}, {"auto", 16}};
static const kv_dtype menu_llama[] = {{"q4_1", 4}, {"q5_1", 5}, {"q8_0", 8}, {"f16", 16}};
static const char *const engine_names[] = {"sglang", "trtllm", "vllm", "llamacpp"};

static const kv_dtype *menu_of(mpq_kv_engine e, int *n) {
    switch (e) {
    case MPQ_KV_ENGINE_SGLANG: *n = 3; return menu_sglang;
    case MPQ_KV_ENGINE_TRTLLM: *n = 3; return menu_trtllm;
    case MPQ_KV_ENGINE_VLLM: *n = 2; return menu_vllm;
    default: *n = 4; return menu_llama;
    }
}

mpq_status mpq_kv_engine_parse(const char *name, mpq_kv_engine *out, mpq_err *err) {
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, engine_names[i]) == 0) {
            *out = (mpq_kv_engine)i;
            return MPQ_OK;
        }
    return mpq_err_set(err, MPQ_ERR_INVALID, "unknown KV engine '%s' (sglang, trtllm, vllm, llamacpp)",
                       name ? name : "(null)");
}

const char *mpq_kv_engine_name(mpq_kv_engine e) { return (unsigned)e < 4 ? engine_names[e] : "?"; }

static int dtype_index(mpq_kv_engine e, int bits) {
    int n;
    const kv_dtype *m = menu_of(e, &n);
    for (int i = 0; i < n; i++)
        if (m[i].bits >= bits) return i;
    return n - 1;
}

const char *mpq_kv_engine_dtype(mpq_kv_engine e, int bits, int *dtype_bits) {
    int n;
    const kv_dtype *m = menu_of(e, &n);
    int i = dtype_index(e, bits);
    if (dtype_bits) *dtype_bits = m[i].bits;
    return m[i].name;
}

bool mpq_kv_engine_offers(mpq_kv_engine e, mpq_kv_pair p) {
    int bk, bv;
    mpq_kv_engine_dtype(e, p.k_bits, &bk);
    mpq_kv_engine_dtype(e, p.v_bits, &bv);
    if (bk != p.k_bits || bv != p.v_bits) return false;
    return e == MPQ_KV_ENGINE_LLAMACPP || p.k_bits == p.v_bits;
}

/* ---- KV engine exports ---------------------------------------------------------------------- */

static mpq_status finish(sbuf *f, sbuf *n, const char *what, char **text, char **notes, mpq_err *err) {
    *text = sb_take(f);
    if (notes) *notes = sb_take(n);
    sb_free(f);
    sb_free(n);
    if (!*text || (notes && !*notes)) {
        free(*text);
        *text = NULL;
        if (notes) {
            free(*notes);
            *notes = NULL;
        }
        return mpq_err_set(err, MPQ_ERR_NOMEM, "export %s: out of memory", what);
    }
    return MPQ_OK;
}

/* sglang, TensorRT-LLM, vLLM: one dtype per layer for K and V. */
static mpq_status render_kv_layer_engine(const mpq_export_plan *p, mpq_kv_engine e, const mpq_export_opts *o,
                                         char **text, char **notes, mpq_err *err) {
    const char *fmt = e == MPQ_KV_ENGINE_SGLANG ? "sglang-kv" : e == MPQ_KV_ENGINE_TRTLLM ? "trtllm-kv" : "vllm-kv";
    int nm;
    const kv_dtype *menu = menu_of(e, &nm);
    int *d = mpq_calloc((size_t)p->n_blocks, sizeof *d);
    if (!d) return mpq_err_set(err, MPQ_ERR_NOMEM, "export %s: out of memory", fmt);
    sbuf f = {0}, n = {0};
    int n_coll = 0, first_coll = -1;
    for (int b = 0; b < p->n_blocks; b++) {
        int need = p->kv[b].k_bits > p->kv[b].v_bits ? p->kv[b].k_bits : p->kv[b].v_bits;
        d[b] = dtype_index(e, need);
        bool shared = p->kv[b].k_bits != p->kv[b].v_bits, up = menu[d[b]].bits != need;
        if (shared || up) {
            if (first_coll < 0) first_coll = b;
            n_coll++;
            sb_printf(&n, "note: collapsed: block %d k%dv%d -> %s for K and V (%s%s%s)\n", b, p->kv[b].k_bits,
                      p->kv[b].v_bits, menu[d[b]].name, shared ? "one dtype per layer for K and V" : "",
                      shared && up ? "; " : "", up ? "no dtype of exactly that many bits" : "");
            if (up && need < menu[d[b]].bits)
                sb_printf(&n, "      %d bits rounded up to %d (%s offers:", need, menu[d[b]].bits, mpq_kv_engine_name(e));
            else
                sb_printf(&n, "      (%s offers:", mpq_kv_engine_name(e));
            for (int i = 0; i < nm; i++) sb_printf(&n, " %s", menu[i].name);
            sb_puts(&n, ")\n");
        }
    }
    if (n_coll && o->strict) {
        mpq_status st = mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                                    "export %s: block %d's KV pair k%dv%d is not one of %s's dtypes (%d block(s) "
                                    "would be collapsed; search with the engine's menu, or drop --strict)",
                                    fmt, first_coll, p->kv[first_coll].k_bits, p->kv[first_coll].v_bits,
                                    mpq_kv_engine_name(e), n_coll);
        free(d);
        sb_free(&f);
        sb_free(&n);
        return st;
    }
    if (e == MPQ_KV_ENGINE_VLLM) {
        int n_skip = 0;
        for (int b = 0; b < p->n_blocks; b++) n_skip += menu[d[b]].bits == 16;
        if (n_skip == p->n_blocks) {
            sb_puts(&f, "--kv-cache-dtype auto\n");
        } else {
            sb_puts(&f, "--kv-cache-dtype fp8_e4m3");
            if (n_skip) {
                sb_puts(&f, " --kv-cache-dtype-skip-layers");
                for (int b = 0; b < p->n_blocks; b++)
                    if (menu[d[b]].bits == 16) sb_printf(&f, " %d", b);
            }
            sb_puts(&f, "\n");
        }
        sb_printf(&n, "vllm serve MODEL $(cat %s)\n", o->tensor_type_file ? o->tensor_type_file : "kv-flags.txt");
        sb_puts(&n, "note: vLLM's per-layer KV option is a skip list (--kv-cache-dtype-skip-layers, merged): the "
                    "listed layers keep the model dtype, all others use the one --kv-cache-dtype; a per-layer map "
                    "of dtypes is only proposed (RFC vllm-project/vllm#57445)\n");
        sb_puts(&n, "note: vLLM's fp8 KV cache is per-tensor scaled e4m3; mpq measured integer groups\n");
    } else {
        /* runs of equal dtype */
        int base = d[0];
        if (e == MPQ_KV_ENGINE_SGLANG) { /* the global dtype: the one most blocks use */
            int cnt[4] = {0}, best = -1;
            for (int b = 0; b < p->n_blocks; b++) cnt[d[b]]++;
            for (int i = 0; i < nm; i++)
                if (best < 0 || cnt[i] > cnt[best]) best = i;
            base = best;
            sb_printf(&f, "--kv-cache-dtype %s", menu[base].name);
        }
        bool any = false;
        for (int b = 0; b < p->n_blocks;) {
            int c = b;
            while (c + 1 < p->n_blocks && d[c + 1] == d[b]) c++;
            if (e == MPQ_KV_ENGINE_TRTLLM) {
                sb_printf(&f, "%s%d-%d:%s", any ? "," : "", b, c, menu[d[b]].name);
                any = true;
            } else if (d[b] != base) {
                sb_printf(&f, "%s", any ? "," : " --kv-cache-per-layer-dtype ");
                if (c > b) sb_printf(&f, "%d-%d:%s", b, c, menu[d[b]].name);
                else sb_printf(&f, "%d:%s", b, menu[d[b]].name);
                any = true;
            }
            b = c + 1;
        }
        sb_puts(&f, "\n");
        if (e == MPQ_KV_ENGINE_SGLANG) {
            int hi = 0;
            for (int b = 0; b < p->n_blocks; b++)
                if (d[b] > hi) hi = d[b];
            sb_printf(&n, "python3 -m sglang.launch_server --model-path MODEL $(cat %s)\n",
                      o->tensor_type_file ? o->tensor_type_file : "kv-flags.txt");
            sb_printf(&n, "note: --kv-cache-per-layer-dtype is a proposal (sgl-project/sglang PRs #15420, #17530, "
                          "not merged); released sglang takes one --kv-cache-dtype: use %s (the most precise any "
                          "layer needs) there\n", menu[hi].name);
        } else {
            int hi = 0;
            for (int b = 0; b < p->n_blocks; b++)
                if (d[b] > hi) hi = d[b];
            sb_puts(&n, "note: the per-layer range string is the syntax of the open PR NVIDIA/TensorRT-LLM#13695 "
                        "(KvCacheConfig per-layer dtype), a proposal; released TensorRT-LLM takes one KV dtype: use ");
            sb_printf(&n, "%s (the most precise any layer needs) there\n", menu[hi].name);
        }
        sb_puts(&n, "note: bf16 stands for mpq's unquantized (16-bit) KV; the 4-bit float dtypes replace mpq's "
                    "4-bit integer groups\n");
    }
    sb_printf(&n, "note: %d of %d block(s) collapsed to what %s can express\n", n_coll, p->n_blocks,
              mpq_kv_engine_name(e));
    free(d);
    return finish(&f, &n, fmt, text, notes, err);
}

/* llama.cpp forks: per K and V a base type plus first-N and last-M overrides. Picks (N, M) with
 * the fewest total bits over the layers, then the fewest flags, never fewer bits than asked. */
typedef struct seg3 {
    int first, mid, last; /* menu indices */
    int n, m;             /* first n layers, last m layers */
} seg3;

static seg3 best_segments(const int *need, int L) {
    seg3 best = {0, 0, 0, 0, 0};
    long best_cost = -1;
    int best_flags = 99;
    for (int n = 0; n < L; n++)
        for (int m = 0; n + m < L; m++) {
            int f = 0, md = 0, l = 0;
            for (int i = 0; i < L; i++) {
                int *t = i < n ? &f : i >= L - m ? &l : &md;
                if (need[i] > *t) *t = need[i];
            }
            long cost = (long)n * menu_llama[f].bits + (long)m * menu_llama[l].bits +
                        (long)(L - n - m) * menu_llama[md].bits;
            int flags = (n > 0 && f != md) + (m > 0 && l != md);
            if (n > 0 && f == md) continue; /* same cost as n = 0: keep the simpler one */
            if (m > 0 && l == md) continue;
            if (best_cost < 0 || cost < best_cost || (cost == best_cost && flags < best_flags)) {
                best_cost = cost;
                best_flags = flags;
                best = (seg3){f, md, l, n, m};
            }
        }
    return best;
}

static mpq_status render_kv_llamacpp(const mpq_export_plan *p, const mpq_export_opts *o, char **text, char **notes,
                                     mpq_err *err) {
    int L = p->n_blocks;
    int *need = mpq_calloc(2 * (size_t)L, sizeof *need);
    if (!need) return mpq_err_set(err, MPQ_ERR_NOMEM, "export llamacpp-kv: out of memory");
    sbuf f = {0}, n = {0};
    seg3 s[2];
    int n_coll = 0, first_coll = -1;
    for (int h = 0; h < 2; h++) {
        int *nd = need + (size_t)h * L;
        for (int b = 0; b < L; b++) nd[b] = dtype_index(MPQ_KV_ENGINE_LLAMACPP, h ? p->kv[b].v_bits : p->kv[b].k_bits);
        s[h] = best_segments(nd, L);
    }
    for (int b = 0; b < L; b++) {
        int got[2], want[2] = {p->kv[b].k_bits, p->kv[b].v_bits};
        for (int h = 0; h < 2; h++)
            got[h] = b < s[h].n ? s[h].first : b >= L - s[h].m ? s[h].last : s[h].mid;
        if (menu_llama[got[0]].bits != want[0] || menu_llama[got[1]].bits != want[1]) {
            if (first_coll < 0) first_coll = b;
            n_coll++;
            sb_printf(&n, "note: collapsed: block %d k%dv%d -> K %s, V %s (%s)\n", b, want[0], want[1],
                      menu_llama[got[0]].name, menu_llama[got[1]].name,
                      (got[0] != need[b] || got[1] != need[(size_t)L + b])
                          ? "first/last-N layers and one type in between"
                          : "no cache type of exactly that many bits");
        }
    }
    if (n_coll && o->strict) {
        free(need);
        sb_free(&f);
        sb_free(&n);
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "export llamacpp-kv: block %d's KV pair k%dv%d cannot be expressed with first/last-N cache "
                           "types (%d block(s) would be collapsed; drop --strict to round up)",
                           first_coll, p->kv[first_coll].k_bits, p->kv[first_coll].v_bits, n_coll);
    }
    sb_printf(&f, "-ctk %s -ctv %s", menu_llama[s[0].mid].name, menu_llama[s[1].mid].name);
    static const char *const flag[2][2] = {{"-ctk-first", "-ctk-last"}, {"-ctv-first", "-ctv-last"}};
    bool ext = false, vq = false;
    for (int h = 0; h < 2; h++) {
        if (s[h].n) sb_printf(&f, " %s %s,%d", flag[h][0], menu_llama[s[h].first].name, s[h].n), ext = true;
        if (s[h].m) sb_printf(&f, " %s %s,%d", flag[h][1], menu_llama[s[h].last].name, s[h].m), ext = true;
    }
    for (int b = 0; b < L; b++) vq |= p->kv[b].v_bits < 16;
    if (vq) sb_puts(&f, " -fa on");
    sb_puts(&f, "\n");
    sb_printf(&n, "llama-server -m model-mpq.gguf $(cat %s)\n", o->tensor_type_file ? o->tensor_type_file : "kv-flags.txt");
    if (ext)
        sb_puts(&n, "note: -ctk-first/-ctk-last/-ctv-first/-ctv-last are ik_llama.cpp's (PR #1599, merged); "
                    "mainline llama.cpp has one -ctk/-ctv for all layers (mpq export --format llamacpp prints it)\n");
    sb_puts(&n, "note: types by the rule of mpq_export_llama_kv_type: q4_1 for 2..4 bits, q5_1 for 5, q8_0 for 8, "
                "f16 for 16 (asymmetric like mpq's grid; llama.cpp blocks of 32 per token)\n");
    if (vq) sb_puts(&n, "note: a quantized V cache needs flash attention (-fa on)\n");
    sb_printf(&n, "note: %d of %d block(s) collapsed to what first/last-N cache types can express\n", n_coll, L);
    free(need);
    return finish(&f, &n, "llamacpp-kv", text, notes, err);
}

mpq_status export_render_kv_engine(const mpq_export_plan *p, mpq_kv_engine e, const mpq_export_opts *o, char **text,
                                   char **notes, mpq_err *err) {
    if (e == MPQ_KV_ENGINE_LLAMACPP) return render_kv_llamacpp(p, o, text, notes, err);
    return render_kv_layer_engine(p, e, o, text, notes, err);
}

/* ---- Python weight quantizers --------------------------------------------------------------- */

typedef struct py_scheme {
    bool keep;
    bool fp8;      /* ModelOpt only: (4, 3) */
    int bits;
    int group;     /* -1 = per channel */
    bool sym;
} py_scheme;

/* The target's scheme for layer L: integers of the target's widths (never fewer bits), else
 * rounded up with a note; `fp8_ok`: keep fp8 e4m3 as such (ModelOpt). Returns true if changed. */
static bool py_of(const mpq_export_layer *L, const int *widths, int n_widths, bool fp8_ok, bool sym_only,
                  py_scheme *s, sbuf *n, const char *tgt) {
    const mpq_candidate *c = &L->cand;
    memset(s, 0, sizeof *s);
    if (c->type == MPQ_QTYPE_F16 || c->type == MPQ_QTYPE_F32) {
        s->keep = true;
        return false;
    }
    if (c->type == MPQ_QTYPE_FP8_E4M3 && fp8_ok) {
        s->fp8 = true;
        s->bits = 8;
        s->group = -1;
        s->sym = true;
        return false;
    }
    bool changed = false;
    int want = c->bits;
    s->bits = widths[n_widths - 1];
    for (int i = 0; i < n_widths; i++)
        if (widths[i] >= want) {
            s->bits = widths[i];
            break;
        }
    s->group = c->group_size > 0 ? c->group_size : -1;
    s->sym = c->symmetric || c->type != MPQ_QTYPE_INT;
    if (c->type != MPQ_QTYPE_INT) {
        sb_printf(n, "note: collapsed: %s %s -> int%d %s (%s has integer grids only%s)\n", L->hf_name, c->name,
                  s->bits, s->group > 0 ? "grouped" : "per channel", tgt, fp8_ok ? " and fp8 e4m3" : "");
        changed = true;
    } else if (s->bits != want) {
        sb_printf(n, "note: collapsed: %s %s -> %d bits (%s has no %d-bit integer type)\n", L->hf_name, c->name,
                  s->bits, tgt, want);
        changed = true;
    }
    if (sym_only && !s->sym) { /* counted by the caller (one note) */
        s->sym = true;
        changed = true;
    }
    if (s->group > 0 && L->cols % s->group != 0)
        sb_printf(n, "warning: %s: group size %d does not divide its %lld input features (packed kernels such as "
                     "Marlin and TensorRT-LLM's need whole groups)\n", L->hf_name, s->group, (long long)L->cols);
    return changed;
}

static bool py_eq(const py_scheme *a, const py_scheme *b) {
    return a->keep == b->keep && a->fp8 == b->fp8 && (a->keep || (a->bits == b->bits && a->group == b->group &&
                                                                  a->sym == b->sym));
}

/* The base scheme: the one covering most weights among quantized layers (first on ties). */
static int py_base(const mpq_export_plan *p, const py_scheme *sc) {
    int best = -1;
    int64_t bw = -1;
    for (int i = 0; i < p->n_layers; i++) {
        if (sc[i].keep || sc[i].fp8) continue;
        int64_t w = 0;
        for (int j = 0; j < p->n_layers; j++)
            if (py_eq(&sc[i], &sc[j])) w += p->layers[j].n_params;
        if (w > bw) bw = w, best = i;
    }
    return best;
}

static void anchored(sbuf *b, const char *name) {
    sb_puts(b, "^");
    export_regex_escape(b, name);
    sb_puts(b, "$");
}

/* JSON string contents for s (the regex backslashes doubled) */
static void json_str(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') sb_puts(b, "\\");
        char c[2] = {*s, 0};
        sb_puts(b, c);
    }
}

mpq_status export_render_pyquant(const mpq_export_plan *p, mpq_export_format f, const mpq_export_opts *o, char **text,
                                 char **notes, mpq_err *err) {
    static const int w_gptq[] = {2, 3, 4, 8}, w_mo[] = {4, 8};
    const char *tgt = f == MPQ_EXPORT_GPTQMODEL ? "GPTQModel" : f == MPQ_EXPORT_AUTOROUND ? "AutoRound" : "ModelOpt";
    const char *fmt = mpq_export_format_name(f);
    bool mo = f == MPQ_EXPORT_MODELOPT;
    py_scheme *sc = mpq_calloc((size_t)p->n_layers, sizeof *sc);
    if (!sc) return mpq_err_set(err, MPQ_ERR_NOMEM, "export %s: out of memory", fmt);
    sbuf b = {0}, n = {0};
    int n_coll = 0, first = -1, n_asym = 0;
    for (int i = 0; i < p->n_layers; i++) {
        bool ch = mo ? py_of(&p->layers[i], w_mo, 2, true, true, &sc[i], &n, tgt)
                     : py_of(&p->layers[i], w_gptq, 4, false, false, &sc[i], &n, tgt);
        if (ch && first < 0) first = i;
        n_coll += ch;
        n_asym += mo && p->layers[i].cand.type == MPQ_QTYPE_INT && !p->layers[i].cand.symmetric;
    }
    if (n_asym)
        sb_printf(&n, "note: collapsed: %d asymmetric layer(s) written symmetric (%s's integer quantizers are "
                      "symmetric)\n", n_asym, tgt);
    if (n_coll && o->strict) {
        free(sc);
        sb_free(&b);
        sb_free(&n);
        return mpq_err_set(err, MPQ_ERR_UNSUPPORTED,
                           "export %s: %s (%s) has no exact %s scheme (%d layer(s) would be collapsed; drop --strict "
                           "to round up)", fmt, p->layers[first].name, p->layers[first].cand.name, tgt, n_coll);
    }
    int bi = py_base(p, sc);
    py_scheme base = bi >= 0 ? sc[bi] : (py_scheme){.bits = 8, .group = -1, .sym = true};
    const char *file = o->tensor_type_file ? o->tensor_type_file : "mpq-quant.json";
    if (f == MPQ_EXPORT_GPTQMODEL || f == MPQ_EXPORT_AUTOROUND) {
        bool gq = f == MPQ_EXPORT_GPTQMODEL;
        sb_printf(&b, "{\n  \"bits\": %d,\n  \"group_size\": %d,\n  \"sym\": %s,\n", base.bits, base.group,
                  base.sym ? "true" : "false");
        if (gq) sb_puts(&b, "  \"desc_act\": false,\n");
        sb_printf(&b, "  \"%s\": {", gq ? "dynamic" : "layer_config");
        bool any = false;
        int n_sym = 0;
        for (int i = 0; i < p->n_layers; i++) {
            if (py_eq(&sc[i], &base)) continue;
            const mpq_export_layer *L = &p->layers[i];
            sb_printf(&b, "%s\n    \"", any ? "," : "");
            any = true;
            if (gq) {
                sbuf r = {0};
                anchored(&r, L->hf_name);
                sb_puts(&b, sc[i].keep ? "-:" : "+:");
                json_str(&b, r.s ? r.s : "");
                sb_free(&r);
                if (sc[i].keep) sb_puts(&b, "\": {}");
                else sb_printf(&b, "\": {\"bits\": %d, \"group_size\": %d}", sc[i].bits, sc[i].group);
                if (!sc[i].keep && sc[i].sym != base.sym) n_sym++;
            } else {
                json_str(&b, L->hf_name);
                if (sc[i].keep) sb_puts(&b, "\": {\"bits\": 16}");
                else
                    sb_printf(&b, "\": {\"bits\": %d, \"group_size\": %d, \"sym\": %s}", sc[i].bits, sc[i].group,
                              sc[i].sym ? "true" : "false");
            }
        }
        sb_printf(&b, "%s}\n}\n", any ? "\n  " : "");
        if (gq) {
            sb_printf(&n, "python3 -c 'import json; from gptqmodel import GPTQModel, QuantizeConfig; "
                          "m = GPTQModel.load(\"MODEL\", QuantizeConfig(**json.load(open(\"%s\")))); "
                          "m.quantize(CALIBRATION); m.save(\"OUT\")'\n", file);
            sb_puts(&n, "note: \"dynamic\" keys are regexes on module names: \"+:\" overrides bits and group_size, "
                        "\"-:\" leaves the module unquantized\n");
            if (n_sym)
                sb_printf(&n, "note: collapsed: %d layer(s) differ from the global sym=%s; the dynamic overrides "
                              "written here carry bits and group_size only\n", n_sym, base.sym ? "true" : "false");
        } else {
            sb_printf(&n, "python3 -c 'import json; from auto_round import AutoRound; "
                          "AutoRound(MODEL, TOKENIZER, **json.load(open(\"%s\"))).quantize_and_save(\"OUT\")'\n", file);
            sb_puts(&n, "note: layer_config keys are module names; bits 16 keeps a layer unquantized\n");
        }
    } else {
        sb_puts(&b, "# NVIDIA ModelOpt quantization config (mpq export): later patterns override earlier ones\n");
        sb_puts(&b, "QUANT_CFG = {\n    \"quant_cfg\": {\n        \"default\": {\"enable\": False},\n");
        for (int pass = 0; pass < 2; pass++) /* the base on every weight, then the per-layer overrides */
            for (int i = pass ? 0 : -1; i < (pass ? p->n_layers : 0); i++) {
                const py_scheme *s = i < 0 ? &base : &sc[i];
                if (i >= 0 && py_eq(s, &base)) continue;
                sb_puts(&b, "        \"*");
                if (i >= 0) sb_printf(&b, "%s.", p->layers[i].hf_name);
                sb_puts(&b, "weight_quantizer\": ");
                if (s->keep) sb_puts(&b, "{\"enable\": False}");
                else if (s->fp8) sb_puts(&b, "{\"num_bits\": (4, 3), \"axis\": None, \"enable\": True}");
                else if (s->group > 0)
                    sb_printf(&b, "{\"num_bits\": %d, \"block_sizes\": {-1: %d, \"type\": \"static\"}, \"enable\": True}",
                              s->bits, s->group);
                else sb_printf(&b, "{\"num_bits\": %d, \"axis\": 0, \"enable\": True}", s->bits);
                sb_puts(&b, ",\n");
            }
        sb_puts(&b, "        \"*input_quantizer\": {\"enable\": False},\n        \"*output_quantizer\": {\"enable\": "
                    "False},\n        \"*lm_head*\": {\"enable\": False},\n    },\n    \"algorithm\": \"max\",\n}\n");
        sb_printf(&n, "python3 -c 'import runpy, modelopt.torch.quantization as mtq; "
                      "cfg = runpy.run_path(\"%s\")[\"QUANT_CFG\"]; mtq.quantize(MODEL, cfg, FORWARD_LOOP)'\n", file);
        sb_puts(&n, "note: weight-only; TensorRT-LLM and vLLM checkpoints exported by ModelOpt load int4 blocks, "
                    "int8 per channel and fp8, so other widths stay fake-quantized\n");
    }
    sb_printf(&n, "note: %d of %d layer(s) collapsed to what %s can express; KV pairs are not part of this "
                  "format (see sglang-kv, trtllm-kv, vllm-kv, llamacpp-kv)\n", n_coll, p->n_layers, tgt);
    free(sc);
    return finish(&b, &n, fmt, text, notes, err);
}
