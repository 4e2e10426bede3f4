/* main.c - the mpq command line: dispatches to the subcommands. */
#include "mpq/mpq.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("mpq %s\n", mpq_version());
        return 0;
    }
    fprintf(stderr, "usage: mpq COMMAND [ARGS]\n");
    return 2;
}
