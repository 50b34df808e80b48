/* lrt_crc32.h - CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), zlib semantics.
 *
 * Shared by the wire protocol and the NVM layer, so frames and stored records can be checked
 * with Python's zlib.crc32 on the host. Incremental:
 *     crc = lrt_crc32_update(0, a, na); crc = lrt_crc32_update(crc, b, nb);
 * equals lrt_crc32_update(0, ab, na + nb) and zlib.crc32(ab).
 */
#ifndef LRT_CRC32_H
#define LRT_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* CRC of `len` bytes continuing from `crc` (0 to start). data may be NULL when len is 0. */
uint32_t lrt_crc32_update(uint32_t crc, const void *data, size_t len);

#endif /* LRT_CRC32_H */
