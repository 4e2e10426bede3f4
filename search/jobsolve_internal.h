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

/* Metric expression "TERM(+TERM)*", TERM = "[w*]name" or "[w*]name*name" (a product of a
 * per-layer metric, stored with candidate "", and a per-candidate metric). */
#define JOBSOLVE_MAX_TERMS 8
typedef struct jobsolve_expr {
    int n;
    double w[JOBSOLVE_MAX_TERMS];
    char name[JOBSOLVE_MAX_TERMS][MPQ_DB_NAME_MAX];  /* after resolve: the per-candidate factor */
    char name2[JOBSOLVE_MAX_TERMS][MPQ_DB_NAME_MAX]; /* second factor of a product ("" if none);
                                                        after resolve: the per-layer factor */
    char text[256];                                  /* the expression as given (for messages) */
} jobsolve_expr;

/* MPQ_ERR_INVALID naming the expression and the offset. */
mpq_status jobsolve_expr_parse(const char *s, jobsolve_expr *e, mpq_err *err);

/* Resolves the products of e against the rows job stored: of the two factors, the one stored
 * only with candidate "" goes to name2, the one stored only with candidates to name.
 * MPQ_ERR_INVALID when a factor has no rows in the job, when both factors are per-candidate or
 * both per-layer, or when a factor is stored both ways; MPQ_ERR_DB. Terms without a product
 * are left as they are. */
mpq_status jobsolve_expr_resolve(mpq_job *job, jobsolve_expr *e, mpq_err *err);

/* Stores solution s of p as `name` with its config (built on the job's stored layer table)
 * and provenance; *out gets the result (mpq_jobsolve_result_free). */
mpq_status jobsolve_store_choice(mpq_job *job, const mpq_jobsolve_problem *p, const mpq_jobsolve_opts *opts,
                                 const mpq_solution *s, const char *solver, const char *name, double lp_bound,
                                 mpq_jobsolve_result **out, mpq_err *err);

#endif /* MPQ_JOBSOLVE_INTERNAL_H */
