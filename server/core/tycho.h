/*
 * tycho.h: what every module's functions return, and the size of the error
 * messages they fill. The bottom of the build: it includes nothing.
 */
#ifndef TYCHO_TYCHO_H
#define TYCHO_TYCHO_H

#define TYCHO_OK 0
#define TYCHO_ERR (-1)
#define TYCHO_ERR_LEN 512 /* bytes of an error message buffer (char err[TYCHO_ERR_LEN]) */

#endif
