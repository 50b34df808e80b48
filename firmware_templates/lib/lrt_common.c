/* lrt_common.c - the error string table. */
#include "lrt_common.h"

const char *lrt_err_str(int err)
{
    switch (err) {
    case LRT_OK: return "ok";
    case LRT_ERR_ARG: return "invalid argument";
    case LRT_ERR_SIZE: return "size mismatch";
    case LRT_ERR_CRC: return "crc mismatch";
    case LRT_ERR_FRAME: return "malformed frame";
    case LRT_ERR_TYPE: return "unknown message type";
    case LRT_ERR_IO: return "i/o error";
    case LRT_ERR_CORRUPT: return "corrupt data";
    case LRT_ERR_NOSPACE: return "no space";
    case LRT_ERR_WORN: return "endurance exhausted";
    case LRT_ERR_EOF: return "end of stream";
    case LRT_ERR_STATE: return "invalid state";
    case LRT_ERR_UNSUPPORTED: return "unsupported";
    default: return "unknown error";
    }
}
