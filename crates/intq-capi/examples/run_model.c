/* run_model: loads an .intq or .tflite model through intq's C API, runs it on .npy inputs (one
 * per graph input, of the input's dtype and element count) and prints each output; with --out
 * PREFIX it also writes output K's raw bytes to PREFIX<K>.bin. With --concurrent N, N threads
 * then run the one loaded model at once (every other thread through an execution context of its
 * own, IntqContext, on two kernel threads) and must all get the first run's bytes.
 *
 *   cc -O2 -I crates/intq-capi/include run_model.c target/release/libintq.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 *   ./run_model [--isa NAME] [--threads N] [--repeat N] [--concurrent N] [--out PREFIX] \
 *      MODEL INPUT.npy...
 */
#include "intq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *dtype_name(IntqDtype d) {
    switch (d) {
    case INTQ_DTYPE_UINT8: return "uint8";
    case INTQ_DTYPE_INT8: return "int8";
    case INTQ_DTYPE_INT32: return "int32";
    case INTQ_DTYPE_FLOAT32: return "float32";
    }
    return "?";
}

/* The NumPy type descriptor of a dtype, as NumPy writes it on a little-endian machine. */
static const char *npy_descr(IntqDtype d) {
    switch (d) {
    case INTQ_DTYPE_UINT8: return "'|u1'";
    case INTQ_DTYPE_INT8: return "'|i1'";
    case INTQ_DTYPE_INT32: return "'<i4'";
    case INTQ_DTYPE_FLOAT32: return "'<f4'";
    }
    return "?";
}

static int fail(const char *what, IntqStatus status) {
    fprintf(stderr, "run_model: %s: %s: %s\n", what, intq_status_name((int32_t)status),
            intq_last_error());
    return 1;
}

/* Reads a whole file; NULL (with a message) on failure. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *bigger = realloc(buf, cap *= 2);
            if (!bigger) free(buf);
            buf = bigger;
        }
    }
    if (ferror(f)) {
        perror(path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The data of a .npy file (version 1, 2 or 3 header), checked against the tensor: the dtype
 * descriptor, C order, and exactly `info->byte_size` bytes. Returns a pointer into `file`. */
static const unsigned char *npy_data(const char *path, const unsigned char *file, size_t len,
                                     const IntqTensorInfo *info) {
    if (len < 10 || memcmp(file, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "run_model: %s: not a .npy file\n", path);
        return NULL;
    }
    size_t start, header_len;
    if (file[6] == 1) {
        header_len = (size_t)file[8] | (size_t)file[9] << 8;
        start = 10;
    } else if (len >= 12) {
        header_len = (size_t)file[8] | (size_t)file[9] << 8 | (size_t)file[10] << 16 |
                     (size_t)file[11] << 24;
        start = 12;
    } else {
        fprintf(stderr, "run_model: %s: truncated .npy header\n", path);
        return NULL;
    }
    if (header_len > len - start) {
        fprintf(stderr, "run_model: %s: truncated .npy header\n", path);
        return NULL;
    }
    /* The header is a short Python dict; a bounded copy makes it a C string to search. */
    char header[4096];
    size_t h = header_len < sizeof header - 1 ? header_len : sizeof header - 1;
    memcpy(header, file + start, h);
    header[h] = 0;
    if (!strstr(header, npy_descr(info->dtype))) {
        fprintf(stderr, "run_model: %s: header %s, but input '%s' is %s\n", path, header,
                info->name, dtype_name(info->dtype));
        return NULL;
    }
    if (strstr(header, "'fortran_order': True")) {
        fprintf(stderr, "run_model: %s: Fortran order is not supported\n", path);
        return NULL;
    }
    size_t data_len = len - start - header_len;
    if (data_len != info->byte_size) {
        fprintf(stderr, "run_model: %s: %zu data bytes, but input '%s' takes %zu\n", path,
                data_len, info->name, info->byte_size);
        return NULL;
    }
    return file + start + header_len;
}

static void print_info(const char *kind, size_t i, const IntqTensorInfo *t) {
    printf("%s %zu '%s' %s [", kind, i, t->name, dtype_name(t->dtype));
    for (size_t d = 0; d < t->rank; d++) printf(d ? "x%zu" : "%zu", t->shape[d]);
    printf("]");
    if (t->quantization == INTQ_QUANTIZATION_PER_TENSOR)
        printf(" S=%g Z=%d", (double)t->scale, t->zero_point);
    else if (t->quantization == INTQ_QUANTIZATION_PER_CHANNEL)
        printf(" per-channel (%zu) on axis %zu", t->channel_count, t->channel_axis);
    printf("\n");
}

/* Prints up to 16 values and the index of the largest. */
static void print_values(const IntqTensorInfo *t, const void *data) {
    size_t best = 0;
    double best_v = 0;
    for (size_t i = 0; i < t->num_elements; i++) {
        double v;
        switch (t->dtype) {
        case INTQ_DTYPE_UINT8: v = ((const uint8_t *)data)[i]; break;
        case INTQ_DTYPE_INT8: v = ((const int8_t *)data)[i]; break;
        case INTQ_DTYPE_INT32: v = ((const int32_t *)data)[i]; break;
        default: v = ((const float *)data)[i]; break;
        }
        if (i < 16) printf(t->dtype == INTQ_DTYPE_FLOAT32 ? " %g" : " %.0f", v);
        if (i == 0 || v > best_v) {
            best = i;
            best_v = v;
        }
    }
    printf("%s  (argmax %zu)\n", t->num_elements > 16 ? " ..." : "", best);
}

/* One thread of --concurrent: runs the shared model into buffers of its own, several times
 * (with intq_model_run, or in a context of its own when `context` is set), and compares every
 * result with the first run's outputs. */
typedef struct {
    const IntqModel *model;
    const IntqBuffer *ins;
    size_t n_in;
    const IntqBufferMut *want;
    size_t n_out;
    int context;
    int ok;
} Worker;

static void *worker(void *arg) {
    Worker *w = arg;
    IntqBufferMut outs[64];
    w->ok = 0;
    if (w->n_out > 64) return NULL;
    for (size_t k = 0; k < w->n_out; k++) {
        outs[k].size = w->want[k].size;
        outs[k].data = malloc(outs[k].size ? outs[k].size : 1);
    }
    int ok = 1;
    IntqContext *ctx = NULL;
    if (w->context && (intq_context_create(w->model, &ctx) != INTQ_STATUS_OK ||
                       intq_context_set_threads(ctx, 2) != INTQ_STATUS_OK)) {
        fprintf(stderr, "run_model: context: %s\n", intq_last_error());
        ok = 0;
    }
    for (int r = 0; r < 8 && ok; r++) {
        IntqStatus s = ctx ? intq_context_run(ctx, w->ins, w->n_in, outs, w->n_out)
                           : intq_model_run(w->model, w->ins, w->n_in, outs, w->n_out);
        if (s != INTQ_STATUS_OK) {
            fprintf(stderr, "run_model: concurrent run: %s\n", intq_last_error());
            ok = 0;
        }
        for (size_t k = 0; ok && k < w->n_out; k++)
            ok = outs[k].data && memcmp(outs[k].data, w->want[k].data, outs[k].size) == 0;
    }
    intq_context_free(ctx);
    for (size_t k = 0; k < w->n_out; k++) free(outs[k].data);
    w->ok = ok;
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    IntqOptions options = intq_default_options();
    const char *out_prefix = NULL;
    long repeat = 0, concurrent = 0;
    int a = 1;
    for (; a + 1 < argc && strncmp(argv[a], "--", 2) == 0; a += 2) {
        if (strcmp(argv[a], "--isa") == 0) options.isa = argv[a + 1];
        else if (strcmp(argv[a], "--threads") == 0) options.threads = (uint32_t)atoi(argv[a + 1]);
        else if (strcmp(argv[a], "--repeat") == 0) repeat = atol(argv[a + 1]);
        else if (strcmp(argv[a], "--concurrent") == 0) concurrent = atol(argv[a + 1]);
        else if (strcmp(argv[a], "--out") == 0) out_prefix = argv[a + 1];
        else break;
    }
    if (argc - a < 1) {
        fprintf(stderr, "usage: %s [--isa NAME] [--threads N] [--repeat N] [--concurrent N] [--out PREFIX] "
                        "MODEL INPUT.npy...\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[a++];

    double t0 = now_s();
    IntqModel *model = NULL;
    IntqStatus s = intq_model_load(model_path, &options, &model);
    if (s != INTQ_STATUS_OK) return fail(model_path, s);
    double t_load = now_s() - t0;

    size_t n_in = 0, n_out = 0;
    intq_model_input_count(model, &n_in);
    intq_model_output_count(model, &n_out);
    const char *isa = NULL;
    size_t threads = 0;
    intq_model_execution(model, &isa, &threads);
    printf("intq %s: %s on %s, %zu thread(s)\n", intq_version(), model_path, isa, threads);
    if ((size_t)(argc - a) != n_in) {
        fprintf(stderr, "run_model: %s takes %zu input(s), %d given\n", model_path, n_in, argc - a);
        intq_model_free(model);
        return 2;
    }

    int rc = 1;
    IntqBuffer *ins = calloc(n_in, sizeof *ins);
    IntqBufferMut *outs = calloc(n_out, sizeof *outs);
    IntqTensorInfo *out_info = calloc(n_out, sizeof *out_info);
    unsigned char **files = calloc(n_in, sizeof *files);
    if (!ins || !outs || !out_info || !files) goto done;
    for (size_t i = 0; i < n_in; i++) {
        IntqTensorInfo info;
        if ((s = intq_model_input_info(model, i, &info)) != INTQ_STATUS_OK) {
            fail("input info", s);
            goto done;
        }
        print_info("input", i, &info);
        size_t len = 0;
        files[i] = read_file(argv[a + i], &len);
        if (!files[i]) goto done;
        const unsigned char *data = npy_data(argv[a + i], files[i], len, &info);
        if (!data) goto done;
        ins[i].data = data;
        ins[i].size = info.byte_size;
    }
    for (size_t k = 0; k < n_out; k++) {
        if ((s = intq_model_output_info(model, k, &out_info[k])) != INTQ_STATUS_OK) {
            fail("output info", s);
            goto done;
        }
        print_info("output", k, &out_info[k]);
        outs[k].size = out_info[k].byte_size;
        outs[k].data = malloc(outs[k].size ? outs[k].size : 1);
        if (!outs[k].data) goto done;
    }

    t0 = now_s();
    if ((s = intq_model_run(model, ins, n_in, outs, n_out)) != INTQ_STATUS_OK) {
        fail("run", s);
        goto done;
    }
    double t_first = now_s() - t0;
    printf("load %.3f ms, first run %.3f ms\n", t_load * 1e3, t_first * 1e3);
    if (repeat > 0) {
        t0 = now_s();
        for (long r = 0; r < repeat; r++) {
            if ((s = intq_model_run(model, ins, n_in, outs, n_out)) != INTQ_STATUS_OK) {
                fail("run", s);
                goto done;
            }
        }
        printf("%ld runs: %.3f us per run\n", repeat, (now_s() - t0) / (double)repeat * 1e6);
    }
    if (concurrent > 0) {
        pthread_t threads_[64];
        Worker workers[64];
        long n = concurrent < 64 ? concurrent : 64;
        for (long t = 0; t < n; t++) {
            workers[t] = (Worker){model, ins, n_in, outs, n_out, (int)(t % 2), 0};
            if (pthread_create(&threads_[t], NULL, worker, &workers[t]) != 0) {
                fprintf(stderr, "run_model: cannot start a thread\n");
                goto done;
            }
        }
        int all_ok = 1;
        for (long t = 0; t < n; t++) {
            pthread_join(threads_[t], NULL);
            all_ok &= workers[t].ok;
        }
        if (!all_ok) {
            fprintf(stderr, "run_model: a concurrent run differs from the first run\n");
            goto done;
        }
        printf("%ld threads x 8 concurrent runs: the first run's bytes\n", n);
    }
    for (size_t k = 0; k < n_out; k++) {
        printf("output %zu '%s':", k, out_info[k].name);
        print_values(&out_info[k], outs[k].data);
        if (out_prefix) {
            char path[4096];
            snprintf(path, sizeof path, "%s%zu.bin", out_prefix, k);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(outs[k].data, 1, outs[k].size, f) != outs[k].size) {
                perror(path);
                if (f) fclose(f);
                goto done;
            }
            if (fclose(f) != 0) {
                perror(path);
                goto done;
            }
        }
    }
    rc = 0;
done:
    for (size_t i = 0; files && i < n_in; i++) free(files[i]);
    for (size_t k = 0; outs && k < n_out; k++) free(outs[k].data);
    free(files);
    free(ins);
    free(outs);
    free(out_info);
    intq_model_free(model);
    return rc;
}
