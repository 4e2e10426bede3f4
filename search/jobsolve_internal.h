/*
 * jobsolve_internal.h - private parts shared by the files that solve a stored job
 * (mpq_jobsolve.h): budget / metric-expression parsing (jobsolve_parse.c), the problem
 * (jobsolve_problem.c), solving and storing (jobsolve_solve.c), the frontier
 * (jobsolve_pareto.c) and evaluation (jobsolve_evaluate.c). Not a public header.
 */
#ifndef MPQ_JOBSOLVE_INTERNAL_H
#define MPQ_JOBSOLVE_INTERNAL_H

#include "mpq/mpq_jobsolve.h"

/* "bits", "bytes", "bops", "latency" by resource kind; "avg-bits", ... by budget kind. */
extern const char *const jobsolve_resource_names[MPQ_N_RESOURCE_KINDS];
extern const char *const jobsolve_budget_names[5];

/* Resource a budget kind constrains. */
mpq_resource_kind jobsolve_budget_resource(mpq_budget_kind k);

/* Metric expression "[w*]name(+[w*]name)*". */
#define JOBSOLVE_MAX_TERMS 8
typedef struct jobsolve_expr {
    int n;
    double w[JOBSOLVE_MAX_TERMS];
    char name[JOBSOLVE_MAX_TERMS][MPQ_DB_NAME_MAX];
} jobsolve_expr;

/* MPQ_ERR_INVALID naming the expression and the offset. */
mpq_status jobsolve_expr_parse(const char *s, jobsolve_expr *e, mpq_err *err);

/* Stores solution s of p as `name` with its config (built on the job's stored layer table)
 * and provenance; *out gets the result (mpq_jobsolve_result_free). */
mpq_status jobsolve_store_choice(mpq_job *job, const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts,
                                 const mpq_solution *s, const char *solver, const char *name, double lp_bound,
                                 mpq_jobsolve_result **out, mpq_err *err);

#endif /* MPQ_JOBSOLVE_INTERNAL_H */
