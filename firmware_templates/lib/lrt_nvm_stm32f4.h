/* lrt_nvm_stm32f4.h - lrt_nvm backend for the STM32F4's on-chip flash (register level).
 *
 * The FLASH interface at 0x40023C00 (RM0390 for the STM32F446, RM0090 for F405/F407/F42x):
 * KEYR unlock, x32 programming (PSIZE = 2, 2.7-3.6 V), sector erase (SER + SNB + STRT), word
 * programming (PG), BSY polling, error flags in SR -> LRT_ERR_IO, the controller locked again
 * after every operation. An lrt_nvm "page" is one flash sector: the region must cover
 * sectors of one size (on the F446, sectors 5-7: 3 x 128 KiB at 0x08020000), with
 * cfg->page_size set to it. Reads go through the memory mapping.
 *
 * Code runs from the same single-bank flash, so the CPU stalls on instruction fetches while a
 * sector is erased (1-2 s for 128 KiB): commit only when that pause is acceptable.
 *
 * Host tests redirect the register and memory accesses (LRT_STM32F4_* macros in the .c file)
 * to a simulated controller.
 */
#ifndef LRT_NVM_STM32F4_H
#define LRT_NVM_STM32F4_H

#include "lrt_nvm.h"

#define LRT_STM32F4_FLASH_ORIGIN 0x08000000u /* sector 0 */

/* Fill cfg's callbacks (read, prog, erase, sync), context and mapping for a region starting at
 * device address region_base (e.g. 0x08020000). Geometry fields must be set first (tech flash,
 * erase_value 0xFF, prog_size 4, page_size = the sectors' size, page_count). LRT_ERR_ARG if
 * the region does not consist of whole sectors of page_size bytes. */
int lrt_nvm_stm32f4_init(lrt_nvm_config *cfg, uint32_t region_base);

/* Sector number holding device address addr and that sector's start and size (F4 map: four
 * 16 KiB, one 64 KiB, then 128 KiB sectors, up to 1 MiB per bank). -1 if outside. */
int lrt_nvm_stm32f4_sector(uint32_t addr, uint32_t *start, uint32_t *size);

#endif /* LRT_NVM_STM32F4_H */
