/*
 * answer.h: what the server answers itself without the application (--health,
 * --metrics), and the accounting at the end of every request (the access log
 * line, the request's metrics). Works on a request and the worker's context,
 * never on the connection: conn.c calls it, never the other way round. Runs
 * on the worker's thread.
 */
#ifndef TYCHO_ANSWER_H
#define TYCHO_ANSWER_H

#include <stdbool.h>
#include <stddef.h>

struct tycho_buf;
struct tycho_ctx;
struct tycho_req;

/* Whether r asks for a path the server answers itself (--health, or --metrics on --port). */
bool tycho_answer_is_builtin(const struct tycho_ctx *ctx, const struct tycho_req *r);

/*
 * Appends the answer to such a request to out (405 for a method other than
 * GET and HEAD) and sets r->route_label. date: the Date line for its head
 * (with --hsts's header on TLS). Returns the status written, or -1 when out
 * of memory (the connection must close).
 */
int tycho_answer_builtin(struct tycho_ctx *ctx, struct tycho_req *r, const char *date,
                         struct tycho_buf *out, bool keep_alive);

/*
 * The access log line (when ctx has an access log) and the metrics (with
 * --metrics) of r, which has been answered. remote: the client's address.
 */
void tycho_answer_account(struct tycho_ctx *ctx, const struct tycho_req *r, const char *remote);

/* "X-Request-Id: ID\r\n" for r into buf (cap >= 150), returned; "" when r has no id. */
const char *tycho_answer_id_line(const struct tycho_req *r, char *buf, size_t cap);

#endif
