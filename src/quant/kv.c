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

#include <stdint.h>
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

int mpq_kv_rate_q(int field) {
    if (kv_bits_ok(field)) return field * 1024;
    if (field > MPQ_KV_RATE_FRAC && field < MPQ_KV_RATE_FRAC + 16 * 1024) return field - MPQ_KV_RATE_FRAC;
    return -1;
}

bool mpq_kv_pair_fractional(mpq_kv_pair p) { return p.k_bits > MPQ_KV_RATE_FRAC || p.v_bits > MPQ_KV_RATE_FRAC; }

/* One rate at *p: whole bits (1-2 digits, in {2,3,4,8,16}) or W.F with W < 16 and 1..10
 * fractional digits, no trailing zero, an exact multiple of 1/1024 (0 < rate < 16). Stores
 * the field value (whole bits, or MPQ_KV_RATE_FRAC + 1024*rate). */
static bool parse_rate(const char **p, int *field) {
    long w = 0;
    if (!parse_small(p, &w)) return false;
    if (**p != '.') {
        if (!kv_bits_ok(w)) return false;
        *field = (int)w;
        return true;
    }
    const char *s = *p + 1;
    /* the fraction as an exact rational num / 10^nd, nd <= 10 */
    int64_t num = 0, den = 1;
    int nd = 0;
    while (*s >= '0' && *s <= '9') {
        if (++nd > 10) return false;
        num = num * 10 + (*s - '0');
        den *= 10;
        s++;
    }
    if (nd == 0 || s[-1] == '0') return false; /* "3." or a trailing zero */
    if ((num * 1024) % den != 0) return false;  /* not a multiple of 1/1024 */
    int64_t q = w * 1024 + num * 1024 / den;
    if (q <= 0 || q >= 16 * 1024) return false;
    *field = MPQ_KV_RATE_FRAC + (int)q;
    *p = s;
    return true;
}

mpq_status mpq_kv_pair_parse(const char *name, mpq_kv_pair *out, mpq_err *err) {
    if (!name || !out) return mpq_err_set(err, MPQ_ERR_INVALID, "kv pair: NULL argument");
    const char *p = name;
    int k = 0, v = 0;
    bool ok = (*p == 'k' || *p == 'K');
    if (ok) {
        p++;
        ok = parse_rate(&p, &k) && (*p == 'v' || *p == 'V');
    }
    if (ok) {
        p++;
        ok = parse_rate(&p, &v) && *p == '\0';
    }
    if (!ok)
        return mpq_err_set(err, MPQ_ERR_INVALID,
                           "kv pair '%.64s': expected k<K>v<V> with K, V in {2, 3, 4, 8, 16} (e.g. k8v4), or "
                           "fractional SAQ rates below 16 in multiples of 1/1024 bit without trailing zeros "
                           "(e.g. k3.25v2.5)",
                           name);
    out->k_bits = k;
    out->v_bits = v;
    return MPQ_OK;
}

/* exact decimal of q/1024 without trailing zeros */
static void rate_name(int field, char *buf, size_t n) {
    int q = mpq_kv_rate_q(field);
    if (q < 0) {
        snprintf(buf, n, "%d", field);
        return;
    }
    int w = q / 1024, f = q % 1024;
    if (f == 0) {
        snprintf(buf, n, "%d", w);
        return;
    }
    /* f/1024 = f * 5^10 / 10^10 exactly */
    long long frac = (long long)f * 9765625LL;
    char digits[16];
    snprintf(digits, sizeof digits, "%010lld", frac);
    size_t len = strlen(digits);
    while (len > 0 && digits[len - 1] == '0') digits[--len] = '\0';
    snprintf(buf, n, "%d.%s", w, digits);
}

char *mpq_kv_pair_name(mpq_kv_pair p, char *buf, size_t n) {
    if (!buf || n == 0) return buf;
    char k[24], v[24];
    rate_name(p.k_bits, k, sizeof k);
    rate_name(p.v_bits, v, sizeof v);
    snprintf(buf, n, "k%sv%s", k, v);
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
    if (strcmp(name, "saq") == 0) {
        *out = MPQ_KV_SAQ;
        return MPQ_OK;
    }
    return mpq_err_set(err, MPQ_ERR_INVALID, "kv mode '%.64s': expected \"kivi\", \"per-token\" or \"saq\"", name);
}

const char *mpq_kv_mode_name(mpq_kv_mode mode) {
    switch (mode) {
    case MPQ_KV_PER_TOKEN: return "per-token";
    case MPQ_KV_KIVI: return "kivi";
    case MPQ_KV_SAQ: return "saq";
    }
    return "unknown";
}

double mpq_kv_bits_per_element(mpq_kv_pair p, const mpq_kv_scheme *s, int kv_dim, int64_t context_len,
                               bool key, bool with_overhead) {
    return mpq_kv_bits_per_element_hd(p, s, kv_dim, 0, context_len, key, with_overhead);
}

double mpq_kv_bits_per_element_hd(mpq_kv_pair p, const mpq_kv_scheme *s, int kv_dim, int head_dim,
                                  int64_t context_len, bool key, bool with_overhead) {
    int field = key ? p.k_bits : p.v_bits;
    if (field == 16) return 16.0;
    if (s && s->mode == MPQ_KV_SAQ) {
        /* codes only, plus the bases amortised over the context; residual tokens in fp16 */
        double rate = (double)mpq_kv_rate_q(field) / 1024.0;
        if (!with_overhead || context_len <= 0) return rate;
        int64_t r = s->residual > 0 ? s->residual : 0;
        if (r > context_len) r = context_len;
        double bases = head_dim > 0 ? (double)mpq_kv_saq_basis_bits(head_dim) / (double)head_dim : 0.0;
        return ((double)r * 16.0 + (double)(context_len - r) * rate + bases) / (double)context_len;
    }
    int b = field;
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
