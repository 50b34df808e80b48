/* stm32f4_sim.h - a host model of the STM32F4 FLASH controller for lrt_nvm_stm32f4.c.
 *
 * Compile the driver with -include stm32f4_sim.h: its register and memory accesses then call
 * this model instead of touching 0x40023C00 / 0x08000000. The model follows RM0390: LOCK set
 * at reset, the KEYR sequence unlocks CR (a wrong key locks it until reset), x32 programming
 * needs PG and PSIZE = 2, a word write ANDs into the array (NOR), SER + SNB + STRT erases a
 * sector of the F446 map to 0xFF, BSY reads set for a few polls after each operation, errors
 * latch in SR (rc_w1). Anything the driver does that the manual forbids is counted in
 * `protocol_errors` (which the tests require to stay 0) and flagged in SR like the part would.
 * The array is the caller's buffer for the region [base, base + size); word programs and
 * erases are also counted in an lrt_nvm_ram's counter arrays, so the NVM tests' checks apply.
 */
#ifndef STM32F4_SIM_H
#define STM32F4_SIM_H

#include <stdint.h>

#include "lrt_nvm_host.h"

typedef struct {
    uint8_t *mem;
    uint32_t base, size;
    lrt_nvm_ram *sink;        /* counters: word_progs, page_erases (per region page), violations */
    uint32_t acr, sr, cr;
    int key_stage;            /* 0: expect KEY1, 1: expect KEY2 */
    int key_fault;            /* wrong key: locked until reset */
    uint32_t busy;            /* SR reads that still show BSY */
    uint32_t wrp_sectors;     /* bit n: sector n write-protected (WRPERR) */
    unsigned long protocol_errors, erases, programs, polls, cache_flushes, unlocks;
} stm32f4_sim;

extern stm32f4_sim g_stm32f4_sim;

void stm32f4_sim_init(uint8_t *mem, uint32_t base, uint32_t size, lrt_nvm_ram *sink);
uint32_t stm32f4_sim_reg_read(uint32_t off);
void stm32f4_sim_reg_write(uint32_t off, uint32_t v);
void stm32f4_sim_mem_write32(uint32_t addr, uint32_t v);
const uint8_t *stm32f4_sim_mem_ptr(uint32_t addr);

#define LRT_STM32F4_REG_READ(off) stm32f4_sim_reg_read(off)
#define LRT_STM32F4_REG_WRITE(off, v) stm32f4_sim_reg_write((off), (v))
#define LRT_STM32F4_MEM_WRITE32(addr, v) stm32f4_sim_mem_write32((addr), (v))
#define LRT_STM32F4_MEM_PTR(addr) stm32f4_sim_mem_ptr(addr)

#endif /* STM32F4_SIM_H */
