/* nrf52_sim.h - a host model of the nRF52 NVMC for lrt_nvm_nrf52.c (compile the driver with
 * -include nrf52_sim.h). CONFIG selects REN/WEN/EEN; a 32-bit flash write with WEN ANDs into
 * the array (NOR), a write to ERASEPAGE with EEN sets a 4 KiB page to 0xFF; READY reads 0 for a
 * few polls after each operation. Writes without the right CONFIG, accesses while busy and
 * addresses outside the region count as protocol errors (the tests require none); word
 * programs and page erases are also counted in an lrt_nvm_ram's counter arrays. */
#ifndef NRF52_SIM_H
#define NRF52_SIM_H

#include <stdint.h>

#include "lrt_nvm_host.h"

typedef struct {
    uint8_t *mem;
    uint32_t base, size;
    lrt_nvm_ram *sink;
    uint32_t config, busy;
    unsigned long protocol_errors, erases, programs, polls;
} nrf52_sim;

extern nrf52_sim g_nrf52_sim;

void nrf52_sim_init(uint8_t *mem, uint32_t base, uint32_t size, lrt_nvm_ram *sink);
uint32_t nrf52_sim_reg_read(uint32_t off);
void nrf52_sim_reg_write(uint32_t off, uint32_t v);
void nrf52_sim_mem_write32(uint32_t addr, uint32_t v);
const uint8_t *nrf52_sim_mem_ptr(uint32_t addr);

#define LRT_NRF52_REG_READ(off) nrf52_sim_reg_read(off)
#define LRT_NRF52_REG_WRITE(off, v) nrf52_sim_reg_write((off), (v))
#define LRT_NRF52_MEM_WRITE32(addr, v) nrf52_sim_mem_write32((addr), (v))
#define LRT_NRF52_MEM_PTR(addr) nrf52_sim_mem_ptr(addr)

#endif /* NRF52_SIM_H */
