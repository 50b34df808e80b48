/* lrt_nvm_nrf52.h - lrt_nvm backend for the nRF52's on-chip flash through the NVMC.
 *
 * NVMC at 0x4001E000 (nRF52832/nRF52840 product specifications): CONFIG selects read-only,
 * write (WEN) or erase (EEN); ERASEPAGE erases the 4 KiB page whose address is written to it;
 * words are programmed by 32-bit writes to the flash while WEN is set; READY is polled after
 * each operation. The NVMC reports no errors: lrt_nvm reads every program back. CPU execution
 * from flash halts during an erase (~85 ms per page), so no interrupt is served meanwhile.
 *
 * Host tests redirect the register and memory accesses (LRT_NRF52_* macros in the .c file).
 */
#ifndef LRT_NVM_NRF52_H
#define LRT_NVM_NRF52_H

#include "lrt_nvm.h"

#define LRT_NRF52_PAGE_SIZE 4096u

/* Fill cfg's callbacks, context and mapping for a region at device address region_base
 * (page aligned, e.g. 0x000E0000 on the nRF52840-DK). Geometry first: tech flash, erase_value
 * 0xFF, prog_size 4, page_size 4096, page_count. LRT_ERR_ARG otherwise. */
int lrt_nvm_nrf52_init(lrt_nvm_config *cfg, uint32_t region_base);

#endif /* LRT_NVM_NRF52_H */
