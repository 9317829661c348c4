/*
 * tests/docs/servers.c: the PostgreSQL and Redis servers that the doc
 * examples run against (tests/docs/examples.sh). Starts both (servers.h: on
 * free loopback ports, in temporary directories, as nobody when root),
 * writes
 *     DATABASE_URL=postgres://app:secret@127.0.0.1:PORT/app
 *     REDIS_URL=redis://127.0.0.1:PORT/0
 *     ready
 * on stdout, then waits for its stdin to close and stops them by PID. Exits
 * 1 (with why on stderr) when a server does not start.
 */
/* The shared test headers' helpers this program does not use are not errors here. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "harness.h"
#include "integration/support.h"
#include "integration/servers.h"

int main(void)
{
    static struct pg_server pg;
    static struct redis_server rs;
    char byte;

    if (pg_start(&pg) != 0 || redis_start(&rs) != 0) {
        pg_stop(&pg);
        redis_stop(&rs);
        return 1;
    }
    printf("DATABASE_URL=postgres://app:secret@127.0.0.1:%d/app\n", pg.port);
    printf("REDIS_URL=redis://127.0.0.1:%d/0\nready\n", rs.port);
    fflush(stdout);
    while (read(0, &byte, 1) > 0)
        ;
    pg_stop(&pg);
    redis_stop(&rs);
    return 0;
}
