/*
 * Unit tests of store.c, the backend-independent layer, with fake backends: the worker path
 * (per-uaid ordering across many requests and threads, completions on the loop thread,
 * limits handed to workers, closing with requests queued and executing), the loop-thread path
 * (exec inside submit, completion later from a prepare handle without a wake-up, after the turn's
 * idle handles, in order, also for requests submitted by completions or timers and across a
 * close), the housekeeping tick, requests
 * without a callback, reuse of a request, bad arguments to store_create(), and every failure inside
 * it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

/*
 * store.c is included (h2o style) so that its allocations and libuv calls can be made to
 * fail: each fake fails its fail_at-th call after arming.
 */
struct failer {
    long calls, fail_at;
};
static struct failer f_calloc, f_thread, f_async, f_mutex, f_cond;
static long async_sends; /* uv_async_send() calls, to show the loop-thread path makes none */

static bool should_fail(struct failer *f)
{
    f->calls++;
    return f->fail_at && f->calls == f->fail_at;
}

static void arm(struct failer *f, long fail_at)
{
    f->calls = 0;
    f->fail_at = fail_at;
}

static void *fake_calloc(size_t n, size_t size)
{
    return should_fail(&f_calloc) ? NULL : calloc(n, size);
}

static int fake_thread_create(uv_thread_t *tid, uv_thread_cb entry, void *arg)
{
    return should_fail(&f_thread) ? UV_EAGAIN : uv_thread_create(tid, entry, arg);
}

static int fake_async_init(uv_loop_t *loop, uv_async_t *async, uv_async_cb cb)
{
    return should_fail(&f_async) ? UV_EMFILE : uv_async_init(loop, async, cb);
}

static int fake_async_send(uv_async_t *async)
{
    async_sends++;
    return uv_async_send(async);
}

static int fake_mutex_init(uv_mutex_t *m)
{
    return should_fail(&f_mutex) ? UV_ENOMEM : uv_mutex_init(m);
}

static int fake_cond_init(uv_cond_t *c)
{
    return should_fail(&f_cond) ? UV_ENOMEM : uv_cond_init(c);
}

#define calloc           fake_calloc
#define uv_thread_create fake_thread_create
#define uv_async_init    fake_async_init
#define uv_async_send    fake_async_send
#define uv_mutex_init    fake_mutex_init
#define uv_cond_init     fake_cond_init
#include "../../src/store.c"
#undef calloc
#undef uv_thread_create
#undef uv_async_init
#undef uv_async_send
#undef uv_mutex_init
#undef uv_cond_init

#define MAX_REQS   4096
#define CHAIN_STEP 100

/* What the fake backend saw of each request, indexed by req->owner. */
struct seen {
    uv_thread_t thread;
    unsigned worker;
    uint64_t exec_seq; /* global order of exec calls */
    size_t max_channels;
    bool executed;
};

struct fake {
    uv_mutex_t lock;
    uint64_t exec_seq;
    struct seen seen[MAX_REQS];
    unsigned sleep_us; /* how long each exec takes */
    int ticks;
    uv_thread_t tick_thread;
    bool freed;
};

static uv_thread_t loop_thread;

static void fake_exec(void *backend, unsigned worker, const struct store_limits *limits,
                      struct store_req *req)
{
    struct fake *f = backend;
    assert_null(req->updates); /* cleared before exec */
    assert_false(req->reset);
    if (f->sleep_us)
        usleep(f->sleep_us);
    uv_mutex_lock(&f->lock);
    struct seen *s = &f->seen[req->owner];
    s->thread = uv_thread_self();
    s->worker = worker;
    s->exec_seq = ++f->exec_seq;
    s->max_channels = limits->max_channels;
    s->executed = true;
    uv_mutex_unlock(&f->lock);

    /* A result that the close path must discard. */
    req->updates = calloc(1, sizeof(*req->updates));
    req->n_updates = 1;
    req->updates[0].data = strdup("result");
    req->updates[0].data_len = 6;
    req->status = STORE_OK;
}

static void fake_tick(void *backend)
{
    struct fake *f = backend;
    f->ticks++;
    f->tick_thread = uv_thread_self();
}

static void fake_free(void *backend)
{
    struct fake *f = backend;
    f->freed = true;
}

static const struct store_backend_ops fake_ops = {
    .name = "fake",
    .exec = fake_exec,
    .free = fake_free,
};

static const struct store_backend_ops fake_tick_ops = {
    .name = "fake-tick",
    .exec = fake_exec,
    .tick = fake_tick,
    .tick_ms = 10,
    .free = fake_free,
};

static const struct store_limits limits = {
    .max_channels = 7,
    .timeout_live_ms = 1000,
    .timeout_del_ms = 1000,
};

/* The test's view: completions in arrival order. */
struct fx {
    uv_loop_t loop;
    struct fake *fake;
    struct store *st;
    uint64_t completed[MAX_REQS]; /* owners, in completion order */
    size_t n_completed;
    enum store_status status[MAX_REQS];
    size_t n_updates[MAX_REQS];
    bool in_submit;
    bool close_at_first; /* the first completion closes the store */
    bool resubmit;       /* completions during close submit one more request */
    size_t resubmitted;
    uint64_t chain_below; /* completions of owners below this submit owner + CHAIN_STEP */
};

static struct fx *cur;

static void on_done(struct store_req *req)
{
    struct fx *fx = cur;
    assert_false(fx->in_submit);
    assert_true(uv_thread_equal(&loop_thread, &(uv_thread_t){uv_thread_self()}));
    assert_true(fx->n_completed < MAX_REQS);
    fx->completed[fx->n_completed++] = req->owner;
    fx->status[req->owner] = req->status;
    fx->n_updates[req->owner] = req->n_updates;
    if (fx->close_at_first && fx->n_completed == 1)
        store_close(fx->st);
    if (req->owner < fx->chain_below) {
        req->owner += CHAIN_STEP;
        fx->in_submit = true;
        store_submit(fx->st, req);
        fx->in_submit = false;
        return;
    }
    if (fx->resubmit && req->status == STORE_UNAVAILABLE && fx->resubmitted < 3) {
        /* Submitting from a completion while closing: fails, asynchronously, then frees. */
        fx->resubmitted++;
        req->owner = MAX_REQS - fx->resubmitted;
        fx->in_submit = true;
        store_submit(fx->st, req);
        fx->in_submit = false;
        return;
    }
    store_req_free(req);
}

static struct fx *fx_new(const struct store_backend_ops *ops, unsigned n_workers)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->fake = calloc(1, sizeof(*fx->fake));
    assert_int_equal(uv_mutex_init(&fx->fake->lock), 0);
    fx->st = store_create(&fx->loop, ops, fx->fake, n_workers, &limits);
    assert_non_null(fx->st);
    loop_thread = uv_thread_self();
    cur = fx;
    return fx;
}

/* Closes the store (if not yet), runs the loop dry and frees everything. */
static void fx_free(struct fx *fx, bool close)
{
    if (close)
        store_close(fx->st);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_true(fx->fake->freed);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    uv_mutex_destroy(&fx->fake->lock);
    free(fx->fake);
    free(fx);
}

static void make_uaid(uint8_t uaid[IDS_BYTES], unsigned n)
{
    memset(uaid, 0, IDS_BYTES);
    memcpy(uaid, &n, sizeof(n));
    uaid[15] = 0x5a;
}

static void submit(struct fx *fx, unsigned uaid, uint64_t owner)
{
    struct store_req *req = store_req_new(STORE_FETCH);
    if (!req)
        abort(); /* (cmocka's asserts do not tell the compiler that req is not NULL) */
    make_uaid(req->uaid, uaid);
    req->owner = owner;
    req->done = on_done;
    fx->in_submit = true;
    store_submit(fx->st, req);
    fx->in_submit = false;
}

/*
 * 2000 requests on 8 uaids over 4 workers, each exec taking a few microseconds: every uaid's
 * requests execute on one worker thread, in submission order, and complete in that order on
 * the loop thread.
 */
static void test_worker_ordering(void **state)
{
    enum { N = 2000, UAIDS = 8, WORKERS = 4 };
    struct fx *fx = fx_new(&fake_ops, WORKERS);
    fx->fake->sleep_us = 20;
    assert_string_equal(store_name(fx->st), "fake");
    assert_ptr_equal(store_backend(fx->st), fx->fake);
    assert_ptr_equal(store_ops(fx->st), &fake_ops);

    for (uint64_t i = 0; i < N; i++)
        submit(fx, (unsigned)(i % UAIDS), i);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0); /* returns when all are done */
    assert_int_equal(fx->n_completed, N);

    uint64_t last_exec[UAIDS] = {0};
    int64_t last_done[UAIDS];
    bool thread_set[UAIDS] = {false};
    uv_thread_t thread[UAIDS];
    for (int u = 0; u < UAIDS; u++)
        last_done[u] = -1;
    for (size_t k = 0; k < N; k++) {
        uint64_t owner = fx->completed[k];
        unsigned u = (unsigned)(owner % UAIDS);
        struct seen *s = &fx->fake->seen[owner];
        assert_true(s->executed);
        assert_int_equal(fx->status[owner], STORE_OK);
        assert_int_equal(fx->n_updates[owner], 1);
        /* Completion order per uaid = submission order. */
        assert_true((int64_t)owner > last_done[u]);
        last_done[u] = (int64_t)owner;
        /* Exec order per uaid = submission order. */
        assert_true(s->exec_seq > last_exec[u]);
        last_exec[u] = s->exec_seq;
        /* Never on the loop thread; always the uaid's worker. */
        assert_false(uv_thread_equal(&s->thread, &loop_thread));
        uint8_t uaid[IDS_BYTES];
        make_uaid(uaid, u);
        assert_int_equal(s->worker, store_route(uaid, WORKERS));
        if (!thread_set[u]) {
            thread[u] = s->thread;
            thread_set[u] = true;
        }
        assert_true(uv_thread_equal(&thread[u], &s->thread));
    }
    /* The work was spread over more than one thread. */
    bool several = false;
    for (int u = 1; u < UAIDS; u++)
        several = several || !uv_thread_equal(&thread[0], &thread[u]);
    assert_true(several);
    fx_free(fx, true);
}

static void test_route(void **state)
{
    uint8_t uaid[IDS_BYTES];
    unsigned hits[5] = {0};
    for (unsigned i = 0; i < 5000; i++) {
        make_uaid(uaid, i);
        unsigned w = store_route(uaid, 5);
        assert_true(w < 5);
        assert_int_equal(w, store_route(uaid, 5)); /* stable */
        hits[w]++;
        assert_int_equal(store_route(uaid, 1), 0);
        assert_int_equal(store_route(uaid, 0), 0);
    }
    for (int w = 0; w < 5; w++)
        assert_true(hits[w] > 800 && hits[w] < 1200); /* roughly even */
}

static void test_worker_limits(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 3);
    for (uint64_t i = 0; i < 30; i++)
        submit(fx, (unsigned)i, i);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    struct store_limits l = limits;
    l.max_channels = 99;
    store_set_limits(fx->st, &l);
    for (uint64_t i = 30; i < 60; i++)
        submit(fx, (unsigned)i, i);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->n_completed, 60);
    for (uint64_t i = 0; i < 60; i++)
        assert_int_equal(fx->fake->seen[i].max_channels, i < 30 ? 7 : 99);
    fx_free(fx, true);
}

/*
 * Closing while one uaid's requests are queued behind a slow exec: close waits for the exec in
 * progress, every request completes with STORE_UNAVAILABLE and no results, in submission
 * order, the queued ones without having executed, and the backend is freed.
 */
static void test_worker_close_outstanding(void **state)
{
    enum { N = 50 };
    struct fx *fx = fx_new(&fake_ops, 2);
    fx->fake->sleep_us = 20000;
    for (uint64_t i = 0; i < N; i++)
        submit(fx, 1, i);
    usleep(5000); /* let the worker start on the first one */
    store_close(fx->st);
    assert_int_equal(fx->n_completed, 0); /* not inside store_close() */
    assert_false(fx->fake->freed);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, N);
    size_t executed = 0;
    for (size_t k = 0; k < N; k++) {
        assert_int_equal(fx->completed[k], k);
        assert_int_equal(fx->status[k], STORE_UNAVAILABLE);
        assert_int_equal(fx->n_updates[k], 0);
        executed += fx->fake->seen[k].executed;
    }
    assert_true(executed >= 1 && executed < N);
    fx_free(fx, false);
}

/* A completion that closes the store: the others, already executed, become UNAVAILABLE. */
static void test_close_from_callback(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    fx->close_at_first = true;
    for (uint64_t i = 0; i < 10; i++)
        submit(fx, 1, i);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 10);
    assert_int_equal(fx->status[0], STORE_OK);
    for (uint64_t i = 0; i < 10; i++) {
        assert_int_equal(fx->completed[i], i);
        if (i)
            assert_int_equal(fx->status[i], STORE_UNAVAILABLE);
    }
    fx_free(fx, false);
}

/* Requests submitted after store_close(), also from completions, fail asynchronously. */
static void test_submit_while_closing(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 2);
    fx->resubmit = true;
    submit(fx, 1, 0);
    store_close(fx->st);
    store_close(fx->st); /* no-op */
    submit(fx, 2, 1);
    assert_int_equal(fx->n_completed, 0);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->resubmitted, 3);
    assert_int_equal(fx->n_completed, 5);
    for (size_t k = 0; k < 5; k++)
        assert_int_equal(fx->status[fx->completed[k]], STORE_UNAVAILABLE);
    assert_false(fx->fake->seen[1].executed);
    fx_free(fx, false);
}

/* Loop-thread backend: exec runs inside submit, on the loop thread; completion comes later. */
static void test_loop_thread_backend(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    for (uint64_t i = 0; i < 100; i++) {
        submit(fx, (unsigned)(i % 3), i);
        assert_true(fx->fake->seen[i].executed);
        assert_true(uv_thread_equal(&fx->fake->seen[i].thread, &loop_thread));
    }
    assert_int_equal(fx->n_completed, 0);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 100);
    for (uint64_t i = 0; i < 100; i++) {
        assert_int_equal(fx->completed[i], i); /* global submission order */
        assert_int_equal(fx->status[i], STORE_OK);
    }
    fx_free(fx, true);
}

/*
 * Loop-thread backend: completions wake nothing (no uv_async_send, so no eventfd write and
 * read): they are delivered at the next turn of the loop, and the loop is not kept alive once
 * they are.
 */
static void test_loop_thread_no_wakeup(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    async_sends = 0;
    for (uint64_t i = 0; i < 10; i++)
        submit(fx, 1, i);
    assert_int_equal(fx->n_completed, 0);
    assert_true(uv_loop_alive(&fx->loop));
    uv_run(&fx->loop, UV_RUN_NOWAIT); /* one turn delivers them all */
    assert_int_equal(fx->n_completed, 10);
    assert_int_equal(async_sends, 0);
    assert_false(uv_loop_alive(&fx->loop));
    fx_free(fx, true);
}

/*
 * Loop-thread backend: requests submitted by completions are delivered after the ones
 * already queued, at the next turn (so I/O gets its turn between), never inside submit.
 */
static void test_loop_thread_resubmit_order(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    fx->chain_below = 5;
    for (uint64_t i = 0; i < 5; i++)
        submit(fx, (unsigned)i, i);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->n_completed, 5);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->n_completed, 10);
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(fx->completed[i], i);
        assert_int_equal(fx->completed[5 + i], CHAIN_STEP + i);
    }
    assert_false(uv_loop_alive(&fx->loop));
    fx_free(fx, true);
}

static void stop_loop(uv_timer_t *t);

static size_t idle_ran_at; /* completions seen when the test's idle handle ran */

static void note_idle(uv_idle_t *h)
{
    idle_ran_at = ((struct fx *)h->data)->n_completed;
    uv_idle_stop(h);
}

/*
 * Loop-thread backend: completions come after the idle handles of the turn, even one started
 * before the store's handles (lws services its buffered input from an idle handle, and
 * http.c relies on that service coming first).
 */
static void test_loop_thread_after_idle_handles(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    uv_idle_t other;
    uv_idle_init(&fx->loop, &other);
    other.data = fx;
    idle_ran_at = 99;
    uv_idle_start(&other, note_idle);
    submit(fx, 1, 0);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->n_completed, 1);
    assert_int_equal(idle_ran_at, 0);
    uv_close((uv_handle_t *)&other, NULL);
    fx_free(fx, true);
}

static void submit_from_timer(uv_timer_t *t)
{
    submit(t->data, 1, 0);
}

/*
 * Loop-thread backend: a request submitted from a timer callback (before libuv polls) is
 * delivered without any I/O to wake the loop. The guard timer only turns a hang into a
 * failure.
 */
static void test_loop_thread_submit_from_timer(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    uv_timer_t t, guard;
    uv_timer_init(&fx->loop, &t);
    uv_timer_init(&fx->loop, &guard);
    t.data = fx;
    uv_timer_start(&t, submit_from_timer, 0, 0);
    uv_timer_start(&guard, stop_loop, 10000, 0);
    uv_unref((uv_handle_t *)&guard);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->n_completed, 1);
    assert_int_equal(fx->status[0], STORE_OK);
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&guard, NULL);
    fx_free(fx, true);
}

/*
 * Loop-thread backend closed with completions queued: they are delivered first, then what
 * was submitted after the close, all UNAVAILABLE.
 */
static void test_loop_thread_close_order(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    submit(fx, 1, 0);
    submit(fx, 2, 1);
    store_close(fx->st);
    submit(fx, 1, 2);
    assert_int_equal(fx->n_completed, 0);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 3);
    for (uint64_t i = 0; i < 3; i++) {
        assert_int_equal(fx->completed[i], i);
        assert_int_equal(fx->status[i], STORE_UNAVAILABLE);
        assert_int_equal(fx->n_updates[i], 0);
    }
    assert_true(fx->fake->seen[1].executed);
    assert_false(fx->fake->seen[2].executed);
    fx_free(fx, false);
}

/* The store keeps the loop alive only while requests are outstanding. */
static void test_loop_alive_only_when_outstanding(void **state)
{
    struct fx *fx = fx_new(&fake_tick_ops, 2);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0); /* nothing outstanding */
    submit(fx, 1, 0);
    assert_true(uv_loop_alive(&fx->loop));
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 1);
    assert_false(uv_loop_alive(&fx->loop));
    fx_free(fx, true);
}

static void stop_loop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void test_tick(void **state)
{
    struct fx *fx = fx_new(&fake_tick_ops, 0);
    uv_timer_t guard;
    uv_timer_init(&fx->loop, &guard);
    uv_timer_start(&guard, stop_loop, 60, 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_true(fx->fake->ticks >= 2);
    assert_true(uv_thread_equal(&fx->fake->tick_thread, &loop_thread));
    uv_close((uv_handle_t *)&guard, NULL);
    int ticks = fx->fake->ticks;
    store_close(fx->st);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->fake->ticks, ticks); /* stopped */
    fx_free(fx, false);
}

/* A request without a done callback is freed by the store (valgrind/ASan check the leak). */
static void test_no_callback(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 1);
    struct store_req *req = store_req_new(STORE_UPDATE);
    req->data = strdup("payload");
    req->data_len = 7;
    store_submit(fx->st, req);
    struct store_req *req2 = store_req_new(STORE_FETCH);
    req2->owner = 1;
    store_submit(fx->st, req2);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_true(fx->fake->seen[1].executed);
    fx_free(fx, true);
}

/* A completed request submitted again starts with its results cleared. */
static int reuse_count;
static void on_reuse(struct store_req *req)
{
    assert_int_equal(req->n_updates, 1);
    if (++reuse_count < 3) {
        store_submit(cur->st, req);
        return;
    }
    store_req_free(req);
}

static void test_reuse(void **state)
{
    struct fx *fx = fx_new(&fake_ops, 0);
    struct store_req *req = store_req_new(STORE_HELLO);
    req->reset = true;
    req->done = on_reuse;
    store_submit(fx->st, req);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(reuse_count, 3);
    fx_free(fx, true);
}

static void test_req_new_free(void **state)
{
    store_req_free(NULL);
    struct store_req *req = store_req_new(STORE_ACK);
    assert_non_null(req);
    assert_int_equal(req->op, STORE_ACK);
    assert_int_equal(req->status, STORE_OK);
    assert_null(req->updates);
    assert_null(req->next);
    req->acks = calloc(3, sizeof(*req->acks));
    req->n_acks = 3;
    req->data = strdup("x");
    req->updates = calloc(2, sizeof(*req->updates));
    req->n_updates = 2;
    req->updates[1].data = strdup("y");
    store_req_free(req); /* everything it owns goes with it */
}

static void test_create_bad_args(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct fake f = {0};
    static const struct store_backend_ops no_exec = {.name = "x", .free = fake_free};
    static const struct store_backend_ops no_free = {.name = "x", .exec = fake_exec};
    static const struct store_backend_ops tick_no_ms = {
        .name = "x", .exec = fake_exec, .free = fake_free, .tick = fake_tick};
    assert_null(store_create(NULL, &fake_ops, &f, 0, &limits));
    assert_null(store_create(&loop, NULL, &f, 0, &limits));
    assert_null(store_create(&loop, &no_exec, &f, 0, &limits));
    assert_null(store_create(&loop, &no_free, &f, 0, &limits));
    assert_null(store_create(&loop, &tick_no_ms, &f, 0, &limits));
    assert_null(store_create(&loop, &fake_ops, &f, 0, NULL));
    assert_false(f.freed); /* on failure the caller keeps the backend */
    store_close(NULL);
    /* The memory backend's hooks refuse other stores. */
    assert_int_equal(uv_mutex_init(&f.lock), 0);
    struct store *st = store_create(&loop, &fake_ops, &f, 1, &limits);
    assert_non_null(st);
    struct store_mem_stats stats;
    assert_int_equal(store_mem_set_clock(st, NULL, NULL), -1);
    assert_int_equal(store_mem_sweep(st, 1), -1);
    assert_int_equal(store_mem_stats(st, &stats), -1);
    assert_int_equal(store_mem_stats(NULL, &stats), -1);
    store_close(st);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_true(f.freed);
    uv_mutex_destroy(&f.lock);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Every failure inside store_create() returns NULL, leaves the backend alone, leaks nothing. */
static void test_create_failures(void **state)
{
    struct {
        struct failer *f;
        long fail_at;
    } cases[] = {
        {&f_calloc, 1}, /* the store */
        {&f_calloc, 2}, /* the workers */
        {&f_mutex, 1},  /* done_lock */
        {&f_mutex, 2},  /* the first worker's lock */
        {&f_mutex, 4},  /* the third worker's lock */
        {&f_cond, 1},   {&f_cond, 3},  {&f_thread, 1},
        {&f_thread, 4}, {&f_async, 1}, /* after all workers started */
    };
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_mutex_init(&f->lock), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        arm(cases[i].f, cases[i].fail_at);
        assert_null(store_create(&loop, &fake_ops, f, 4, &limits));
        assert_int_equal(cases[i].f->calls, cases[i].fail_at); /* the failure did happen */
        arm(cases[i].f, 0);
        assert_false(f->freed);
    }
    /* Without workers, too. */
    arm(&f_async, 1);
    assert_null(store_create(&loop, &fake_ops, f, 0, &limits));
    arm(&f_async, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* no handle was left behind */
    assert_int_equal(uv_loop_close(&loop), 0);

    arm(&f_calloc, 1);
    assert_null(store_req_new(STORE_FETCH));
    arm(&f_calloc, 0);
    uv_mutex_destroy(&f->lock);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_ordering),
        cmocka_unit_test(test_route),
        cmocka_unit_test(test_worker_limits),
        cmocka_unit_test(test_worker_close_outstanding),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_submit_while_closing),
        cmocka_unit_test(test_loop_thread_backend),
        cmocka_unit_test(test_loop_thread_no_wakeup),
        cmocka_unit_test(test_loop_thread_resubmit_order),
        cmocka_unit_test(test_loop_thread_submit_from_timer),
        cmocka_unit_test(test_loop_thread_after_idle_handles),
        cmocka_unit_test(test_loop_thread_close_order),
        cmocka_unit_test(test_loop_alive_only_when_outstanding),
        cmocka_unit_test(test_tick),
        cmocka_unit_test(test_no_callback),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_req_new_free),
        cmocka_unit_test(test_create_bad_args),
        cmocka_unit_test(test_create_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
