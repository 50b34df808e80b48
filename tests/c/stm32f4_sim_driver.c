/* stm32f4_sim_driver.c - lrt_nvm_stm32f4.c built against the host model of the FLASH
 * controller: the model's header first, so the driver's register/memory macros reach it. */
#include "stm32f4_sim.h"

#include "lrt_nvm_stm32f4.c"
