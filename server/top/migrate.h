/*
 * migrate.h: `tycho migrate [--status] [--db URL] [DIR]`: applies the .sql
 * files of DIR/migrations in name order, each once (recorded in the table
 * tycho_migrations) and each in a transaction, to the database named by --db
 * or the one the scripts open. Main thread.
 */
#ifndef TYCHO_MIGRATE_H
#define TYCHO_MIGRATE_H

#include "core/config.h"

/* Runs it; prints a line per migration. Exit status: 0 done, 1 (printed why) otherwise. */
int tycho_migrate_run(const struct tycho_config *cfg);

#endif
