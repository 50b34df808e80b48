/* lrt_nvm_mem.c - lrt_nvm backend over a memory region. */
#include "lrt_nvm_mem.h"

#include <string.h>

static int mem_read(const lrt_nvm_config *c, uint32_t addr, void *buf, uint32_t len)
{
    memcpy(buf, (const uint8_t *)c->context + addr, len);
    return LRT_OK;
}

static int mem_prog(const lrt_nvm_config *c, uint32_t addr, const void *buf, uint32_t len)
{
    uint8_t *dst = (uint8_t *)c->context + addr;
    const uint8_t *src = (const uint8_t *)buf;
    uint32_t i;
    if (c->tech == LRT_NVM_TECH_FLASH) {
        for (i = 0; i < len; i++) {
            dst[i] = (uint8_t)(dst[i] & src[i]); /* NOR: programming only clears bits */
        }
    } else {
        memcpy(dst, src, len);
    }
    return LRT_OK;
}

static int mem_erase(const lrt_nvm_config *c, uint32_t addr)
{
    memset((uint8_t *)c->context + addr, c->erase_value, c->page_size);
    return LRT_OK;
}

int lrt_nvm_mem_init(lrt_nvm_config *cfg, uint8_t *region)
{
    if (cfg == NULL || region == NULL) {
        return LRT_ERR_ARG;
    }
    cfg->read = mem_read;
    cfg->prog = mem_prog;
    cfg->erase = cfg->tech == LRT_NVM_TECH_FLASH ? mem_erase : NULL;
    cfg->sync = NULL;
    cfg->context = region;
    cfg->mapped = region;
    return LRT_OK;
}
