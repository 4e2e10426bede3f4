/*
 * mpq_tokenizer.h - the llama2.c tokenizer (tokenizer.bin): byte-fallback BPE driven by
 * piece scores, encoding exactly as llama2.c run.c encode() and decoding as its decode().
 *
 * File format: int32 max_token_length, then per piece: float32 score, int32 length, bytes.
 * Ids 0, 1, 2 are <unk>, BOS (<s>), EOS (</s>); byte pieces "<0xNN>" are ids 3 + NN.
 *
 *     mpq_tokenizer *tok = NULL;
 *     mpq_err err = {0};
 *     if (mpq_tokenizer_load("tok512.bin", 512, &tok, &err) != MPQ_OK) ...
 *     int *ids = NULL, n = 0;
 *     mpq_tokenizer_encode(tok, "Once upon a time", true, false, &ids, &n, &err);
 *     for (int i = 1; i < n; i++) fputs(mpq_tokenizer_decode_piece(tok, ids[i - 1], ids[i]), stdout);
 *     free(ids);
 *     mpq_tokenizer_free(tok);
 */
#ifndef MPQ_TOKENIZER_H
#define MPQ_TOKENIZER_H

#include "mpq/mpq.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPQ_TOKEN_UNK 0
#define MPQ_TOKEN_BOS 1
#define MPQ_TOKEN_EOS 2

typedef struct mpq_tokenizer mpq_tokenizer;

/* Loads a llama2.c tokenizer.bin, or the tokenizer.ggml.* vocabulary of a GGUF file (a regular
 * file starting with "GGUF"; tokenizer.ggml.model "llama", i.e. sentencepiece pieces and scores;
 * U+2581 read as a space, BOS/EOS pieces as llama2.c's export writes them, ids 0/1/2 and byte
 * pieces at 3..258 required, else MPQ_ERR_UNSUPPORTED). vocab_size > 0: read exactly that many pieces and require the
 * file to end there; 0: read pieces until the end of the file. On success *out is owned by the
 * caller (mpq_tokenizer_free). Returns MPQ_ERR_IO (open/read), MPQ_ERR_FORMAT (truncated file,
 * negative or oversized length, trailing bytes; the message names the file, piece and byte
 * offset), MPQ_ERR_INVALID (vocab_size < 0) or MPQ_ERR_NOMEM. */
mpq_status mpq_tokenizer_load(const char *path, int vocab_size, mpq_tokenizer **out, mpq_err *err);
void mpq_tokenizer_free(mpq_tokenizer *tok); /* accepts NULL */

int mpq_tokenizer_n_vocab(const mpq_tokenizer *tok);

/* Encodes UTF-8 text as llama2.c run.c encode(): optional BOS, a dummy-prefix " " piece when
 * text is non-empty, one piece per UTF-8 code point (bytes +3 when the code point is not a
 * piece), then repeated merges of the adjacent pair with the best score. *ids is malloc'd
 * (caller frees; non-NULL even when *n_ids is 0). MPQ_ERR_INVALID (NULL text),
 * MPQ_ERR_NOMEM. */
mpq_status mpq_tokenizer_encode(const mpq_tokenizer *tok, const char *text, bool bos, bool eos, int **ids,
                                int *n_ids, mpq_err *err);

/* The text of token id following token prev (llama2.c decode()): the leading space is dropped
 * after BOS, and "<0xNN>" pieces give the single byte NN. Borrowed, valid until
 * mpq_tokenizer_free; NULL if id is out of range. */
const char *mpq_tokenizer_decode_piece(const mpq_tokenizer *tok, int prev, int id);

/* Concatenated decode_piece of ids[0..n) with prev = BOS for ids[0] (a leading BOS itself
 * decodes to nothing). *text malloc'd, NUL-terminated (caller frees). MPQ_ERR_INVALID names
 * the position of an out-of-range id; MPQ_ERR_NOMEM. */
mpq_status mpq_tokenizer_decode(const mpq_tokenizer *tok, const int *ids, int n, char **text, mpq_err *err);

/* Raw piece and score of id (borrowed; NULL / 0 if out of range). */
const char *mpq_tokenizer_piece(const mpq_tokenizer *tok, int id);
float mpq_tokenizer_score(const mpq_tokenizer *tok, int id);

/* Id of an exact piece, -1 if none. */
int mpq_tokenizer_lookup(const mpq_tokenizer *tok, const char *piece);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_TOKENIZER_H */
