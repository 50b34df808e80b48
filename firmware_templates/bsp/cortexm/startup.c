/* startup.c - reset handler and vector table for every Cortex-M board (no CMSIS needed).
 *
 * The linker script (cortexm/link.ld.j2) provides the symbols used here. We link with
 * -nostartfiles, so this replaces crt0: copy .data, zero .bss, enable the FPU where the
 * core has one (hard-float code traps on its first FP instruction otherwise), set up
 * semihosting stdio when linked against rdimon, then call main and exit with its status.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "lrt_board.h"

extern uint32_t __data_load__, __data_start__, __data_end__;
extern uint32_t __bss_start__, __bss_end__;
extern uint32_t __stack_top__;

/* Declared with arguments so main.c may define either main(void) or main(argc, argv):
 * there is no command line on a target, so it gets argc = 0 and argv = {NULL}. */
int main(int argc, char **argv);
void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));

#if LRT_SEMIHOSTING
extern void initialise_monitor_handles(void);
#endif

/* -nostartfiles drops crti/crtn, but newlib's exit() still calls __libc_fini_array. */
void _init(void);
void _fini(void);
void _init(void)
{
}
void _fini(void)
{
}

typedef void (*lrt_vector)(void);

/* 16 core exceptions; the firmware uses no peripheral interrupts (all I/O is polled). */
__attribute__((section(".isr_vector"), used)) const lrt_vector lrt_vectors[16] = {
    (lrt_vector)(uintptr_t)&__stack_top__,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0,
    0,
    0,
    0,
    SVC_Handler,
    0,
    0,
    PendSV_Handler,
    SysTick_Handler,
};

void Reset_Handler(void)
{
    uint32_t *src = &__data_load__;
    uint32_t *dst = &__data_start__;
    while (dst < &__data_end__) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start__; dst < &__bss_end__; ++dst) {
        *dst = 0;
    }
#if defined(__ARM_FP)
    /* CPACR: full access to CP10/CP11 (the FPU). */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
#if LRT_SEMIHOSTING
    initialise_monitor_handles();
#endif
    {
        static char *no_args[1] = {0};
        exit(main(0, no_args));
    }
}

void Default_Handler(void)
{
    for (;;) {
    }
}

/* Under an emulator with semihosting a fault must end the run (status 128+3 like a
 * signal), not hang the test suite; on a real board it parks the core for the debugger. */
void HardFault_Handler(void)
{
#if LRT_SEMIHOSTING
    _exit(131);
#else
    for (;;) {
    }
#endif
}
