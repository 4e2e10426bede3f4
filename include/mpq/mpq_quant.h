/*
 * mpq_quant.h - quantizer candidates (weights) and KV-cache precision pairs.
 *
 * A weight candidate is named by a short string parsed in one place:
 *   int<N>[g<G>|c][s][a] N = 2..8 bits; g<G>: groups of G consecutive weights along a row
 *                       (G = 16/32/64/128/256); c: one group per output channel (row); default
 *                       asymmetric (fp16 scale + fp16 zero per group), suffix s = symmetric
 *                       (fp16 scale only); suffix a = CAQ code adjustment (below), same stored
 *                       fields and bits as without it. e.g. int4g128, int3g64s, int8c, int3g32a
 *   fp8e4m3[g<G>|c], fp8e5m2[...], fp4e2m1g<G>   minifloat with an fp16 scale per group
 *   nf4g<G>             NormalFloat-4 levels with an fp16 absmax scale per group
 *   f16, f32            keep (rounded to fp16, or unchanged)
 *   tcq<R>, vq<R>, nuq<R>  Q-Palette quantizers (Lee & Song 2025, arXiv 2509.20214) at rate R
 *                       bits per weight, applied after incoherence processing (a seeded
 *                       randomized Hadamard / orthogonal rotation of both sides of the matrix)
 *                       with an fp16 scale per row: tcq = trellis-coded (R = 1.5, 1.75, ..., 5),
 *                       vq = 2-D vector quantizer with a 2^(2R)-point k-means codebook
 *                       (R = 1.5, 2, ..., 4), nuq = 1-D Lloyd-Max quantizer for N(0,1)
 *                       (R = 2..8). R is written without trailing zeros: tcq2, tcq2.25, vq1.5.
 *   saq<R>, saqc<R>     SAQ segment allocation (Li et al. 2025, arXiv 2509.12086, section 4) at
 *                       exactly R bits per weight including every overhead (R = 1..8, at most two
 *                       decimals, no trailing zeros: saq3, saqc3.25): the input dimension is
 *                       taken in the eigenbasis of S = X^T X / N (saq, fp16 basis stored: 16 cols^2
 *                       bits) or with the channels sorted by S_jj (saqc, permutation stored),
 *                       split into segments whose bit widths (0..8) a dynamic program chooses,
 *                       each (row, segment) coded as an asymmetric CAQ group. They need the
 *                       layer's X^T X: mpq_quantize_matrix_ctx; every other entry point fails.
 * bits_per_weight counts the overhead exactly: e.g. int4g128 = 4 + 32/128 = 4.25.
 * Canonical names: "int4g128", "int3g64s", "int8c", "int8cs", "int3g32a", "int2g32sa", "int8ca",
 * "fp8e4m3" (per channel; the
 * spelling "fp8e4m3c" is accepted), "fp8e5m2g32", "fp4e2m1g32", "nf4g64", "f16", "f32".
 *
 * Quantizer conventions (round to nearest; scales and zeros stored in fp16; every detail needed
 * to reproduce them bit for bit is in the README, "Exact quantizer conventions"):
 * - int<N> asymmetric: zero = group minimum rounded DOWN to fp16 (a float offset, not an
 *   integer zero point); levels zero + q*scale, q = 0..2^N-1; scale = (max-zero)/(2^N-1) in
 *   fp16, bumped to the next fp16 value if needed so the grid covers [min, max]. Hence
 *   |Q(w) - w| <= scale/2 for every element (up to float rounding of zero + q*scale).
 * - int<N>s symmetric: levels q*scale, q = -(2^(N-1)-1)..2^(N-1)-1 (-2^(N-1) unused; the grid
 *   contains 0); scale = absmax/(2^(N-1)-1) in fp16, bumped to cover absmax.
 * - fp8e4m3 (max 448, subnormals, no inf), fp8e5m2 (max 57344), fp4e2m1 ({0,.5,1,1.5,2,3,4,6}):
 *   scale = absmax/format_max in fp16 (bumped so absmax/scale <= format_max), round to
 *   nearest even, saturate at the format max. nf4: the 16 QLoRA NormalFloat levels in
 *   [-1, 1] times an fp16 absmax scale, nearest level.
 * - A group with zero range / zero absmax does not divide: it dequantizes to its offset / 0.
 * - int<N>...a (CAQ, code adjustment from SAQ, Li et al. 2025, arXiv 2509.12086, section 3):
 *   start from the RTN codes above; MPQ_CAQ_ROUNDS rounds over the group's coordinates in
 *   order, each trying code +1 then -1 (within the code range) and keeping a step that
 *   strictly raises the cosine between the weights and the codes (asymmetric: both centred
 *   on their means); then the scale (and zero) are refitted by least squares for the new
 *   codes and rounded to fp16, and the group keeps the CAQ result only if its squared error
 *   is strictly below the RTN result's. So a CAQ group is never worse than RTN.
 *
 * - Palette candidates (tcq/vq/nuq): W' = Q_m W Q_n^T with Q_k = M_k diag(s_k) orthogonal
 *   (M_k a normalised Hadamard matrix when k = 2^a 12^b 20^c, a >= 2(b+c), else a seeded
 *   random orthogonal matrix), signs s and random matrices drawn from the project PRNG seeded
 *   by the shape only (mpq_rotation_seed); per row r of W' an fp16 scale
 *   s_r = RMS(W'_r); the codebook quantizes W'_r / s_r; the result is scaled back and rotated
 *   back: W_hat = Q_m^T Q(W') Q_n. Stored: the codes and one fp16 scale per row (the rotation
 *   is regenerated from the shape: 0 stored bits). Exact details: README, "Exact quantizer
 *   conventions".
 *
 *     mpq_candidate c;
 *     if (mpq_candidate_parse("int4g128", &c, &err) != MPQ_OK) ...
 *     double bpw = mpq_candidate_bits(&c, cols);      // 4.25
 *     mpq_quantize_matrix(&c, w, rows, cols);          // fake-quantize in place (quantize-dequantize)
 *
 * KV pairs are named k<K>v<V> with K, V in {2,3,4,8,16} (16 = not quantized), e.g. k8v4; under
 * the SAQ scheme (MPQ_KV_SAQ) also fractional rates, e.g. k3.25v2.5 (MPQ_KV_RATE_FRAC).
 * The KV scheme (how keys and values are grouped) is an mpq_kv_scheme.
 */
#ifndef MPQ_QUANT_H
#define MPQ_QUANT_H

#include "mpq/mpq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mpq_qtype {
    MPQ_QTYPE_INT = 0,  /* uniform integer grid */
    MPQ_QTYPE_FP8_E4M3,
    MPQ_QTYPE_FP8_E5M2,
    MPQ_QTYPE_FP4_E2M1,
    MPQ_QTYPE_NF4,
    MPQ_QTYPE_F16,
    MPQ_QTYPE_F32,
    MPQ_QTYPE_TCQ, /* Q-Palette trellis-coded quantizer, fractional rate */
    MPQ_QTYPE_VQ,  /* Q-Palette 2-D vector quantizer (k-means codebook of 2^(2R) points) */
    MPQ_QTYPE_NUQ, /* Q-Palette 1-D non-uniform (Lloyd-Max) quantizer */
    MPQ_QTYPE_SAQ, /* SAQ segment allocation in the eigenbasis of X^T X (needs X^T X) */
    MPQ_QTYPE_SAQC /* SAQ segment allocation over channels sorted by diag(X^T X) (needs X^T X) */
} mpq_qtype;

#define MPQ_CANDIDATE_NAME_MAX 32

typedef struct mpq_candidate {
    char name[MPQ_CANDIDATE_NAME_MAX]; /* canonical name, e.g. "int4g128" */
    mpq_qtype type;
    int bits;        /* bits per stored element (4 for int4 / nf4 / fp4, 8 for fp8, 16, 32);
                        palette candidates: ceil(rate) */
    int group_size;  /* > 0: elements per group along a row; 0: one group per row (per channel) */
    bool symmetric;  /* no zero point stored */
    bool adjust;     /* int only: CAQ code adjustment (suffix a); same stored fields */
    double rate;     /* code bits per weight without overhead: R of tcq<R>/vq<R>/nuq<R>, else bits */
} mpq_candidate;

/* Is c one of the Q-Palette candidates (tcq, vq, nuq)? */
bool mpq_candidate_is_palette(const mpq_candidate *c);

/* Is c one of the SAQ candidates (saq, saqc), which need the layer's X^T X? */
bool mpq_candidate_is_saq(const mpq_candidate *c);

/* Largest dimension (rows or cols) a palette candidate accepts: the rotation is a dense
 * k x k matrix. A dimension without a Hadamard construction (see above) is rotated by a
 * random orthogonal matrix built by QR, accepted up to MPQ_PALETTE_MAX_RANDOM_DIM. */
#define MPQ_PALETTE_MAX_DIM 8192
#define MPQ_PALETTE_MAX_RANDOM_DIM 4096

/* Rounds of CAQ code adjustment (SAQ recommends 4..8). */
#define MPQ_CAQ_ROUNDS 6

/* Parses a candidate name. MPQ_ERR_INVALID with a message naming the string on failure. */
mpq_status mpq_candidate_parse(const char *name, mpq_candidate *out, mpq_err *err);

/* Exact bits per weight for a row of `cols` weights, counting scale (fp16) and zero (fp16)
 * overhead: per-channel groups count 16 (or 32) bits per row; a trailing partial group
 * still stores a full scale. vq<R>: (ceil(cols/2) * 2R + 16) / cols; nuq<R>: R + 16/cols.
 * tcq<R>, whose code bits depend on the number of rows too: the value for a single row
 * (mpq_candidate_bits_matrix gives every shape exactly). saq<R>/saqc<R>: R. */
double mpq_candidate_bits(const mpq_candidate *c, int64_t cols);

/* Exact stored bits of a (rows, cols) matrix: rows * row bits for every candidate but tcq<R>,
 * which is mpq_tcq_code_bits(rows, cols, R) + 16 * rows, and saq<R>/saqc<R>, which is
 * R * rows * cols (the rate not achievable for the shape: -1). 0 for empty shapes, -1 on int64
 * overflow or a shape the candidate cannot code. */
int64_t mpq_candidate_matrix_bits(const mpq_candidate *c, int64_t rows, int64_t cols);

/* mpq_candidate_matrix_bits / (rows * cols): exact bits per weight of that shape
 * (equal to mpq_candidate_bits(c, cols) for every candidate but tcq). 0 for empty shapes,
 * NAN when the shape cannot be coded. */
double mpq_candidate_bits_matrix(const mpq_candidate *c, int64_t rows, int64_t cols);

/* Exact storage bytes for a (rows, cols) matrix (bits rounded up to whole bytes per matrix):
 * ceil(mpq_candidate_matrix_bits / 8) computed in integers. 0 for empty shapes, -1 on int64
 * overflow (or a shape the candidate cannot code). */
int64_t mpq_candidate_bytes(const mpq_candidate *c, int64_t rows, int64_t cols);

/* Fake-quantizes a row-major (rows, cols) matrix in place (quantize then dequantize, scales
 * and zeros themselves rounded to fp16). MPQ_ERR_NOMEM when a palette candidate cannot
 * allocate its rotation, MPQ_ERR_UNSUPPORTED for a palette candidate on a dimension above
 * MPQ_PALETTE_MAX_DIM (or a non-Hadamard one above MPQ_PALETTE_MAX_RANDOM_DIM); w is then
 * unchanged. The other candidates never fail. NaN weights do not make it loop or crash (their
 * results are unspecified; palette candidates spread a NaN over the whole matrix). */
mpq_status mpq_quantize_matrix_checked(const mpq_candidate *c, float *w, int64_t rows, int64_t cols,
                                       mpq_err *err);

/* As mpq_quantize_matrix_checked, with the layer's calibration statistics: xtx is
 * S = X^T X / n_tokens of the layer's input, symmetric (cols, cols), given as its upper
 * triangle packed by rows (cols (cols + 1) / 2 doubles, the layout mpq_calib_xtx_packed gives),
 * borrowed for the call. Only the saq candidates use it (it may be NULL for the
 * others); for them: MPQ_ERR_UNSUPPORTED when xtx is NULL (mpq_quantize_matrix_checked and
 * mpq_quantize_matrix always pass NULL, so they never quantize saq silently), MPQ_ERR_INVALID
 * naming the candidate when the rate is not achievable for the shape (R*rows*cols not a whole
 * number, more than 8192 columns, or basis and segment plan alone above R*rows*cols) or when
 * xtx or w has a non-finite entry, MPQ_ERR_SOLVER when the eigen-decomposition fails,
 * MPQ_ERR_NOMEM; w is unchanged on failure. Thread-safe (no shared state); with BLAS at one thread
 * (mpq.h, "BLAS threads") the result is the same bit for bit on every call and every thread. */
mpq_status mpq_quantize_matrix_ctx(const mpq_candidate *c, float *w, int64_t rows, int64_t cols, const double *xtx,
                                   mpq_err *err);

/* The incoherence rotation of the palette candidates on its own: inverse = false:
 * w <- Q_m w Q_n^T; inverse = true: w <- Q_m^T w Q_n (Q_k as above, seeded by the shape).
 * MPQ_ERR_UNSUPPORTED / MPQ_ERR_NOMEM as mpq_quantize_matrix_checked (w unchanged). */
mpq_status mpq_palette_rotate(float *w, int64_t rows, int64_t cols, bool inverse, mpq_err *err);

/* As mpq_quantize_matrix_checked without a status: when that fails, every element of w is
 * set to NAN so that a failure cannot pass for a small error. */
void mpq_quantize_matrix(const mpq_candidate *c, float *w, int64_t rows, int64_t cols);

/* In-place asymmetric min-max round-to-nearest quantize-dequantize of the n elements
 * x[0], x[stride], ..., x[(n-1)*stride] with 2^bits levels (bits >= 16: unchanged).
 * Used for KV-cache groups. Scale and zero are kept in fp16, as stored. */
void mpq_quant_rtn_minmax(float *x, size_t n, size_t stride, int bits);

/* As mpq_quant_rtn_minmax, then CAQ code adjustment and the least-squares (scale, zero) refit
 * of an asymmetric int candidate with suffix a (the RTN result is kept when it is at least as
 * good; bits 9..15 stay RTN). Used for KV-cache groups when the scheme has caq set. */
void mpq_quant_caq_minmax(float *x, size_t n, size_t stride, int bits);

/* fp16 round trip (round to nearest even), used for stored scales. */
float mpq_fp16_round(float x);

/* ---- KV cache ---- */

typedef struct mpq_kv_pair {
    int k_bits; /* 2, 3, 4, 8 or 16 */
    int v_bits;
} mpq_kv_pair;

typedef enum mpq_kv_mode {
    MPQ_KV_PER_TOKEN = 0, /* keys and values both grouped per token along channels */
    MPQ_KV_KIVI,          /* keys per channel (groups of tokens), values per token (groups of channels) */
    MPQ_KV_SAQ            /* per token and KV head in a calibrated PCA basis (mpq_kv_saq below) */
} mpq_kv_mode;

typedef struct mpq_kv_saq mpq_kv_saq;

typedef struct mpq_kv_scheme {
    mpq_kv_mode mode;
    int group_size; /* elements per quantization group (tokens for KIVI keys, channels otherwise) */
    int residual;   /* most recent tokens kept in full precision (0 = none) */
    bool caq;       /* CAQ code adjustment of every quantized group (mpq_quant_caq_minmax);
                       same stored fields, so the bits per element do not change */
} mpq_kv_scheme;

/* KIVI, group 32, no residual window, no CAQ. */
mpq_kv_scheme mpq_kv_scheme_default(void);

/* "k8v4" -> {8, 4}; MPQ_ERR_INVALID naming the string otherwise. Fractional rates such as
 * "k3.25v2.5" (mode saq only; see MPQ_KV_RATE_FRAC) are parsed too: K and V are decimals
 * with 1 to 10 fractional digits, no trailing zero ("k3.0v2" is refused, its name is
 * "k3v2"), a multiple of 1/1024 bit, 0 < rate < 16. */
mpq_status mpq_kv_pair_parse(const char *name, mpq_kv_pair *out, mpq_err *err);
/* Writes "k8v4" / "k3.25v2.5" (canonical: shortest exact decimal) into buf (size >= 32).
 * Returns buf. */
char *mpq_kv_pair_name(mpq_kv_pair p, char *buf, size_t n);

/* Fractional rates. A k_bits / v_bits field holds either whole bits (2, 3, 4, 8, 16) or a
 * fractional rate r, stored as MPQ_KV_RATE_FRAC + r*1024 (r a multiple of 1/1024 bit): code
 * that knows only whole bits refuses such a field as an unknown bit width. */
#define MPQ_KV_RATE_FRAC 1000000
/* The rate of a field in 1/1024 bits (whole b -> 1024*b); -1 if the field is neither. */
int mpq_kv_rate_q(int field);
/* True if either half of p is a fractional rate. */
bool mpq_kv_pair_fractional(mpq_kv_pair p);
/* "kivi" / "per-token" / "saq" <-> mode. */
mpq_status mpq_kv_mode_parse(const char *name, mpq_kv_mode *out, mpq_err *err);
const char *mpq_kv_mode_name(mpq_kv_mode mode);

/* Average stored bits per K (or V) element for one layer of width kv_dim, counting fp16
 * scale + fp16 zero per group; context_len tokens with the residual window in fp16.
 * with_overhead=false gives the nominal bits. Exactly:
 *   16-bit K/V: 16. KIVI keys (per channel, groups of G tokens): q = K + 32/G.
 *   values, and keys in per-token mode (ceil(kv_dim/G) groups per token):
 *     q = b + 32*ceil(kv_dim/G)/kv_dim.
 *   With context L > 0 and R = min(L, residual) fp16 tokens (for KIVI keys R is at least
 *   L mod G: an incomplete token group stays fp16): (R*16 + (L-R)*q)/L. L <= 0: q. */
double mpq_kv_bits_per_element(mpq_kv_pair p, const mpq_kv_scheme *s, int kv_dim, int64_t context_len,
                               bool key, bool with_overhead);
/* mpq_kv_bits_per_element counts no bases in mode saq (head_dim unknown); this one does,
 * with the head_dim that mode saq needs (other modes ignore it):
 * saq: q = rate (no per-token overhead) plus the stored bases amortised over the context,
 *   16*(head_dim + 2)/L bits per element for L > 0 (0 for L <= 0), see mpq_kv_saq_basis_bits;
 *   the residual window as in per-token mode. */
double mpq_kv_bits_per_element_hd(mpq_kv_pair p, const mpq_kv_scheme *s, int kv_dim, int head_dim,
                                  int64_t context_len, bool key, bool with_overhead);

/* ---- SAQ KV coder (Li et al. 2025, arXiv 2509.12086, applied per KV head) ----
 * For every block l, kind (keys, values) and KV head h, calibration gives: the mean mu of the
 * head's vectors (keys before RoPE), the eigen-decomposition of their covariance (directions
 * in descending eigenvalue order, each direction's sign fixed so that its largest-magnitude
 * component, the first one on a tie, is positive), and per direction j and bit width
 * b = 1..8 the step s_jb of a uniform mid-rise quantizer (levels (q - 2^(b-1) + 1/2) s_jb,
 * q = 0..2^b-1) that minimises the calibration squared error of the coordinate, found on the
 * grid of half-ranges max|y_j| * 2^(-i/8), i = 0..39 (ties: the larger); with its error
 * e_jb (e_j0 = mean y_j^2). A rate r (bits per element) gives each head r*head_dim code bits
 * (an integer, else the rate is not achievable), split over the directions by the segment DP
 * (mpq_segment_dp on e_jb, widths 0..8, no per-segment overhead). A token's head vector x is
 * coded as y = V^T (x - mu), codes q_j = clamp(floor(y_j / s_j) + 2^(b_j-1)), and decoded as
 * mu + V y_hat. Two coders are fitted: "static" stores nothing per token but the codes;
 * "scaled" spends 16 of the head's bits on the token's fp16 scale nu = fp16(rms(y)) and codes
 * y / nu with its own steps (fitted with weights nu^2, errors in the original units); per
 * (block, kind, head, rate) the one whose DP-predicted calibration error is smaller is used
 * (static on a tie). Bases cost 16*(head_dim^2 + 2*head_dim) bits per head and kind (fp16
 * basis, mean, steps of the chosen widths), paid once per block. */

/* Empty bases for a model shape (1..4096 blocks, 1..1024 KV heads, head_dim 2..1024).
 * MPQ_ERR_INVALID / MPQ_ERR_NOMEM. Free with mpq_kv_saq_free (accepts NULL). */
mpq_status mpq_kv_saq_create(int n_layers, int n_kv_heads, int head_dim, mpq_kv_saq **out, mpq_err *err);
void mpq_kv_saq_free(mpq_kv_saq *s);
int mpq_kv_saq_n_layers(const mpq_kv_saq *s);
int mpq_kv_saq_n_kv_heads(const mpq_kv_saq *s);
int mpq_kv_saq_head_dim(const mpq_kv_saq *s);
/* Fits block `layer`, keys (key = true, pre-RoPE) or values, from n >= 1 token rows
 * x (n, n_kv_heads*head_dim). Deterministic (double sums, LAPACKE_dsyevd); an all-equal
 * set gives zero eigenvalues and finite steps. MPQ_ERR_INVALID, MPQ_ERR_NOMEM, MPQ_ERR_SOLVER. */
mpq_status mpq_kv_saq_fit(mpq_kv_saq *s, int layer, bool key, const float *x, int64_t n, mpq_err *err);
/* MPQ_ERR_INVALID naming `what` unless every (block, kind) is fitted and the shape is
 * (n_layers, n_kv_heads, head_dim). */
mpq_status mpq_kv_saq_check(const mpq_kv_saq *s, int n_layers, int n_kv_heads, int head_dim, const char *what,
                            mpq_err *err);
/* MPQ_ERR_INVALID unless rate_q (1/1024 bits) is achievable at head_dim: 0 < rate <= 8 and
 * rate*head_dim an integer number of bits. */
mpq_status mpq_kv_saq_check_rate(int rate_q, int head_dim, mpq_err *err);
/* Per-direction bit widths bits[head_dim] of (layer, kind, head) at rate_q, *scaled (may be
 * NULL) whether the token's fp16 scale is used (16 of the rate*head_dim bits); *distortion
 * (may be NULL) the calibration squared error per vector the DP predicts. */
mpq_status mpq_kv_saq_plan(const mpq_kv_saq *s, int layer, bool key, int head, int rate_q, int *bits,
                           bool *scaled, double *distortion, mpq_err *err);
/* Quantize-dequantize n rows x (n, n_kv_heads*head_dim) in place at rate_q (one rate for
 * every head). Rows are coded independently (one dgemv per head and row), so the result
 * does not depend on n. */
mpq_status mpq_kv_saq_quantize(const mpq_kv_saq *s, int layer, bool key, int rate_q, float *x, int64_t n,
                               mpq_err *err);
/* Codes of one head vector x[head_dim] with per-direction widths bits[] and scaled (from _plan) into
 * codes[head_dim] (0 for a width 0) and its reconstruction into xhat (may alias x). */
void mpq_kv_saq_code_vector(const mpq_kv_saq *s, int layer, bool key, int head, const int *bits, bool scaled,
                            const float *x, uint32_t *codes, float *xhat);
/* Bits stored once per block, head and kind: 16*(head_dim^2 + 2*head_dim). */
int64_t mpq_kv_saq_basis_bits(int head_dim);
/* Progressive prefixes: squared error over n rows of x (n, kvd) of (layer, kind) when every
 * direction keeps the top b bits of its hi-bit code (b < hi <= 8), against the native b-bit
 * code; *ratio = prefix / native (1 when both are 0). */
mpq_status mpq_kv_saq_prefix_ratio(const mpq_kv_saq *s, int layer, bool key, int hi, int b, const float *x,
                                   int64_t n, double *ratio, mpq_err *err);
/* Bases file (JSON, "mpq_kv_saq_version": 1; README "KV cache"). Save: MPQ_ERR_IO naming
 * path. Load: MPQ_ERR_IO, MPQ_ERR_FORMAT naming the file and key, MPQ_ERR_UNSUPPORTED for a
 * newer version. */
mpq_status mpq_kv_saq_save(const mpq_kv_saq *s, const char *path, mpq_err *err);
mpq_status mpq_kv_saq_load(const char *path, mpq_kv_saq **out, mpq_err *err);
/* The same JSON text in memory (the results database stores it as artifact "kv_saq_bases"):
 * to_json: *out malloc'd (free()), no trailing newline; from_json parses n bytes of buf,
 * naming `what` (e.g. the file or artifact) in its errors as load does. */
mpq_status mpq_kv_saq_to_json(const mpq_kv_saq *s, char **out, mpq_err *err);
mpq_status mpq_kv_saq_from_json(const char *buf, size_t n, const char *what, mpq_kv_saq **out, mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_QUANT_H */
