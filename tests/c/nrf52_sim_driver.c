/* nrf52_sim_driver.c - lrt_nvm_nrf52.c built against the host model of the NVMC. */
#include "nrf52_sim.h"

#include "lrt_nvm_nrf52.c"
