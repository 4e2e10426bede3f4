/*
 * mpq_plot.h - SVG plots written by mpq itself (no plotting dependency): the Pareto
 * frontier (predicted line, measured points, uniform configs marked), bits per layer of a
 * solution (bars grouped by block, coloured by kind), the sensitivity heat map (layers x
 * candidates, log colour scale with a legend) and the KV pair ladder per block.
 *
 * Two levels: renderers that take plain data (mpq_plot_*_svg), and mpq_plot_job which
 * reads a job from the results database and renders one plot.
 *
 *     char *svg = NULL;
 *     mpq_err err = {0};
 *     mpq_plot_opts o = mpq_plot_opts_default();
 *     if (mpq_plot_job(db, "s260k", MPQ_PLOT_FRONTIER, &o, &svg, &err) != MPQ_OK) ...
 *     fputs(svg, f);
 *     free(svg);
 *
 * Every SVG is standalone XML (UTF-8, xmlns set, white background, width/height in px) with
 * a <title>, axes with ticks and labels; data marks carry a class attribute ("pred", "meas",
 * "uniform", "bar", "cell", "kvpt", "chosen") so tests and scripts can count them.
 */
#ifndef MPQ_PLOT_H
#define MPQ_PLOT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A labelled point; label may be NULL. */
typedef struct mpq_plot_point {
    double x, y;
    const char *label;
} mpq_plot_point;

typedef struct mpq_plot_frontier_data {
    const char *title, *x_label, *y_label;
    const mpq_plot_point *pred;    /* predicted frontier, drawn as a line in x order */
    int n_pred;
    const mpq_plot_point *meas;    /* measured (evaluated) configurations */
    int n_meas;
    const mpq_plot_point *uniform; /* uniform configurations (one format everywhere) */
    int n_uniform;
    bool log_y;                    /* log-scale y (non-positive values are skipped) */
} mpq_plot_frontier_data;

typedef struct mpq_plot_bits_data {
    const char *title;
    int n;                     /* layers, in model order */
    const char *const *names;  /* "blk.0.attn_q" */
    const int *block;          /* block of each layer */
    const int *kind;           /* 0..6: q k v o gate up down (mpq_layer_kind) */
    const double *bits;        /* bits per weight */
    const char *const *cand;   /* candidate names (tooltips); may be NULL */
    const int64_t *n_params;   /* weights of each layer for the dashed mean; NULL = plain mean */
} mpq_plot_bits_data;

typedef struct mpq_plot_heatmap_data {
    const char *title, *metric;
    int n_rows, n_cols;
    const char *const *row_names; /* layers */
    const char *const *col_names; /* candidates */
    const double *values;         /* n_rows x n_cols row-major; NaN = not measured */
} mpq_plot_heatmap_data;

typedef struct mpq_plot_kv_data {
    const char *title, *metric;
    int n_blocks, n_pairs;
    const char *const *pair_names; /* x axis order, e.g. most to least precise */
    const double *values;          /* n_blocks x n_pairs; NaN = not measured */
    const int *chosen;             /* n_blocks pair index chosen by a solution, -1 none; may be NULL */
    /* n_blocks; may be NULL: for a block the solution splits by KV head, its heads' pairs in
     * head order joined by "," ("k2v2,k4v4,k4v4,k4v4"; dashed rings at those pairs, listed in
     * the legend), NULL for the others */
    const char *const *head_pairs;
} mpq_plot_kv_data;

/* Renderers: *svg gets a malloc'd NUL-terminated SVG document (free()).
 * MPQ_ERR_INVALID (no data / bad sizes), MPQ_ERR_NOMEM. */
mpq_status mpq_plot_frontier_svg(const mpq_plot_frontier_data *d, char **svg, mpq_err *err);
mpq_status mpq_plot_bits_svg(const mpq_plot_bits_data *d, char **svg, mpq_err *err);
mpq_status mpq_plot_heatmap_svg(const mpq_plot_heatmap_data *d, char **svg, mpq_err *err);
mpq_status mpq_plot_kv_svg(const mpq_plot_kv_data *d, char **svg, mpq_err *err);

typedef enum mpq_plot_kind {
    MPQ_PLOT_FRONTIER = 0, /* "frontier" */
    MPQ_PLOT_BITS,         /* "bits" */
    MPQ_PLOT_SENSITIVITY,  /* "sensitivity" */
    MPQ_PLOT_KV            /* "kv" */
} mpq_plot_kind;

mpq_status mpq_plot_kind_parse(const char *name, mpq_plot_kind *out, mpq_err *err);
const char *mpq_plot_kind_name(mpq_plot_kind k); /* static */

typedef struct mpq_plot_opts {
    const char *solution; /* bits / kv: solution name or id (NULL = newest optimal/feasible) */
    const char *metric;   /* sensitivity: metric (default "kl"); kv: "kv_" + metric;
                             frontier: measured metric "kl" (default) or "ppl" */
} mpq_plot_opts;

mpq_plot_opts mpq_plot_opts_default(void);

/* Reads job (name or id) from db and renders plot `what`. MPQ_ERR_NOTFOUND when the job,
 * solution or the data for the plot is missing (the message says which command makes it),
 * MPQ_ERR_FORMAT for a stored config that does not parse, MPQ_ERR_DB, MPQ_ERR_NOMEM. */
mpq_status mpq_plot_job(mpq_db *db, const char *job, mpq_plot_kind what, const mpq_plot_opts *opts, char **svg,
                        mpq_err *err);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_PLOT_H */
