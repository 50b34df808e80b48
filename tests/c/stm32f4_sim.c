/* stm32f4_sim.c - host model of the STM32F4 FLASH controller (see stm32f4_sim.h). */
#include "stm32f4_sim.h"

#include <stdio.h>
#include <string.h>

#include "lrt_nvm_stm32f4.h"

/* A test harness, not library code: one simulated part per process. */
stm32f4_sim g_stm32f4_sim;

#define ACR 0x00u
#define KEYR 0x04u
#define SR 0x0Cu
#define CR 0x10u
#define SR_EOP (1u << 0)
#define SR_OPERR (1u << 1)
#define SR_WRPERR (1u << 4)
#define SR_PGAERR (1u << 5)
#define SR_PGPERR (1u << 6)
#define SR_PGSERR (1u << 7)
#define SR_BSY (1u << 16)
#define CR_PG (1u << 0)
#define CR_SER (1u << 1)
#define CR_MER (1u << 2)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)
#define BUSY_POLLS 3u

static void violation(const char *what)
{
    stm32f4_sim *s = &g_stm32f4_sim;
    if (s->protocol_errors++ < 5)
        fprintf(stderr, "stm32f4 sim: %s (CR %08x SR %08x)\n", what, (unsigned)s->cr,
                (unsigned)s->sr);
}

void stm32f4_sim_init(uint8_t *mem, uint32_t base, uint32_t size, lrt_nvm_ram *sink)
{
    stm32f4_sim *s = &g_stm32f4_sim;
    memset(s, 0, sizeof *s);
    s->mem = mem;
    s->base = base;
    s->size = size;
    s->sink = sink;
    s->cr = CR_LOCK | (2u << 8); /* reset value: locked, PSIZE x32 */
}

uint32_t stm32f4_sim_reg_read(uint32_t off)
{
    stm32f4_sim *s = &g_stm32f4_sim;
    switch (off) {
    case ACR: return s->acr;
    case SR:
        s->polls++;
        if (s->busy > 0u) {
            s->busy--;
            return s->sr | SR_BSY;
        }
        return s->sr;
    case CR: return s->cr;
    default: violation("read of an unmodelled register"); return 0;
    }
}

static int busy(void)
{
    if (g_stm32f4_sim.busy > 0u) {
        violation("access while BSY");
        return 1;
    }
    return 0;
}

static void erase_sector(uint32_t snb)
{
    stm32f4_sim *s = &g_stm32f4_sim;
    uint32_t a, start = 0, size = 0;

    for (a = LRT_STM32F4_FLASH_ORIGIN; a < LRT_STM32F4_FLASH_ORIGIN + 0x80000u; a += 0x4000u)
        if (lrt_nvm_stm32f4_sector(a, &start, &size) == (int)snb)
            break;
    if (snb > 7u || ((s->cr >> 8) & 3u) != 2u) {
        s->sr |= SR_PGSERR; /* no such sector on the F446 / wrong parallelism */
        violation("erase: bad SNB or PSIZE");
        return;
    }
    if (s->wrp_sectors & (1u << snb)) {
        s->sr |= SR_WRPERR;
        return;
    }
    if (start < s->base || start + size > s->base + s->size) {
        violation("erase of a sector outside the NVM region");
        s->sr |= SR_WRPERR;
        return;
    }
    memset(s->mem + (start - s->base), 0xFF, size);
    s->erases++;
    if (s->sink != NULL && s->sink->page_erases != NULL)
        s->sink->page_erases[(start - s->base) / size]++;
    s->sr |= SR_EOP;
    s->busy = BUSY_POLLS;
}

void stm32f4_sim_reg_write(uint32_t off, uint32_t v)
{
    stm32f4_sim *s = &g_stm32f4_sim;
    switch (off) {
    case ACR:
        if ((v & (1u << 12)) && (s->acr & (1u << 10)))
            violation("DCRST while the data cache is enabled");
        if ((v & (1u << 11)) && (s->acr & (1u << 9)))
            violation("ICRST while the instruction cache is enabled");
        if (v & ((1u << 11) | (1u << 12)))
            s->cache_flushes++;
        s->acr = v & ~((1u << 11) | (1u << 12));
        break;
    case KEYR:
        if (s->key_fault || !(s->cr & CR_LOCK)) {
            violation("KEYR write while unlocked or after a wrong key");
            s->key_fault = 1;
            break;
        }
        if (s->key_stage == 0 && v == 0x45670123u) {
            s->key_stage = 1;
        } else if (s->key_stage == 1 && v == 0xCDEF89ABu) {
            s->key_stage = 0;
            s->cr &= ~CR_LOCK;
            s->unlocks++;
        } else {
            violation("wrong key sequence");
            s->key_fault = 1;
        }
        break;
    case SR:
        s->sr &= ~(v & (SR_EOP | SR_OPERR | SR_WRPERR | SR_PGAERR | SR_PGPERR | SR_PGSERR));
        break;
    case CR:
        if (busy())
            break;
        if (s->cr & CR_LOCK) {
            if (v != s->cr)
                violation("CR written while locked");
            break;
        }
        if ((v & CR_MER) || ((v & CR_PG) && (v & CR_SER)))
            violation("mass erase or PG together with SER");
        s->cr = v & ~CR_STRT;
        if (v & CR_LOCK)
            s->key_stage = 0;
        if (v & CR_STRT) {
            if (!(v & CR_SER))
                violation("STRT without SER");
            else
                erase_sector((v >> 3) & 0x1Fu);
        }
        break;
    default: violation("write of an unmodelled register"); break;
    }
}

void stm32f4_sim_mem_write32(uint32_t addr, uint32_t v)
{
    stm32f4_sim *s = &g_stm32f4_sim;
    uint32_t off = addr - s->base, i;
    uint8_t b[4];
    int snb;

    if (busy())
        return;
    if ((s->cr & CR_LOCK) || !(s->cr & CR_PG) || (s->cr & CR_SER)) {
        s->sr |= SR_PGSERR;
        violation("flash write without PG (or locked)");
        return;
    }
    if (((s->cr >> 8) & 3u) != 2u) {
        s->sr |= SR_PGPERR;
        violation("32-bit write with PSIZE != x32");
        return;
    }
    if (addr % 4u != 0u) {
        s->sr |= SR_PGAERR;
        violation("unaligned program");
        return;
    }
    if (addr < s->base || off + 4u > s->size) {
        s->sr |= SR_WRPERR;
        violation("program outside the NVM region");
        return;
    }
    snb = lrt_nvm_stm32f4_sector(addr, NULL, NULL);
    if (snb >= 0 && (s->wrp_sectors & (1u << snb))) {
        s->sr |= SR_WRPERR;
        return;
    }
    memcpy(b, &v, 4);
    if (s->sink != NULL) {
        int erased = 1;
        for (i = 0; i < 4u; i++)
            erased &= s->mem[off + i] == 0xFFu;
        if (!erased && s->sink->strict)
            s->sink->violations++;
        if (s->sink->word_progs != NULL)
            s->sink->word_progs[off / 4u]++;
    }
    for (i = 0; i < 4u; i++)
        s->mem[off + i] &= b[i]; /* NOR: programming only clears bits */
    s->programs++;
    s->sr |= SR_EOP;
    s->busy = BUSY_POLLS;
}

const uint8_t *stm32f4_sim_mem_ptr(uint32_t addr)
{
    stm32f4_sim *s = &g_stm32f4_sim;
    if (addr < s->base || addr - s->base > s->size) {
        violation("mapping outside the NVM region");
        return s->mem;
    }
    return s->mem + (addr - s->base);
}
