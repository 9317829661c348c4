/*
 * vm.c: a Lua state's record (vm.h), found from any coroutine of the state
 * through the registry.
 */
#include "lua/vm.h"
#include "core/tycho.h"

#include <event2/event.h>
#include <stdlib.h>
#include <sys/time.h>

const char tycho_key_vm = 0;
const char tycho_key_handlers = 0;
const char tycho_key_on_start = 0;

struct tycho_vm *tycho_vm_of(lua_State *L)
{
    struct tycho_vm *vm;

    lua_pushlightuserdata(L, (void *)&tycho_key_vm);
    lua_rawget(L, LUA_REGISTRYINDEX);
    vm = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return vm;
}

double tycho_vm_now(const struct tycho_vm *vm)
{
    struct timeval now;

    if (!vm->base || event_base_gettimeofday_cached(vm->base, &now) < 0)
        gettimeofday(&now, NULL);
    return (double)now.tv_sec + (double)now.tv_usec / 1e6;
}

void tycho_vm_add_static(struct tycho_vm *vm, int handler_id, struct tycho_static *mount)
{
    struct tycho_static_route *grown = realloc(vm->statics, sizeof(*grown) * (vm->nstatics + 1));

    if (!grown)
        return;                       /* the route still works, through its Lua handler */
    vm->statics = grown;
    vm->statics[vm->nstatics].handler_id = handler_id;
    vm->statics[vm->nstatics].mount = mount;
    vm->nstatics++;
}

int tycho_vm_add_route_opts(struct tycho_vm *vm, int handler_id,
                            const struct tycho_route_opts *o)
{
    struct tycho_route_opts_entry *grown =
        realloc(vm->route_opts, sizeof(*grown) * (vm->nroute_opts + 1));

    if (!grown)
        return TYCHO_ERR;
    vm->route_opts = grown;
    vm->route_opts[vm->nroute_opts].handler_id = handler_id;
    vm->route_opts[vm->nroute_opts].opts = *o;
    vm->nroute_opts++;
    return TYCHO_OK;
}

const struct tycho_route_opts *tycho_vm_route_opts(const struct tycho_vm *vm, int handler_id)
{
    /* A few routes have options: a scan, asked once per request with a body. */
    for (unsigned i = 0; i < vm->nroute_opts; i++)
        if (vm->route_opts[i].handler_id == handler_id)
            return &vm->route_opts[i].opts;
    return NULL;
}
