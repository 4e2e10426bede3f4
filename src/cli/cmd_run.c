/* cmd_run.c - `mpq run SPEC` and `mpq resume JOB`: run a calibration job's stages unit by
 * unit into the results database, with progress on stderr (one updating line on a terminal,
 * plain log lines every 5 s otherwise); SIGINT/SIGTERM stop after the current unit (exit 130).
 * Driver and spec: include/mpq/mpq_job.h. */
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq/mpq_db.h"
#include "mpq/mpq_job.h"

static const char *run_help =
    "usage: mpq run SPEC [--db PATH] [--workers N] [--quiet]\n"
    "\n"
    "Creates the job described by the JSON spec SPEC in the results database, or continues\n"
    "it when a job of the same name and the same (canonical) spec exists, and runs every\n"
    "pending unit of its stages (weight_error, layer_sensitivity, kv_sensitivity, hessian,\n"
    "noise_sensitivity, fisher: the spec's \"metrics\" list says which). Each\n"
    "unit's numbers and its done mark are committed together: a job stopped at any point\n"
    "(Ctrl-C, SIGTERM, even SIGKILL) continues with `mpq resume JOB`, and the stored\n"
    "numbers are identical to an uninterrupted run. A job has one runner at a time: a\n"
    "second run or resume of it is refused (exit 12) naming the pid, host and start of the\n"
    "one holding it; a killed runner's hold is taken over. Relative paths in SPEC are\n"
    "resolved against the current directory. The spec format is documented in the README.\n"
    "\n"
    "Under an MPI launcher (`mpirun -n N mpq run SPEC --db DB`; detected by the variable\n"
    "OMPI_COMM_WORLD_SIZE or PMIX_RANK) rank 0 owns the database and commits; the other ranks\n"
    "load the model and data themselves and compute units with --workers threads each; the\n"
    "database is the one a single process writes (README \"Runs across MPI ranks\").\n"
    "\n"
    "  -d, --db PATH           results database (default: mpq.db next to SPEC)\n"
    "  -n, --max-units N       stop after N units, as if interrupted (exit 130)\n"
    "  -w, --workers N         threads computing units (default: the number of processors);\n"
    "                          they share the weights; changes speed, never the\n"
    "                          stored numbers (whatever OPENBLAS_NUM_THREADS says); under\n"
    "                          MPI: threads of each rank (default: that host's processors)\n"
    "  -q, --quiet             no progress output\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes: 0 all units done, 2 usage, 3 a file cannot be read, 4 malformed spec/data,\n"
    "5 invalid spec (message names the key) or \"job exists with a different spec\" or an\n"
    "input file changed since the job was created, 6 unsupported (e.g. newer database\n"
    "schema), 7 database error, 12 the job is being run by another process, 130 interrupted\n"
    "(resume with `mpq resume JOB`). A database that cannot be written (read-only file,\n"
    "directory or file system) is exit 3, naming the reason. Under MPI: a rank whose model or\n"
    "data differ from the job's record is exit 5, a rank without them exit 3, a different\n"
    "mpq version or OpenBLAS kernel or an mpq built without MPI exit 6.\n";

static const char *resume_help =
    "usage: mpq resume JOB [--db PATH] [--workers N] [--quiet]\n"
    "\n"
    "Continues job JOB (name or id) with the spec stored in the database: runs every unit\n"
    "that is pending, was in flight when the job was killed, or failed. Refuses to run if\n"
    "the model or data files changed since the job was created (their SHA-256 is recorded).\n"
    "`mpirun -n N mpq resume JOB --db DB` spreads the units over N ranks as `mpq run` does.\n"
    "\n"
    "  -d, --db PATH           results database (default: $MPQ_DB, else ./mpq.db)\n"
    "  -n, --max-units N       stop after N units, as if interrupted (exit 130)\n"
    "  -w, --workers N         threads computing units (default: the number of processors);\n"
    "                          they share the weights; changes speed, never the\n"
    "                          stored numbers (whatever OPENBLAS_NUM_THREADS says); under\n"
    "                          MPI: threads of each rank (default: that host's processors)\n"
    "  -q, --quiet             no progress output\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit codes as for `mpq run`; 10 if there is no such job.\n";

/* ---- progress --------------------------------------------------------------------------- */

typedef struct progress_state {
    const char *cmd;
    bool quiet, tty, line_open;
    double last_log;
    long kill_after, int_after; /* test hooks: MPQ_TEST_KILL_AFTER_UNITS / MPQ_TEST_INT_AFTER_UNITS */
    long commits;
} progress_state;

static void fmt_eta(double s, char *buf, size_t n) {
    if (s < 0) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
}

static void on_progress(void *user, const mpq_job_progress *p) {
    progress_state *ps = user;
    if (p->event == MPQ_JOB_EVENT_UNIT_DONE) {
        ps->commits++;
        if (ps->kill_after > 0 && ps->commits >= ps->kill_after) raise(SIGKILL);
        if (ps->int_after > 0 && ps->commits == ps->int_after) raise(SIGINT);
    }
    if (ps->quiet) return;
    char eta[32];
    fmt_eta(p->eta_seconds, eta, sizeof eta);
    double now = mpq_time_now();
    switch (p->event) {
    case MPQ_JOB_EVENT_REFERENCE:
        fprintf(stderr, "mpq %s: %s: FP reference pass %.2f s\n", ps->cmd, p->job, p->seconds);
        break;
    case MPQ_JOB_EVENT_STAGE_START:
        if (!ps->tty)
            fprintf(stderr, "mpq %s: %s: stage %d/%d %s: %lld/%lld units done\n", ps->cmd, p->job, p->stage_index,
                    p->n_stages, p->stage, (long long)p->stage_done, (long long)p->stage_total);
        ps->last_log = now;
        break;
    case MPQ_JOB_EVENT_UNIT_FAILED:
        if (ps->line_open) fputc('\n', stderr);
        ps->line_open = false;
        fprintf(stderr, "mpq %s: %s: %s\n", ps->cmd, p->job, p->message ? p->message : "unit failed");
        break;
    case MPQ_JOB_EVENT_UNIT_DONE:
        if (ps->tty) {
            fprintf(stderr, "\r\033[K[%d/%d %s] %lld/%lld units  %.1f units/s  ETA %s", p->stage_index, p->n_stages,
                    p->stage, (long long)p->stage_done, (long long)p->stage_total, p->rate, eta);
            ps->line_open = true;
        } else if (now - ps->last_log >= 5.0) {
            fprintf(stderr, "mpq %s: %s: %s %lld/%lld units, %.1f units/s, ETA %s\n", ps->cmd, p->job, p->stage,
                    (long long)p->stage_done, (long long)p->stage_total, p->rate, eta);
            ps->last_log = now;
        }
        break;
    case MPQ_JOB_EVENT_STAGE_END:
        if (ps->line_open) fputc('\n', stderr);
        ps->line_open = false;
        fprintf(stderr, "mpq %s: %s: stage %d/%d %s: %lld/%lld units done (%.2f s)\n", ps->cmd, p->job,
                p->stage_index, p->n_stages, p->stage, (long long)p->stage_done, (long long)p->stage_total,
                p->seconds);
        break;
    }
    fflush(stderr);
}

static long env_long(const char *name) {
    const char *s = getenv(name);
    long v = 0;
    return (s && cli_parse_int(s, 1, 1L << 30, &v)) ? v : 0;
}

/* ---- shared option parsing and driver call ------------------------------------------------ */

typedef struct run_args {
    const char *db, *arg;
    long max_units, workers;
    bool quiet;
} run_args;

static int parse(const char *cmd, const char *help, int argc, char **argv, run_args *a) {
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},
                                         {"max-units", required_argument, 0, 'n'},
                                         {"workers", required_argument, 0, 'w'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:n:w:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->db = optarg; break;
        case 'n':
            if (!cli_parse_int(optarg, 1, 1L << 30, &a->max_units))
                return cli_usage_error(cmd, "bad --max-units '%s'", optarg);
            break;
        case 'w':
            if (!cli_parse_int(optarg, 1, 256, &a->workers))
                return cli_usage_error(cmd, "bad --workers '%s' (1..256)", optarg);
            break;
        case 'q': a->quiet = true; break;
        case 'h': fputs(help, stdout); return -1;
        default: return cli_usage_error(cmd, "bad option");
        }
    }
    if (optind >= argc) return cli_usage_error(cmd, "missing %s", strcmp(cmd, "run") == 0 ? "SPEC" : "JOB");
    if (optind + 1 < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
    a->arg = argv[optind];
    return 0;
}

/* Under an MPI launcher (mpq_job.h, "MPI"): ranks other than 0 serve rank 0 here and their
 * exit code is returned; -1 on rank 0 (or without MPI), which goes on as a single process. */
static int mpi_start(const char *cmd, const mpq_job_opts *o) {
    int rank = 0, n_ranks = 1;
    mpq_err err = {0};
    mpq_status st = mpq_job_mpi_init(&rank, &n_ranks, &err);
    if (st == MPQ_OK && rank == 0) return -1;
    /* SIGINT / SIGTERM only set the stop flag, which a serving rank does not read: it goes on
     * until rank 0 (which stops as a single process does) tells it to finish */
    if (st == MPQ_OK && (st = mpq_job_signals_install(&err)) == MPQ_OK) st = mpq_job_mpi_serve(o, &err);
    int rc = st == MPQ_OK ? MPQ_EXIT_OK : cli_fail(cmd, st, &err);
    mpq_job_mpi_finalize();
    return rc;
}

/* Rank 0 of an MPI run: how many units the other ranks computed (stderr, unless --quiet). */
static void mpi_report(const char *cmd, const run_args *a, mpq_status st) {
    int rank = 0, n = 1;
    mpq_err e = {0};
    if (a->quiet || (st != MPQ_OK && st != MPQ_ERR_INTERRUPTED) || !mpq_job_mpi_launched() || mpq_job_mpi_init(&rank, &n, &e) != MPQ_OK || n < 2) return;
    fprintf(stderr, "mpq %s: %d MPI ranks; units computed by the other ranks:", cmd, n);
    for (int r = 1; r < n; r++) fprintf(stderr, " rank %d: %lld%s", r, (long long)mpq_job_mpi_units(r), r + 1 < n ? "," : "");
    fputc('\n', stderr);
}

static int finish(const char *cmd, mpq_status st, mpq_err *err, mpq_db *db, const char *job, double t0) {
    if (st == MPQ_OK) {
        mpq_db_job j;
        mpq_err e2 = {0};
        int64_t done = 0, total = 0;
        if (mpq_db_job_find(db, job, &j, &e2) == MPQ_OK &&
            mpq_db_units_count(db, j.id, NULL, &done, &total, NULL, &e2) == MPQ_OK)
            printf("job '%s' (id %lld) done: %lld/%lld units, %.2f s; database %s\n", j.name, (long long)j.id,
                   (long long)done, (long long)total, mpq_time_now() - t0, mpq_db_path(db));
        return MPQ_EXIT_OK;
    }
    return cli_fail(cmd, st, err);
}

static void setup_progress(progress_state *ps, const char *cmd, const run_args *a, mpq_job_opts *o) {
    memset(ps, 0, sizeof *ps);
    ps->cmd = cmd;
    ps->quiet = a->quiet;
    ps->tty = isatty(fileno(stderr)) != 0;
    ps->kill_after = env_long("MPQ_TEST_KILL_AFTER_UNITS");
    ps->int_after = env_long("MPQ_TEST_INT_AFTER_UNITS");
    *o = mpq_job_opts_default();
    o->progress = on_progress;
    o->progress_user = ps;
    o->max_units = (int)a->max_units;
    o->n_workers = (int)a->workers; /* 0: one per processor */
}

int cli_run(int argc, char **argv) {
    run_args a;
    int rc = parse("run", run_help, argc, argv, &a);
    if (rc) return rc < 0 ? MPQ_EXIT_OK : rc;
    double t0 = mpq_time_now();
    mpq_err err = {0};
    mpq_job_spec *spec = NULL;
    mpq_db *db = NULL;
    char *db_buf = NULL;
    mpq_status st;
    progress_state ps;
    mpq_job_opts o;
    setup_progress(&ps, "run", &a, &o);
    if ((rc = mpi_start("run", &o)) >= 0) return rc;
    if ((st = mpq_job_spec_load(a.arg, &spec, &err)) != MPQ_OK) goto done;
    const char *db_path = a.db;
    if (!db_path) { /* mpq.db in the spec's directory */
        const char *slash = strrchr(a.arg, '/');
        size_t dl = slash ? (size_t)(slash - a.arg) + 1 : 0;
        if (!(db_buf = malloc(dl + sizeof "mpq.db"))) {
            st = mpq_err_set(&err, MPQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        memcpy(db_buf, a.arg, dl);
        memcpy(db_buf + dl, "mpq.db", sizeof "mpq.db");
        db_path = db_buf;
    }
    if ((st = mpq_db_open(db_path, MPQ_DB_CREATE, &db, &err)) != MPQ_OK) goto done;
    if ((st = mpq_job_signals_install(&err)) != MPQ_OK) goto done;
    st = mpq_job_run(db, spec, &o, NULL, &err);
    mpi_report("run", &a, st);
    rc = finish("run", st, &err, db, spec->name, t0);
    goto out;
done:
    rc = cli_fail("run", st, &err);
out:
    mpq_job_mpi_finalize(); /* under MPI: the other ranks stop */
    mpq_db_close(db);
    mpq_job_spec_free(spec);
    free(db_buf);
    return rc;
}

int cli_resume(int argc, char **argv) {
    run_args a;
    int rc = parse("resume", resume_help, argc, argv, &a);
    if (rc) return rc < 0 ? MPQ_EXIT_OK : rc;
    double t0 = mpq_time_now();
    mpq_err err = {0};
    mpq_db *db = NULL;
    mpq_status st;
    progress_state ps;
    mpq_job_opts o;
    setup_progress(&ps, "resume", &a, &o);
    if ((rc = mpi_start("resume", &o)) >= 0) return rc;
    if ((st = mpq_db_open(a.db ? a.db : cli_default_db(), MPQ_DB_READWRITE, &db, &err)) != MPQ_OK) {
        rc = cli_fail("resume", st, &err);
        goto out;
    }
    if ((st = mpq_job_signals_install(&err)) != MPQ_OK) {
        rc = cli_fail("resume", st, &err);
        goto out;
    }
    st = mpq_job_resume(db, a.arg, &o, &err);
    mpi_report("resume", &a, st);
    rc = finish("resume", st, &err, db, a.arg, t0);
out:
    mpq_job_mpi_finalize();
    mpq_db_close(db);
    return rc;
}
