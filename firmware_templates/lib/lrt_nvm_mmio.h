/* lrt_nvm_mmio.h - helpers shared by the register-level flash drivers (lrt_nvm_stm32f4.c,
 * lrt_nvm_nrf52.c). */
#ifndef LRT_NVM_MMIO_H
#define LRT_NVM_MMIO_H

#include "lrt_nvm.h"

/* The board passes the memory-mapped address of the weight region as the config's context. */
static inline uint32_t lrt_nvm_mmio_base(const lrt_nvm_config *c)
{
    return (uint32_t)(uintptr_t)c->context;
}

/* A programmed word must reach the flash interface before the busy/ready flag is sampled. */
static inline void lrt_nvm_mmio_barrier(void)
{
#if defined(__arm__)
    __asm__ volatile("dsb" ::: "memory");
#endif
}

#endif
