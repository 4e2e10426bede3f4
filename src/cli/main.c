/* main.c - the mpq command line: dispatches to the subcommands (table below). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const cli_command commands[] = {
    {"inspect", cli_inspect, "print a model's config and its table of quantizable layers"},
    {"eval", cli_eval, "evaluate a model (optionally quantized by a config): perplexity, KL, top-1"},
    {"run", cli_run, "create or continue a calibration job from a JSON spec and run its stages"},
    {"resume", cli_resume, "resume an interrupted or killed job from the database"},
    {"status", cli_status, "show jobs, or one job's stages and unit progress"},
    {"query", cli_query, "read the results database: jobs, per-layer metrics, solutions, SQL"},
    {"solve", cli_solve, "choose per-layer formats from a job's stored metrics under budgets (ILP / DP)"},
    {"pareto", cli_pareto, "exact Pareto frontier of (avg bits, predicted loss) of a job, and its knee"},
    {"kv", cli_kv, "KV-cache precision search: per-block pairs, pruning, clusters, frontier, joint budget"},
    {"refine", cli_refine, "interaction-aware loop: re-measure in context of the solution, re-solve, repeat"},
    {"pairs", cli_pairs, "measure pairwise interaction terms of layer damage around a solution"},
    {"bootstrap", cli_bootstrap, "bootstrap over calibration windows: how stable a solution and the knee are"},
    {"evaluate", cli_evaluate, "measure stored solutions and uniform baselines; predicted vs measured"},
    {"export", cli_export, "write a solution or config for llama.cpp, vLLM (compressed-tensors), KVTuner, HAWQ"},
    {"plot", cli_plot, "SVG plots of a job: frontier, bits per layer, sensitivity heat map, KV ladder"},
    {"report", cli_report, "Markdown report of a job with its plots"},
    {"quant", cli_quant, "bits per weight and error of candidates on a seeded Gaussian matrix or a layer"},
};
static const size_t n_commands = sizeof commands / sizeof commands[0];

static void usage(FILE *f) {
    fprintf(f, "usage: mpq COMMAND [OPTIONS] [ARGS]\n\n"
               "mpq measures per-layer quantization sensitivity of a transformer LM, stores it in a\n"
               "SQLite database, solves for per-layer formats under a budget and checks the result.\n\n"
               "commands:\n");
    for (size_t i = 0; i < n_commands; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n  mpq COMMAND --help    options of one command\n"
               "  mpq --version         print the version\n");
}

int main(int argc, char **argv) {
    /* Stored and printed numbers must not depend on the environment's BLAS thread count
     * (mpq.h, "BLAS threads"): BLAS runs one thread; workers give the parallelism. */
    mpq_blas_set_threads(1);
    if (argc < 2) {
        usage(stderr);
        return MPQ_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("mpq %s\n", mpq_version());
        return cli_finish_stdout("version", MPQ_EXIT_OK);
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return cli_finish_stdout("help", MPQ_EXIT_OK);
    }
    /* every command's output on stdout is checked once at the end: a full disk or a closed
     * pipe is exit 3, never 0 with the output lost */
    for (size_t i = 0; i < n_commands; i++)
        if (strcmp(cmd, commands[i].name) == 0) return cli_finish_stdout(cmd, commands[i].fn(argc - 1, argv + 1));
    fprintf(stderr, "mpq: unknown command '%s'\n", cmd);
    usage(stderr);
    return MPQ_EXIT_USAGE;
}
