/* lrt_nvm_nrf52.c - nRF52 NVMC backend for lrt_nvm (see lrt_nvm_nrf52.h). */
#include "lrt_nvm_nrf52.h"
#include "lrt_nvm_mmio.h"

#include <string.h>

#ifndef LRT_NRF52_NVMC_BASE
#define LRT_NRF52_NVMC_BASE 0x4001E000u
#endif
#ifndef LRT_NRF52_REG_READ
#define LRT_NRF52_REG_READ(off) (*(volatile uint32_t *)(uintptr_t)(LRT_NRF52_NVMC_BASE + (off)))
#endif
#ifndef LRT_NRF52_REG_WRITE
#define LRT_NRF52_REG_WRITE(off, v)                                                                \
    (*(volatile uint32_t *)(uintptr_t)(LRT_NRF52_NVMC_BASE + (off)) = (v))
#endif
#ifndef LRT_NRF52_MEM_WRITE32
#define LRT_NRF52_MEM_WRITE32(addr, v) (*(volatile uint32_t *)(uintptr_t)(addr) = (v))
#endif
#ifndef LRT_NRF52_MEM_PTR
#define LRT_NRF52_MEM_PTR(addr) ((const uint8_t *)(uintptr_t)(addr))
#endif

#define READY 0x400u
#define CONFIG 0x504u
#define ERASEPAGE 0x508u
#define CONFIG_REN 0u
#define CONFIG_WEN 1u
#define CONFIG_EEN 2u

static void wait_ready(void)
{
    while ((LRT_NRF52_REG_READ(READY) & 1u) == 0u) {
    }
}

static void set_config(uint32_t mode)
{
    wait_ready();
    LRT_NRF52_REG_WRITE(CONFIG, mode);
    lrt_nvm_mmio_barrier();
    wait_ready();
}

static int nrf_read(const lrt_nvm_config *c, uint32_t addr, void *buf, uint32_t len)
{
    memcpy(buf, LRT_NRF52_MEM_PTR(lrt_nvm_mmio_base(c) + addr), len);
    return LRT_OK;
}

static int nrf_prog(const lrt_nvm_config *c, uint32_t addr, const void *buf, uint32_t len)
{
    const uint8_t *src = (const uint8_t *)buf;
    uint32_t dst = lrt_nvm_mmio_base(c) + addr, i;

    if (addr % 4u != 0u || len % 4u != 0u)
        return LRT_ERR_ARG;
    set_config(CONFIG_WEN);
    for (i = 0; i < len; i += 4u) {
        uint32_t w;
        memcpy(&w, src + i, 4);
        LRT_NRF52_MEM_WRITE32(dst + i, w);
        lrt_nvm_mmio_barrier();
        wait_ready();
    }
    set_config(CONFIG_REN);
    return LRT_OK;
}

static int nrf_erase(const lrt_nvm_config *c, uint32_t addr)
{
    uint32_t a = lrt_nvm_mmio_base(c) + addr;

    if (a % LRT_NRF52_PAGE_SIZE != 0u)
        return LRT_ERR_ARG;
    set_config(CONFIG_EEN);
    LRT_NRF52_REG_WRITE(ERASEPAGE, a);
    lrt_nvm_mmio_barrier();
    wait_ready();
    set_config(CONFIG_REN);
    return LRT_OK;
}

static int nrf_sync(const lrt_nvm_config *c)
{
    (void)c;
    wait_ready();
    return LRT_OK;
}

int lrt_nvm_nrf52_init(lrt_nvm_config *cfg, uint32_t region_base)
{
    if (cfg == NULL || cfg->tech != LRT_NVM_TECH_FLASH || cfg->prog_size != 4u ||
        cfg->erase_value != 0xFFu || cfg->page_size != LRT_NRF52_PAGE_SIZE ||
        cfg->page_count == 0u || region_base % LRT_NRF52_PAGE_SIZE != 0u)
        return LRT_ERR_ARG;
    cfg->read = nrf_read;
    cfg->prog = nrf_prog;
    cfg->erase = nrf_erase;
    cfg->sync = nrf_sync;
    cfg->context = (void *)(uintptr_t)region_base;
    cfg->mapped = LRT_NRF52_MEM_PTR(region_base);
    return LRT_OK;
}
