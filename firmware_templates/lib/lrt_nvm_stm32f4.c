/* lrt_nvm_stm32f4.c - STM32F4 flash controller backend for lrt_nvm (see lrt_nvm_stm32f4.h). */
#include "lrt_nvm_stm32f4.h"
#include "lrt_nvm_mmio.h"

#include <string.h>

/* Register and memory accesses. A host test defines these to reach a simulated controller;
 * on the part they are volatile accesses at the real addresses. */
#ifndef LRT_STM32F4_FLASH_BASE
#define LRT_STM32F4_FLASH_BASE 0x40023C00u
#endif
#ifndef LRT_STM32F4_REG_READ
#define LRT_STM32F4_REG_READ(off)                                                                  \
    (*(volatile uint32_t *)(uintptr_t)(LRT_STM32F4_FLASH_BASE + (off)))
#endif
#ifndef LRT_STM32F4_REG_WRITE
#define LRT_STM32F4_REG_WRITE(off, v)                                                              \
    (*(volatile uint32_t *)(uintptr_t)(LRT_STM32F4_FLASH_BASE + (off)) = (v))
#endif
#ifndef LRT_STM32F4_MEM_WRITE32
#define LRT_STM32F4_MEM_WRITE32(addr, v) (*(volatile uint32_t *)(uintptr_t)(addr) = (v))
#endif
#ifndef LRT_STM32F4_MEM_PTR
#define LRT_STM32F4_MEM_PTR(addr) ((const uint8_t *)(uintptr_t)(addr))
#endif

/* FLASH registers (offsets) and bits */
#define ACR 0x00u
#define KEYR 0x04u
#define SR 0x0Cu
#define CR 0x10u
#define ACR_ICEN (1u << 9)
#define ACR_DCEN (1u << 10)
#define ACR_ICRST (1u << 11)
#define ACR_DCRST (1u << 12)
#define SR_EOP (1u << 0)
#define SR_OPERR (1u << 1)
#define SR_WRPERR (1u << 4)
#define SR_PGAERR (1u << 5)
#define SR_PGPERR (1u << 6)
#define SR_PGSERR (1u << 7)
#define SR_BSY (1u << 16)
#define SR_ERRORS (SR_OPERR | SR_WRPERR | SR_PGAERR | SR_PGPERR | SR_PGSERR)
#define CR_PG (1u << 0)
#define CR_SER (1u << 1)
#define CR_MER (1u << 2)
#define CR_SNB_SHIFT 3u
#define CR_SNB_MASK (0x1Fu << CR_SNB_SHIFT)
#define CR_PSIZE_X32 (2u << 8)
#define CR_PSIZE_MASK (3u << 8)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)
#define KEY1 0x45670123u
#define KEY2 0xCDEF89ABu

#define KIB 1024u

int lrt_nvm_stm32f4_sector(uint32_t addr, uint32_t *start, uint32_t *size)
{
    uint32_t off, s, st, sz;

    if (addr < LRT_STM32F4_FLASH_ORIGIN || addr - LRT_STM32F4_FLASH_ORIGIN >= 1024u * KIB)
        return -1;
    off = addr - LRT_STM32F4_FLASH_ORIGIN;
    if (off < 64u * KIB) {
        s = off / (16u * KIB);
        st = s * 16u * KIB;
        sz = 16u * KIB;
    } else if (off < 128u * KIB) {
        s = 4u;
        st = 64u * KIB;
        sz = 64u * KIB;
    } else {
        s = 4u + off / (128u * KIB);
        st = (s - 4u) * 128u * KIB;
        sz = 128u * KIB;
    }
    if (start != NULL)
        *start = LRT_STM32F4_FLASH_ORIGIN + st;
    if (size != NULL)
        *size = sz;
    return (int)s;
}

static void wait_idle(void)
{
    while (LRT_STM32F4_REG_READ(SR) & SR_BSY) {
    }
}

/* Unlock the controller with the key sequence, clearing stale status first. */
static int unlock(void)
{
    wait_idle();
    LRT_STM32F4_REG_WRITE(SR, SR_ERRORS | SR_EOP); /* rc_w1 */
    if (LRT_STM32F4_REG_READ(CR) & CR_LOCK) {
        LRT_STM32F4_REG_WRITE(KEYR, KEY1);
        LRT_STM32F4_REG_WRITE(KEYR, KEY2);
    }
    return (LRT_STM32F4_REG_READ(CR) & CR_LOCK) ? LRT_ERR_IO : LRT_OK;
}

/* Clear the operation bits and lock; LRT_ERR_IO if the operation left an error flag. */
static int finish(int err)
{
    uint32_t sr = LRT_STM32F4_REG_READ(SR);
    uint32_t cr = LRT_STM32F4_REG_READ(CR);

    LRT_STM32F4_REG_WRITE(CR, cr & ~(CR_PG | CR_SER | CR_MER | CR_SNB_MASK));
    LRT_STM32F4_REG_WRITE(CR, (cr & ~(CR_PG | CR_SER | CR_MER | CR_SNB_MASK)) | CR_LOCK);
    if (sr & SR_ERRORS) {
        LRT_STM32F4_REG_WRITE(SR, sr & (SR_ERRORS | SR_EOP));
        return LRT_ERR_IO;
    }
    return err;
}

static int f4_read(const lrt_nvm_config *c, uint32_t addr, void *buf, uint32_t len)
{
    memcpy(buf, LRT_STM32F4_MEM_PTR(lrt_nvm_mmio_base(c) + addr), len);
    return LRT_OK;
}

static int f4_prog(const lrt_nvm_config *c, uint32_t addr, const void *buf, uint32_t len)
{
    const uint8_t *src = (const uint8_t *)buf;
    uint32_t dst = lrt_nvm_mmio_base(c) + addr, i, cr;
    int err;

    if (addr % 4u != 0u || len % 4u != 0u)
        return LRT_ERR_ARG;
    err = unlock();
    if (err != LRT_OK)
        return finish(err);
    cr = LRT_STM32F4_REG_READ(CR) & ~(CR_PSIZE_MASK | CR_SER | CR_MER | CR_SNB_MASK);
    LRT_STM32F4_REG_WRITE(CR, cr | CR_PSIZE_X32 | CR_PG);
    for (i = 0; i < len; i += 4u) {
        uint32_t w;
        memcpy(&w, src + i, 4); /* little-endian core: the bytes land in order */
        LRT_STM32F4_MEM_WRITE32(dst + i, w);
        lrt_nvm_mmio_barrier();
        wait_idle();
        if (LRT_STM32F4_REG_READ(SR) & SR_ERRORS)
            break;
    }
    return finish(LRT_OK);
}

/* Caches may hold words of the sector as they were before the erase (RM0390 3.5.2). */
static void flush_caches(void)
{
    uint32_t acr = LRT_STM32F4_REG_READ(ACR);

    if (acr & ACR_DCEN) {
        LRT_STM32F4_REG_WRITE(ACR, acr & ~ACR_DCEN);
        LRT_STM32F4_REG_WRITE(ACR, (acr & ~ACR_DCEN) | ACR_DCRST);
        LRT_STM32F4_REG_WRITE(ACR, acr & ~(ACR_DCEN | ACR_DCRST));
    }
    if (acr & ACR_ICEN) {
        LRT_STM32F4_REG_WRITE(ACR, LRT_STM32F4_REG_READ(ACR) & ~ACR_ICEN);
        LRT_STM32F4_REG_WRITE(ACR, LRT_STM32F4_REG_READ(ACR) | ACR_ICRST);
        LRT_STM32F4_REG_WRITE(ACR, LRT_STM32F4_REG_READ(ACR) & ~ACR_ICRST);
    }
    LRT_STM32F4_REG_WRITE(ACR, LRT_STM32F4_REG_READ(ACR) | (acr & (ACR_ICEN | ACR_DCEN)));
}

static int f4_erase(const lrt_nvm_config *c, uint32_t addr)
{
    uint32_t a = lrt_nvm_mmio_base(c) + addr, start, size, cr;
    int snb = lrt_nvm_stm32f4_sector(a, &start, &size), err;

    if (snb < 0 || start != a || size != c->page_size)
        return LRT_ERR_ARG;
    err = unlock();
    if (err != LRT_OK)
        return finish(err);
    cr = LRT_STM32F4_REG_READ(CR) & ~(CR_PSIZE_MASK | CR_PG | CR_MER | CR_SNB_MASK);
    LRT_STM32F4_REG_WRITE(CR, cr | CR_PSIZE_X32 | CR_SER | ((uint32_t)snb << CR_SNB_SHIFT));
    LRT_STM32F4_REG_WRITE(CR, LRT_STM32F4_REG_READ(CR) | CR_STRT);
    lrt_nvm_mmio_barrier();
    wait_idle();
    err = finish(LRT_OK);
    flush_caches();
    return err;
}

static int f4_sync(const lrt_nvm_config *c)
{
    (void)c;
    /* every prog/erase waited for BSY to clear: it is in the array */
    wait_idle();
    return LRT_OK;
}

int lrt_nvm_stm32f4_init(lrt_nvm_config *cfg, uint32_t region_base)
{
    uint32_t p, start, size;

    if (cfg == NULL || cfg->tech != LRT_NVM_TECH_FLASH || cfg->prog_size != 4u ||
        cfg->erase_value != 0xFFu || cfg->page_size == 0u || cfg->page_count == 0u)
        return LRT_ERR_ARG;
    for (p = 0; p < cfg->page_count; p++) {
        uint32_t a = region_base + p * cfg->page_size;
        if (lrt_nvm_stm32f4_sector(a, &start, &size) < 0 || start != a || size != cfg->page_size)
            return LRT_ERR_ARG;
    }
    cfg->read = f4_read;
    cfg->prog = f4_prog;
    cfg->erase = f4_erase;
    cfg->sync = f4_sync;
    cfg->context = (void *)(uintptr_t)region_base;
    cfg->mapped = LRT_STM32F4_MEM_PTR(region_base);
    return LRT_OK;
}
