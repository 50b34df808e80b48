/* lrt_common.h - shared types and error codes of the lrt firmware library.
 *
 * Conventions (CMSIS-NN / littlefs style):
 *  - functions are lrt_<noun>_<verb>, macros LRT_*, no globals, no malloc, no floats;
 *  - functions that can fail return an lrt_err (0 = OK, negative = error);
 *  - state lives in caller-provided structs/buffers; *_size() helpers give their sizes.
 */
#ifndef LRT_COMMON_H
#define LRT_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LRT_OK = 0,
    LRT_ERR_ARG = -1,     /* invalid argument */
    LRT_ERR_SIZE = -2,    /* buffer too small / length mismatch */
    LRT_ERR_CRC = -3,     /* checksum mismatch */
    LRT_ERR_FRAME = -4,   /* malformed frame */
    LRT_ERR_TYPE = -5,    /* unknown message type */
    LRT_ERR_IO = -6,      /* storage or transport I/O failed */
    LRT_ERR_CORRUPT = -7, /* stored data failed verification */
    LRT_ERR_NOSPACE = -8, /* no free slot / page */
    LRT_ERR_WORN = -9,    /* endurance budget exhausted */
    LRT_ERR_EOF = -10,    /* end of input stream */
    LRT_ERR_STATE = -11,  /* call not valid in the current state */
    LRT_ERR_UNSUPPORTED = -12,
} lrt_err;

/* Human-readable name of an lrt_err (one string table for the whole library). */
const char *lrt_err_str(int err);

#define LRT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define LRT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LRT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LRT_CLAMP(x, lo, hi) ((x) < (lo) ? (lo) : ((x) > (hi) ? (hi) : (x)))

#endif /* LRT_COMMON_H */
