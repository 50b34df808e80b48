/* lrt_nvm_mem.h - lrt_nvm backend over a plain memory region (target builds).
 *
 * For boards whose "NVM" is emulated in RAM (QEMU's SSRAM) and for boards that keep the
 * weights in RAM-backed FRAM/MRAM mapped into the address space. Obeys the technology's
 * rules like the host backends do (flash: prog only clears bits, erase sets a page to
 * erase_value), so firmware behaves on QEMU as on the real part. No counters: the NVM layer
 * keeps its own wear table in the region.
 */
#ifndef LRT_NVM_MEM_H
#define LRT_NVM_MEM_H

#include "lrt_nvm.h"

/* Fill cfg's callbacks, context (= region) and mapping for a region of
 * cfg->page_size * cfg->page_count bytes at `region`. Geometry fields must be set first. */
int lrt_nvm_mem_init(lrt_nvm_config *cfg, uint8_t *region);

#endif /* LRT_NVM_MEM_H */
