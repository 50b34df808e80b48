/* nrf52_sim.c - host model of the nRF52 NVMC (see nrf52_sim.h). */
#include "nrf52_sim.h"

#include <stdio.h>
#include <string.h>

/* A test harness, not library code: one simulated part per process. */
nrf52_sim g_nrf52_sim;

#define BUSY_POLLS 2u

static void violation(const char *what)
{
    if (g_nrf52_sim.protocol_errors++ < 5)
        fprintf(stderr, "nrf52 sim: %s (CONFIG %u)\n", what, (unsigned)g_nrf52_sim.config);
}

void nrf52_sim_init(uint8_t *mem, uint32_t base, uint32_t size, lrt_nvm_ram *sink)
{
    memset(&g_nrf52_sim, 0, sizeof g_nrf52_sim);
    g_nrf52_sim.mem = mem;
    g_nrf52_sim.base = base;
    g_nrf52_sim.size = size;
    g_nrf52_sim.sink = sink;
}

uint32_t nrf52_sim_reg_read(uint32_t off)
{
    nrf52_sim *s = &g_nrf52_sim;
    if (off == 0x400u) { /* READY */
        s->polls++;
        if (s->busy > 0u) {
            s->busy--;
            return 0;
        }
        return 1;
    }
    if (off == 0x504u)
        return s->config;
    violation("read of an unmodelled register");
    return 0;
}

void nrf52_sim_reg_write(uint32_t off, uint32_t v)
{
    nrf52_sim *s = &g_nrf52_sim;
    if (s->busy > 0u) {
        violation("register write while not READY");
        return;
    }
    if (off == 0x504u) {
        if (v > 2u)
            violation("bad CONFIG");
        s->config = v & 3u;
    } else if (off == 0x508u) { /* ERASEPAGE */
        if (s->config != 2u || v % 4096u != 0u || v < s->base || v - s->base >= s->size) {
            violation("ERASEPAGE without EEN, unaligned or outside the region");
            return;
        }
        memset(s->mem + (v - s->base), 0xFF, 4096u);
        s->erases++;
        if (s->sink != NULL && s->sink->page_erases != NULL)
            s->sink->page_erases[(v - s->base) / 4096u]++;
        s->busy = BUSY_POLLS;
    } else {
        violation("write of an unmodelled register");
    }
}

void nrf52_sim_mem_write32(uint32_t addr, uint32_t v)
{
    nrf52_sim *s = &g_nrf52_sim;
    uint32_t off = addr - s->base, i;
    uint8_t b[4];

    if (s->busy > 0u || s->config != 1u || addr % 4u != 0u || addr < s->base ||
        off + 4u > s->size) {
        violation("flash write while busy, without WEN, unaligned or outside the region");
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
        s->mem[off + i] &= b[i];
    s->programs++;
    s->busy = BUSY_POLLS;
}

const uint8_t *nrf52_sim_mem_ptr(uint32_t addr)
{
    nrf52_sim *s = &g_nrf52_sim;
    if (addr < s->base || addr - s->base > s->size) {
        violation("mapping outside the region");
        return s->mem;
    }
    return s->mem + (addr - s->base);
}
