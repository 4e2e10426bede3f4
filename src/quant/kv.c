/*
 * kv.c - KV-cache precision pairs (k<K>v<V>), KV quantization schemes and their exact
 * average bits per stored element.
 *
 * References:
 * - Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache":
 *   keys quantized per channel (groups of G tokens), values per token (groups of G
 *   channels), the most recent R tokens kept in full precision.
 * - Li et al. 2025, "KVTuner": layer-wise pairs K8V8, K8V4, K4V4, K4V2, K2V2, ...
 *
 * Overhead accounting (fp16 scale + fp16 zero = 32 bits per group):
 *   KIVI keys:    one group = G tokens of one channel           -> K + 32/G
 *   KIVI values:  ceil(kv_dim/G) groups per token               -> V + 32*ceil(kv_dim/G)/kv_dim
 *   per-token:    keys and values both like KIVI values
 *   residual R of context L (R clamped to L): (R*16 + (L-R)*(b + overhead)) / L
 *   KIVI keys: R is at least L mod G (an incomplete trailing token group stays fp16, as
 *              KIVI's streaming cache and mpq's executor do); context_len <= 0: no residual
 *   16-bit K or V: exactly 16 (kept in fp16, no overhead, no residual effect).
 */
#include "mpq/mpq_quant.h"

#include <stdio.h>
#include <string.h>

mpq_kv_scheme mpq_kv_scheme_default(void) {
    mpq_kv_scheme s;
    s.mode = MPQ_KV_KIVI;
    s.group_size = 32;
    s.residual = 0;
    s.caq = false;
    return s;
}

static bool kv_bits_ok(long b) { return b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }

/* Parses 1-2 decimal digits at *p into *out; advances *p. */
static bool parse_small(const char **p, long *out) {
    const char *s = *p;
    if (*s < '0' || *s > '9') return false;
    long v = 0;
    int n = 0;
    while (*s >= '0' && *s <= '9') {
        if (++n > 2) return false;
        v = v * 10 + (*s - '0');
        s++;
    }
    *out = v;
    *p = s;
    return true;
}

mpq_status mpq_kv_pair_parse(const char *name, mpq_kv_pair *out, mpq_err *err) {
    if (!name || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv pair: NULL argument");
    const char *p = name;
    long k = 0, v = 0;
    bool ok = (*p == 'k' || *p == 'K');
    if (ok) {
        p++;
        ok = parse_small(&p, &k) && (*p == 'v' || *p == 'V');
    }
    if (ok) {
        p++;
        ok = parse_small(&p, &v) && *p == '\0';
    }
    if (!ok || !kv_bits_ok(k) || !kv_bits_ok(v))
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "kv pair '%.64s': expected k<K>v<V> with K, V in {2, 3, 4, 8, 16} (e.g. k8v4)",
                           name);
    out->k_bits = (int)k;
    out->v_bits = (int)v;
    return MPQ_OK;
}

char *mpq_kv_pair_name(mpq_kv_pair p, char *buf, size_t n) {
    if (!buf || n == 0) return buf;
    snprintf(buf, n, "k%dv%d", p.k_bits, p.v_bits);
    return buf;
}

mpq_status mpq_kv_mode_parse(const char *name, mpq_kv_mode *out, mpq_err *err) {
    if (!name || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv mode: NULL argument");
    if (strcmp(name, "kivi") == 0) {
        *out = MPQ_KV_KIVI;
        return MPQ_OK;
    }
    if (strcmp(name, "per-token") == 0 || strcmp(name, "per_token") == 0) {
        *out = MPQ_KV_PER_TOKEN;
        return MPQ_OK;
    }
    return mpq_err_set(err, MPQ_ERR_INVALID, "kv mode '%.64s': expected \"kivi\" or \"per-token\"", name);
}

const char *mpq_kv_mode_name(mpq_kv_mode mode) {
    switch (mode) {
    case MPQ_KV_PER_TOKEN: return "per-token";
    case MPQ_KV_KIVI: return "kivi";
    }
    return "unknown";
}

double mpq_kv_bits_per_element(mpq_kv_pair p, const mpq_kv_scheme *s, int kv_dim, int64_t context_len,
                               bool key, bool with_overhead) {
    int b = key ? p.k_bits : p.v_bits;
    if (b >= 16) return 16.0;
    if (!with_overhead) return (double)b;
    mpq_kv_scheme def = mpq_kv_scheme_default();
    if (!s) s = &def;
    int g = s->group_size > 0 ? s->group_size : 32;
    double quantized;
    if (s->mode == MPQ_KV_KIVI && key) {
        quantized = (double)b + 32.0 / (double)g;
    } else {
        if (kv_dim <= 0) return (double)b;
        int64_t groups = ((int64_t)kv_dim + g - 1) / g;
        quantized = (double)b + 32.0 * (double)groups / (double)kv_dim;
    }
    if (context_len <= 0) return quantized;
    int64_t r = s->residual > 0 ? s->residual : 0;
    if (s->mode == MPQ_KV_KIVI && key) {
        /* KIVI's streaming key cache keeps an incomplete trailing token group in full
         * precision (as the executor does): at least L mod G tokens are fp16 */
        int64_t partial = context_len % g;
        if (partial > r) r = partial;
    }
    if (r <= 0) return quantized;
    if (r > context_len) r = context_len;
    return ((double)r * 16.0 + (double)(context_len - r) * quantized) / (double)context_len;
}
