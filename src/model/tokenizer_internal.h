/*
 * tokenizer_internal.h - private constructor of the tokenizer from in-memory pieces, used by
 * loaders other than tokenizer.bin (GGUF's tokenizer.ggml.* arrays). Not a public header.
 */
#ifndef MPQ_TOKENIZER_INTERNAL_H
#define MPQ_TOKENIZER_INTERNAL_H

#include "mpq/mpq_tokenizer.h"

/* A tokenizer of n pieces: piece i is lens[i] bytes at pieces[i] (copied; read as a C string
 * up to the first NUL, as the tokenizer.bin loader does) with score scores[i]. Same conventions
 * as mpq_tokenizer_load (ids 0/1/2 unk/BOS/EOS, byte pieces at 3 + NN). `what` names the source
 * in messages. *out owned by the caller. MPQ_ERR_FORMAT (fewer than 259 pieces), MPQ_ERR_NOMEM. */
mpq_status mpq_tokenizer_from_pieces(const char *const *pieces, const size_t *lens, const float *scores, int n,
                                     const char *what, mpq_tokenizer **out, mpq_err *err);

#endif /* MPQ_TOKENIZER_INTERNAL_H */
