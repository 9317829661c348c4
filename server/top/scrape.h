/*
 * scrape.h: --metrics-addr, the metrics on an address of their own, served on
 * the main thread by Tycho's own connection code (http/conn.c) through a
 * context of main's: the same framing, limits and timeouts as --port, and an
 * answer while every worker is busy in a handler. It answers GET and HEAD of
 * the metrics path; any other path is 404. Main thread only.
 */
#ifndef TYCHO_SCRAPE_H
#define TYCHO_SCRAPE_H

#include "core/tycho.h"

struct event_base;
struct tycho_config;
struct tycho_scrape;

/*
 * Binds cfg->metrics_addr ([HOST:]PORT; HOST default 127.0.0.1) on base and
 * prints "metrics on http://HOST:PORT/PATH". NULL with err filled when it
 * cannot (address in use, out of memory).
 */
struct tycho_scrape *tycho_scrape_new(struct event_base *base, const struct tycho_config *cfg,
                                      char *err);

/* Closes its listener and connections and frees it. NULL is a no-op. */
void tycho_scrape_free(struct tycho_scrape *s);

#endif
