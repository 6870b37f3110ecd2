/*
 * checkconfig: `ambit-node-proxy check-config`, offline validation of
 * policy and service directories (for CI pipelines of users).
 *
 * Loads each directory exactly as the running node-proxy would, prints
 * every error as "FILE:LINE: message" on stderr and a one-line summary per
 * directory on stdout.  Exit status: 0 all valid, 1 errors, 2 usage.
 */
#ifndef AMBIT_NP_CHECKCONFIG_H
#define AMBIT_NP_CHECKCONFIG_H

/* @argv[0] is the subcommand name ("check-config"); see the usage text. */
int checkconfig_main(int argc, char **argv);

#endif
