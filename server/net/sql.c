/*
 * sql.c: making and freeing SQL jobs (see sql.h).
 */
#include "net/sql.h"

#include <stdlib.h>
#include <string.h>

struct tycho_sql_job *tycho_sql_job_new(const char *path, const char *sql, size_t sql_len,
                                        unsigned nparams)
{
    struct tycho_sql_job *j = calloc(1, sizeof(*j));

    if (!j)
        return NULL;
    j->path = strdup(path);
    j->sql = malloc(sql_len + 1);
    j->params = nparams ? calloc(nparams, sizeof(*j->params)) : NULL;
    j->nparams = nparams;
    if (!j->path || !j->sql || (nparams && !j->params)) {
        tycho_sql_job_free(j);
        return NULL;
    }
    memcpy(j->sql, sql, sql_len);
    j->sql[sql_len] = '\0';
    return j;
}

void tycho_sql_job_free(struct tycho_sql_job *j)
{
    if (!j)
        return;
    for (unsigned i = 0; i < j->nparams; i++)
        free(j->params[i].s);
    for (size_t i = 0; i < j->nrows * j->ncols; i++)
        free(j->cells[i].s);
    for (unsigned c = 0; j->cols && c < j->ncols; c++)
        free(j->cols[c]);
    free(j->cols);
    free(j->cells);
    free(j->params);
    free(j->sql);
    free(j->path);
    free(j);
}
