/* crc_main.c - CRC-32 of stdin, computed in pieces of the sizes given as arguments (cycled),
 * printed as 8 hex digits: tests/c/test_proto.py compares it with zlib.crc32. */
#include <stdio.h>
#include <stdlib.h>

#include "lrt_crc32.h"

int main(int argc, char **argv)
{
    static unsigned char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), stdin), off = 0;
    uint32_t crc = 0;
    int arg = 1;

    while (off < n) {
        size_t piece = argc > 1 ? strtoul(argv[arg], NULL, 0) : n;
        if (piece > n - off)
            piece = n - off;
        crc = lrt_crc32_update(crc, buf + off, piece);
        off += piece;
        if (argc > 1)
            arg = arg + 1 < argc ? arg + 1 : 1;
    }
    crc = lrt_crc32_update(crc, NULL, 0); /* a no-op by contract */
    printf("%08x\n", (unsigned)crc);
    return 0;
}
