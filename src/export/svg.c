/*
 * svg.c - the SVG renderers of mpq_plot.h: frontier, bits per layer, sensitivity heat map,
 * KV ladder. Plain SVG 1.1 (W3C, https://www.w3.org/TR/SVG11/) written as text: axes with
 * "nice" ticks (1-2-5 steps; decades on log axes), a viridis-like colour ramp sampled at 5
 * stops (matplotlib's viridis, van der Walt & Smith 2015) for the heat map.
 */
#include "mpq/mpq_plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"

#define W 900
#define H 520
#define ML 90  /* margins: left, right, top, bottom */
#define MR 190
#define MT 56
#define MB 80

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                      "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

typedef struct axis {
    double lo, hi; /* data range (log10 of it when log) */
    bool log;
    double p0, p1; /* pixel range */
} axis;

static double ax_map(const axis *a, double v) {
    double t = a->log ? log10(v) : v;
    double f = a->hi > a->lo ? (t - a->lo) / (a->hi - a->lo) : 0.5;
    return a->p0 + f * (a->p1 - a->p0);
}

static double nice_step(double range) {
    double raw = range / 5.0;
    double p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* Sets the axis range from data min/max (padded, ticks at nice values). */
static void ax_fit(axis *a, double mn, double mx, bool log) {
    a->log = log;
    if (log) {
        if (!(mn > 0)) mn = 1e-12;
        if (!(mx > 0)) mx = mn * 10;
        a->lo = floor(log10(mn));
        a->hi = ceil(log10(mx));
        if (a->hi <= a->lo) a->hi = a->lo + 1;
        return;
    }
    if (!isfinite(mn) || !isfinite(mx)) mn = 0, mx = 1;
    if (mx <= mn) {
        double d = fabs(mn) > 0 ? fabs(mn) * 0.1 : 1;
        mn -= d, mx += d;
    }
    double st = nice_step(mx - mn);
    a->lo = floor(mn / st) * st;
    a->hi = ceil(mx / st) * st;
}

static void fmt_num(char *buf, size_t n, double v) {
    double a = fabs(v);
    if (v == 0) snprintf(buf, n, "0");
    else if (a >= 1e5 || a < 1e-3) snprintf(buf, n, "%.0e", v);
    else snprintf(buf, n, "%g", v);
}

static void text(sbuf *b, double x, double y, const char *anchor, int size, const char *s, const char *extra) {
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\"%s%s>", x, y, anchor, size,
              extra ? " " : "", extra ? extra : "");
    sb_xml(b, s);
    sb_puts(b, "</text>\n");
}

static void begin(sbuf *b, int w, int h, const char *title) {
    sb_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "font-family=\"DejaVu Sans, Arial, sans-serif\">\n<title>", w, h, w, h);
    sb_xml(b, title);
    sb_printf(b, "</title>\n<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", w, h);
    text(b, w / 2.0, 30, "middle", 18, title, "font-weight=\"bold\"");
}

static void end(sbuf *b) { sb_puts(b, "</svg>\n"); }

/* Frame, grid, ticks and labels of an x/y plot. */
static void axes(sbuf *b, const axis *x, const axis *y, const char *xl, const char *yl) {
    char t[32];
    sb_printf(b, "<g class=\"axes\" stroke=\"#333\" stroke-width=\"1\" fill=\"none\">\n"
                 "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n</g>\n",
              x->p0, y->p1, x->p1 - x->p0, y->p0 - y->p1);
    for (int ai = 0; ai < 2; ai++) {
        const axis *a = ai ? y : x;
        double st = a->log ? 1.0 : nice_step(a->hi - a->lo);
        int n = 0;
        for (double v = a->lo; v <= a->hi + st * 1e-6 && n < 60; v += st, n++) {
            double dv = a->log ? pow(10.0, v) : v;
            double p = ax_map(a, dv);
            fmt_num(t, sizeof t, a->log ? dv : (fabs(v) < st * 1e-9 ? 0 : v));
            if (ai == 0) {
                sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", p,
                          y->p0, p, y->p1);
                sb_printf(b, "<line class=\"tick\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", p,
                          y->p0, p, y->p0 + 5);
                text(b, p, y->p0 + 20, "middle", 12, t, NULL);
            } else {
                sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                          x->p0, p, x->p1, p);
                sb_printf(b, "<line class=\"tick\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
                          x->p0 - 5, p, x->p0, p);
                text(b, x->p0 - 8, p + 4, "end", 12, t, NULL);
            }
        }
    }
    if (xl) text(b, (x->p0 + x->p1) / 2, y->p0 + 48, "middle", 14, xl, NULL);
    if (yl) {
        char tr[96];
        double cy = (y->p0 + y->p1) / 2;
        snprintf(tr, sizeof tr, "transform=\"rotate(-90 %.1f %.1f)\"", 24.0, cy);
        text(b, 24, cy, "middle", 14, yl, tr);
    }
}

static void legend_item(sbuf *b, int i, const char *color, const char *shape, const char *label) {
    double x = W - MR + 20, y = MT + 10 + 22.0 * i;
    if (strcmp(shape, "line") == 0)
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", x, y,
                  x + 18, y, color);
    else if (strcmp(shape, "square") == 0)
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", x + 3, y - 6, color);
    else
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>\n", x + 9, y, color);
    text(b, x + 26, y + 4, "start", 12, label, NULL);
}

static mpq_status finish(sbuf *b, char **svg, mpq_err *err) {
    end(b);
    *svg = sb_take(b);
    if (!*svg) return mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
    return MPQ_OK;
}

/* ---- frontier --------------------------------------------------------------------------- */

static int cmp_x(const void *a, const void *b) {
    double d = ((const mpq_plot_point *)a)->x - ((const mpq_plot_point *)b)->x;
    return d < 0 ? -1 : d > 0;
}

mpq_status mpq_plot_frontier_svg(const mpq_plot_frontier_data *d, char **svg, mpq_err *err) {
    if (!d || !svg) return mpq_err_set(err, MPQ_ERR_INVALID, "plot frontier: NULL argument");
    *svg = NULL;
    if (d->n_pred + d->n_meas + d->n_uniform <= 0) return mpq_err_set(err, MPQ_ERR_INVALID, "plot frontier: no points");
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    const mpq_plot_point *sets[3] = {d->pred, d->meas, d->uniform};
    int ns[3] = {d->n_pred, d->n_meas, d->n_uniform};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < ns[s]; i++) {
            const mpq_plot_point *p = &sets[s][i];
            if (!isfinite(p->x) || !isfinite(p->y) || (d->log_y && p->y <= 0)) continue;
            xmn = fmin(xmn, p->x), xmx = fmax(xmx, p->x), ymn = fmin(ymn, p->y), ymx = fmax(ymx, p->y);
        }
    if (!isfinite(xmn)) return mpq_err_set(err, MPQ_ERR_INVALID, "plot frontier: no finite points");
    axis x = {.p0 = ML, .p1 = W - MR}, y = {.p0 = H - MB, .p1 = MT};
    ax_fit(&x, xmn, xmx, false);
    ax_fit(&y, ymn, ymx, d->log_y);
    sbuf b = {0};
    begin(&b, W, H, d->title ? d->title : "Pareto frontier");
    axes(&b, &x, &y, d->x_label, d->y_label);
    int li = 0;
    if (d->n_pred > 0) {
        mpq_plot_point *s = mpq_calloc((size_t)d->n_pred, sizeof *s);
        if (!s) {
            sb_free(&b);
            return mpq_err_set(err, MPQ_ERR_NOMEM, "plot: out of memory");
        }
        memcpy(s, d->pred, (size_t)d->n_pred * sizeof *s);
        qsort(s, (size_t)d->n_pred, sizeof *s, cmp_x);
        sb_puts(&b, "<polyline class=\"pred-line\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
        for (int i = 0; i < d->n_pred; i++)
            if (isfinite(s[i].y) && (!d->log_y || s[i].y > 0))
                sb_printf(&b, "%.1f,%.1f ", ax_map(&x, s[i].x), ax_map(&y, s[i].y));
        sb_puts(&b, "\"/>\n");
        for (int i = 0; i < d->n_pred; i++)
            if (isfinite(s[i].y) && (!d->log_y || s[i].y > 0))
                sb_printf(&b, "<circle class=\"pred\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#1f77b4\"/>\n",
                          ax_map(&x, s[i].x), ax_map(&y, s[i].y));
        free(s);
        legend_item(&b, li++, "#1f77b4", "line", "predicted frontier");
    }
    for (int i = 0; i < d->n_meas; i++) {
        const mpq_plot_point *p = &d->meas[i];
        if (!isfinite(p->x) || !isfinite(p->y) || (d->log_y && p->y <= 0)) continue;
        double px = ax_map(&x, p->x), py = ax_map(&y, p->y);
        sb_printf(&b, "<circle class=\"meas\" cx=\"%.1f\" cy=\"%.1f\" r=\"6\" fill=\"#d62728\" stroke=\"white\"/>\n", px,
                  py);
        if (p->label) text(&b, px + 8, py - 8, "start", 11, p->label, "fill=\"#d62728\"");
    }
    if (d->n_meas > 0) legend_item(&b, li++, "#d62728", "circle", "measured");
    for (int i = 0; i < d->n_uniform; i++) {
        const mpq_plot_point *p = &d->uniform[i];
        if (!isfinite(p->x) || !isfinite(p->y) || (d->log_y && p->y <= 0)) continue;
        double px = ax_map(&x, p->x), py = ax_map(&y, p->y);
        sb_printf(&b, "<rect class=\"uniform\" x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"#2ca02c\" "
                      "transform=\"rotate(45 %.1f %.1f)\"/>\n", px - 5, py - 5, px, py);
        if (p->label) text(&b, px + 8, py + 14, "start", 11, p->label, "fill=\"#2ca02c\"");
    }
    if (d->n_uniform > 0) legend_item(&b, li++, "#2ca02c", "square", "uniform config");
    return finish(&b, svg, err);
}

/* ---- bits per layer ----------------------------------------------------------------------- */

static const char *const kind_label[7] = {"q", "k", "v", "o", "gate", "up", "down"};

mpq_status mpq_plot_bits_svg(const mpq_plot_bits_data *d, char **svg, mpq_err *err) {
    if (!d || !svg || d->n <= 0 || !d->bits || !d->block || !d->kind)
        return mpq_err_set(err, MPQ_ERR_INVALID, "plot bits: no layers");
    *svg = NULL;
    double mx = 0, sum = 0, wsum = 0;
    int n_blocks = 0;
    for (int i = 0; i < d->n; i++) {
        double wt = d->n_params ? (double)d->n_params[i] : 1.0;
        if (isfinite(d->bits[i])) mx = fmax(mx, d->bits[i]), sum += wt * d->bits[i], wsum += wt;
        if (d->block[i] + 1 > n_blocks) n_blocks = d->block[i] + 1;
    }
    axis y = {.p0 = H - MB, .p1 = MT};
    ax_fit(&y, 0, mx > 0 ? mx : 1, false);
    y.lo = 0;
    axis x = {.lo = 0, .hi = 1, .p0 = ML, .p1 = W - MR};
    sbuf b = {0};
    begin(&b, W, H, d->title ? d->title : "bits per weight by layer");
    /* y axis only (x is categorical) */
    char t[32];
    sb_printf(&b, "<rect class=\"axes\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n",
              ML, MT, W - MR - ML, H - MB - MT);
    double st = nice_step(y.hi - y.lo);
    for (double v = 0; v <= y.hi + st * 1e-6; v += st) {
        double p = ax_map(&y, v);
        sb_printf(&b, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", ML, p,
                  W - MR, p);
        fmt_num(t, sizeof t, v);
        text(&b, ML - 8, p + 4, "end", 12, t, NULL);
    }
    char tr[96];
    snprintf(tr, sizeof tr, "transform=\"rotate(-90 24 %.1f)\"", (y.p0 + y.p1) / 2);
    text(&b, 24, (y.p0 + y.p1) / 2, "middle", 14, "bits per weight", tr);
    /* slots: one per layer plus one gap between blocks */
    int slots = d->n + (n_blocks > 1 ? n_blocks - 1 : 0);
    double sw = (x.p1 - x.p0) / (slots > 0 ? slots : 1);
    int slot = 0, prev_block = d->block[0];
    double block_start = x.p0;
    for (int i = 0; i < d->n; i++) {
        if (d->block[i] != prev_block) {
            snprintf(t, sizeof t, "blk %d", prev_block);
            text(&b, (block_start + x.p0 + slot * sw) / 2, H - MB + 20, "middle", 12, t, NULL);
            slot++;
            block_start = x.p0 + slot * sw;
            prev_block = d->block[i];
        }
        double v = isfinite(d->bits[i]) ? d->bits[i] : 0;
        double px = x.p0 + slot * sw + sw * 0.1, py = ax_map(&y, v);
        int k = d->kind[i] >= 0 && d->kind[i] < 7 ? d->kind[i] : 7;
        sb_printf(&b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
                      "<title>", px, py, sw * 0.8, y.p0 - py, palette[k]);
        sb_xml(&b, d->names ? d->names[i] : "");
        sb_printf(&b, " %s %.4f bits</title></rect>\n", d->cand && d->cand[i] ? d->cand[i] : "", v);
        slot++;
    }
    snprintf(t, sizeof t, "blk %d", prev_block);
    text(&b, (block_start + x.p0 + slot * sw) / 2, H - MB + 20, "middle", 12, t, NULL);
    double avg = wsum > 0 ? sum / wsum : 0;
    double pa = ax_map(&y, avg);
    sb_printf(&b, "<line class=\"avg\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"black\" "
                  "stroke-dasharray=\"6 4\"/>\n", ML, pa, W - MR, pa);
    text(&b, (x.p0 + x.p1) / 2, H - MB + 48, "middle", 14, "layers grouped by transformer block", NULL);
    for (int k = 0; k < 7; k++) legend_item(&b, k, palette[k], "square", kind_label[k]);
    snprintf(t, sizeof t, "mean %.4f bits", avg);
    legend_item(&b, 7, "black", "line", t);
    return finish(&b, svg, err);
}

/* ---- heat map ------------------------------------------------------------------------------ */

/* viridis at 0, .25, .5, .75, 1 */
static void ramp(double f, char out[8]) {
    static const double st[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    if (!(f >= 0)) f = 0;
    if (f > 1) f = 1;
    double s = f * 4;
    int i = (int)s;
    if (i > 3) i = 3;
    double t = s - i;
    int c[3];
    for (int k = 0; k < 3; k++) c[k] = (int)lround(st[i][k] + t * (st[i + 1][k] - st[i][k]));
    snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

mpq_status mpq_plot_heatmap_svg(const mpq_plot_heatmap_data *d, char **svg, mpq_err *err) {
    if (!d || !svg || d->n_rows <= 0 || d->n_cols <= 0 || !d->values)
        return mpq_err_set(err, MPQ_ERR_INVALID, "plot heatmap: no cells");
    *svg = NULL;
    double mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < d->n_rows * d->n_cols; i++) {
        double v = fabs(d->values[i]);
        if (isfinite(v) && v > 0) mn = fmin(mn, v), mx = fmax(mx, v);
    }
    if (!isfinite(mn)) mn = 1e-6, mx = 1;
    axis c;
    ax_fit(&c, mn, mx, true);
    int cw = d->n_cols > 0 ? (W - 140 - 200) / d->n_cols : 1;
    if (cw > 90) cw = 90;
    int ch = (H - MT - 60 + 12 * d->n_rows) / d->n_rows;
    if (ch > 22) ch = 22;
    if (ch < 8) ch = 8;
    int left = 140, top = MT + 40;
    int h = top + ch * d->n_rows + 40;
    int w = left + cw * d->n_cols + 200;
    if (w < 600) w = 600;
    sbuf b = {0};
    begin(&b, w, h, d->title ? d->title : "sensitivity");
    char col[8], t[64];
    for (int j = 0; j < d->n_cols; j++)
        text(&b, left + cw * (j + 0.5), top - 8, "middle", 11, d->col_names[j], NULL);
    for (int i = 0; i < d->n_rows; i++) {
        text(&b, left - 6, top + ch * (i + 0.5) + 4, "end", ch >= 12 ? 11 : 8, d->row_names[i], NULL);
        for (int j = 0; j < d->n_cols; j++) {
            double v = d->values[(size_t)i * (size_t)d->n_cols + (size_t)j];
            double x = left + cw * j, y = top + ch * i;
            if (!isfinite(v)) {
                sb_printf(&b, "<rect class=\"missing\" x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"#eee\" "
                              "stroke=\"white\"/>\n", x, y, cw, ch);
                continue;
            }
            double av = fabs(v) > 0 ? fabs(v) : pow(10.0, c.lo);
            ramp((log10(av) - c.lo) / (c.hi - c.lo), col);
            sb_printf(&b, "<rect class=\"cell\" x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"%s\" "
                          "stroke=\"white\"><title>", x, y, cw, ch, col);
            sb_xml(&b, d->row_names[i]);
            sb_puts(&b, " ");
            sb_xml(&b, d->col_names[j]);
            sb_printf(&b, " %.4g</title></rect>\n", v);
        }
    }
    /* colour bar legend, log scale */
    int lx = left + cw * d->n_cols + 40, ly0 = top, ly1 = top + ch * d->n_rows;
    if (ly1 - ly0 < 120) ly1 = ly0 + 120;
    int steps = 40;
    for (int s = 0; s < steps; s++) {
        ramp((double)s / (steps - 1), col);
        double y = ly1 - (double)(ly1 - ly0) * (s + 1) / steps;
        sb_printf(&b, "<rect class=\"legend\" x=\"%d\" y=\"%.1f\" width=\"18\" height=\"%.1f\" fill=\"%s\"/>\n", lx, y,
                  (double)(ly1 - ly0) / steps + 0.5, col);
    }
    for (double e = c.lo; e <= c.hi + 1e-9; e += 1) {
        double y = ly1 - (ly1 - ly0) * (e - c.lo) / (c.hi - c.lo);
        fmt_num(t, sizeof t, pow(10.0, e));
        sb_printf(&b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#333\"/>\n", lx + 18, y, lx + 23, y);
        text(&b, lx + 26, y + 4, "start", 11, t, NULL);
    }
    snprintf(t, sizeof t, "%s (log)", d->metric ? d->metric : "value");
    text(&b, lx, ly0 - 8, "start", 12, t, NULL);
    return finish(&b, svg, err);
}

/* ---- KV ladder -------------------------------------------------------------------------------- */

/* The positions (KV heads) at which `pair` appears in the ","-separated list, written as
 * "1,2,3" to out; returns how many. */
static int heads_of(const char *list, const char *pair, char *out, size_t n) {
    size_t pl = strlen(pair), len = 0;
    int h = 0, k = 0;
    out[0] = '\0';
    for (const char *p = list; p && *p; h++) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == pl && strncmp(p, pair, pl) == 0 && len < n) {
            int w = snprintf(out + len, n - len, "%s%d", k ? "," : "", h);
            len = w < 0 ? n : len + (size_t)w;
            k++;
        }
        p = e ? e + 1 : NULL;
    }
    return k;
}

mpq_status mpq_plot_kv_svg(const mpq_plot_kv_data *d, char **svg, mpq_err *err) {
    if (!d || !svg || d->n_blocks <= 0 || d->n_pairs <= 0 || !d->values)
        return mpq_err_set(err, MPQ_ERR_INVALID, "plot kv: no data");
    *svg = NULL;
    const char *const *hp = d->head_pairs;
    double mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < d->n_blocks * d->n_pairs; i++) {
        double v = d->values[i];
        if (isfinite(v) && v > 0) mn = fmin(mn, v), mx = fmax(mx, v);
    }
    if (!isfinite(mn)) return mpq_err_set(err, MPQ_ERR_INVALID, "plot kv: no positive values");
    axis y = {.p0 = H - MB, .p1 = MT}, x = {.p0 = ML, .p1 = W - MR};
    ax_fit(&y, mn, mx, true);
    x.lo = -0.5, x.hi = d->n_pairs - 0.5;
    sbuf b = {0};
    begin(&b, W, H, d->title ? d->title : "KV pair ladder per block");
    /* frame and log y axis; x is categorical (pair names) */
    sb_printf(&b, "<rect class=\"axes\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n",
              ML, MT, W - MR - ML, H - MB - MT);
    char t[64];
    for (double e = y.lo; e <= y.hi + 1e-9; e += 1) {
        double p = ax_map(&y, pow(10.0, e));
        sb_printf(&b, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", ML, p,
                  W - MR, p);
        fmt_num(t, sizeof t, pow(10.0, e));
        text(&b, ML - 8, p + 4, "end", 12, t, NULL);
    }
    for (int j = 0; j < d->n_pairs; j++) text(&b, ax_map(&x, j), H - MB + 20, "middle", 12, d->pair_names[j], NULL);
    text(&b, (x.p0 + x.p1) / 2, H - MB + 48, "middle", 14, "KV pair (K bits, V bits), most precise first", NULL);
    char tr[96];
    snprintf(tr, sizeof tr, "transform=\"rotate(-90 24 %.1f)\"", (y.p0 + y.p1) / 2);
    snprintf(t, sizeof t, "%s (log)", d->metric ? d->metric : "error");
    text(&b, 24, (y.p0 + y.p1) / 2, "middle", 14, t, tr);
    for (int i = 0; i < d->n_blocks; i++) {
        const char *col = palette[i % 8];
        sb_printf(&b, "<polyline class=\"kvline\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (int j = 0; j < d->n_pairs; j++) {
            double v = d->values[(size_t)i * (size_t)d->n_pairs + (size_t)j];
            if (isfinite(v) && v > 0) sb_printf(&b, "%.1f,%.1f ", ax_map(&x, j), ax_map(&y, v));
        }
        sb_puts(&b, "\"/>\n");
        for (int j = 0; j < d->n_pairs; j++) {
            double v = d->values[(size_t)i * (size_t)d->n_pairs + (size_t)j];
            if (!(isfinite(v) && v > 0)) continue;
            double px = ax_map(&x, j), py = ax_map(&y, v);
            sb_printf(&b, "<circle class=\"kvpt\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>blk %d %s %.4g"
                          "</title></circle>\n", px, py, col, i, d->pair_names[j], v);
            if (d->chosen && d->chosen[i] == j)
                sb_printf(&b, "<circle class=\"chosen\" cx=\"%.1f\" cy=\"%.1f\" r=\"9\" fill=\"none\" stroke=\"%s\" "
                              "stroke-width=\"2\"/>\n", px, py, col);
            char hs[256];
            if (hp && hp[i] && heads_of(hp[i], d->pair_names[j], hs, sizeof hs) > 0)
                sb_printf(&b, "<circle class=\"chosen-head\" cx=\"%.1f\" cy=\"%.1f\" r=\"9\" fill=\"none\" "
                              "stroke=\"%s\" stroke-width=\"2\" stroke-dasharray=\"3,2\"><title>blk %d %s: KV heads "
                              "%s</title></circle>\n", px, py, col, i, d->pair_names[j], hs);
        }
        snprintf(t, sizeof t, hp && hp[i] ? "blk %d (by head)" : "blk %d", i);
        if (i < 16) legend_item(&b, i, col, "circle", t);
    }
    int nl = d->n_blocks < 16 ? d->n_blocks : 16;
    if (d->chosen) legend_item(&b, nl++, "#333", "circle", "ring: chosen pair");
    bool any_heads = false;
    for (int i = 0; hp && i < d->n_blocks; i++) any_heads = any_heads || hp[i];
    if (any_heads) legend_item(&b, nl, "#333", "circle", "dashed: some heads' pair");
    return finish(&b, svg, err);
}
