/*
 * mpq_data.h - calibration / evaluation token streams and the fixed-length windows cut from them.
 *
 * A stream comes from a text file (each non-empty line -> BOS + its pieces, no EOS, as the
 * shared *.u16 files were made) or from pre-tokenized little-endian uint16 (.u16) / uint32
 * (.u32) files. It remembers the file's SHA-256 and token count for provenance.
 *
 *     mpq_data_opts o = mpq_data_opts_default();
 *     o.vocab_size = 512;
 *     mpq_data *d = NULL;
 *     mpq_err err = {0};
 *     if (mpq_data_load("calib.txt", tok, &o, &d, &err) != MPQ_OK) ...
 *     mpq_data_seqs *s = NULL;
 *     mpq_data_sequences(d, 256, 16, 1234, &s, &err);   // 16 windows of 257 tokens
 *     for (int i = 0; i < s->n_seqs; i++) { const int32_t *w = s->tokens + (size_t)i * (s->seq_len + 1); ... }
 *     mpq_data_seqs_free(s);
 *     mpq_data_free(d);
 */
#ifndef MPQ_DATA_H
#define MPQ_DATA_H

#include "mpq/mpq.h"
#include "mpq/mpq_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mpq_data_format {
    MPQ_DATA_AUTO = 0, /* from the extension: .u16, .u32, anything else is text */
    MPQ_DATA_TEXT,
    MPQ_DATA_U16,
    MPQ_DATA_U32
} mpq_data_format;

typedef struct mpq_data_opts {
    mpq_data_format format; /* MPQ_DATA_AUTO */
    int vocab_size;         /* ids must be < this; 0 = the tokenizer's vocabulary if one is given,
                               else ids are not bounded (except by INT32_MAX) */
} mpq_data_opts;

mpq_data_opts mpq_data_opts_default(void);

typedef struct mpq_data mpq_data;

/* Loads a token stream. tok is required for text (MPQ_ERR_INVALID without it) and may be NULL
 * for token files. On success *out is owned by the caller (mpq_data_free). Returns MPQ_ERR_IO,
 * MPQ_ERR_FORMAT (size not a multiple of the element size; id >= vocab_size: the message names
 * the file, the token position and the id), MPQ_ERR_INVALID or MPQ_ERR_NOMEM. */
mpq_status mpq_data_load(const char *path, const mpq_tokenizer *tok, const mpq_data_opts *opts, mpq_data **out,
                         mpq_err *err);
void mpq_data_free(mpq_data *d); /* accepts NULL */

/* Borrowed, valid until mpq_data_free. */
const int32_t *mpq_data_tokens(const mpq_data *d);
size_t mpq_data_n_tokens(const mpq_data *d);
const char *mpq_data_sha256(const mpq_data *d); /* 64 hex chars of the file's SHA-256 */
const char *mpq_data_path(const mpq_data *d);
mpq_data_format mpq_data_get_format(const mpq_data *d); /* TEXT, U16 or U32 as loaded */

/* Windows of seq_len + 1 consecutive tokens (seq_len inputs and their next-token targets).
 * Window k starts at token k * seq_len, so the input spans never overlap and, over all
 * windows, every token after the first is a target exactly once; there are
 * (n_tokens - 1) / seq_len windows. n_seqs == 0 takes all of them in stream order; n_seqs > 0
 * takes the first n_seqs of a Fisher-Yates shuffle of the windows driven by the splitmix64
 * stream from state seed (mpq_rng_splitmix64_below, mpq_rng.h), so
 * the same seed gives the same windows and a larger n_seqs extends a smaller one. */
typedef struct mpq_data_seqs {
    int n_seqs;
    int seq_len;
    int32_t *tokens;  /* n_seqs * (seq_len + 1), window i at tokens + i * (seq_len + 1) */
    size_t *starts;   /* n_seqs token offsets of the windows in the stream */
    uint64_t seed;
} mpq_data_seqs;

/* *out owned by the caller (mpq_data_seqs_free). MPQ_ERR_INVALID (seq_len < 1, n_seqs < 0, or
 * more windows asked than the stream holds: the message gives both counts), MPQ_ERR_NOMEM. */
mpq_status mpq_data_sequences(const mpq_data *d, int seq_len, int n_seqs, uint64_t seed, mpq_data_seqs **out,
                              mpq_err *err);
void mpq_data_seqs_free(mpq_data_seqs *s); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif /* MPQ_DATA_H */
