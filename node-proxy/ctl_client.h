/*
 * ctl_client: `ambit-node-proxy ctl ...`, the operator's (and the tests')
 * command-line client of the control socket.  main() hands it argv from
 * the word "ctl" on.
 */
#ifndef AMBIT_CTL_CLIENT_H
#define AMBIT_CTL_CLIENT_H

/* argv[0] is "ctl".  Returns the process exit status: 0 success, 1 the
 * request failed (or, for status, node-proxy is not ready), 2 usage. */
int ctl_main(int argc, char **argv);

#endif
