/* lrt_cycles.c - 32-bit cycle counter from SysTick (24-bit) plus a wrap count.
 *
 * SysTick rather than DWT->CYCCNT: QEMU does not implement CYCCNT (it reads 0), and
 * under `-icount shift=0` SysTick advances by a fixed number of instructions per tick,
 * which makes cost measurements in QEMU repeatable. SysTick clocks from the core clock
 * (CLKSOURCE = 1), so on a real board a tick is a CPU cycle.
 */
#include "lrt_platform.h"

#define LRT_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define LRT_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define LRT_SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define LRT_SYST_RELOAD 0x00FFFFFFu

static volatile uint32_t lrt_systick_wraps;

void SysTick_Handler(void);
void lrt_cycles_start(void);

void SysTick_Handler(void)
{
    lrt_systick_wraps++;
}

void lrt_cycles_start(void)
{
    LRT_SYST_RVR = LRT_SYST_RELOAD;
    LRT_SYST_CVR = 0;
    LRT_SYST_CSR = 0x7u; /* ENABLE | TICKINT | CLKSOURCE = core clock */
}

uint32_t lrt_platform_cycles(void)
{
    uint32_t hi;
    uint32_t cur;
    /* Re-read the wrap count until it is stable around the counter sample, so a wrap
     * between the two reads cannot produce a value 2^24 too low or too high. */
    do {
        hi = lrt_systick_wraps;
        cur = LRT_SYST_CVR;
    } while (hi != lrt_systick_wraps);
    return (hi << 24) + (LRT_SYST_RELOAD - cur);
}
