/*
 * store: the backend-independent half of the storage interface: requests, queues, worker
 * threads, and the hand-off of completions to the loop thread (see store_backend.h).
 *
 * Invariants:
 *   - Every submitted request is in exactly one place until its done callback runs: a
 *     worker's queue (not executed yet), being executed by a worker, or a completion queue
 *     (executed or failed, waiting for delivery on the loop thread): st->done for the
 *     workers' completions and those failed while closing, st->local for the loop-thread
 *     backend's.
 *   - st->done is guarded by done_lock; a worker's queue and limits by that worker's lock.
 *     Everything else, st->local included, is the loop thread's.
 *   - Completions are delivered in the order they entered their queue; a uaid's requests
 *     enter one queue in submission order (one worker per uaid, or the loop thread). While
 *     closing, st->local (submitted before the close) is delivered before st->done.
 *   - The prepare and idle handles are active exactly while st->local is not empty (outside
 *     the prepare callback), so loop-thread completions cost no syscall: the prepare handle
 *     delivers them before libuv polls again, and the idle handle keeps that poll from
 *     blocking while some are left. Prepare handles run after idle handles, so lws's own
 *     idle work of the turn (its service of buffered input) comes before our completions.
 *   - st->outstanding counts requests submitted and not yet delivered; the async handle is
 *     referenced (keeps the loop alive) exactly while it is non-zero.
 *   - Once closing: no worker runs, no new exec happens, and every delivery says
 *     STORE_UNAVAILABLE. The store is freed after every handle's close callback and the last
 *     delivery.
 */
#include "store_backend.h"

#include <stdlib.h>
#include <string.h>

struct store_queue {
    struct store_req *head, *tail;
};

struct store_worker {
    struct store *st;
    unsigned index;
    uv_thread_t thread;
    uv_mutex_t lock;
    uv_cond_t cond;
    struct store_queue queue; /* submitted, not executed yet */
    struct store_limits limits;
    bool stop;
};

struct store {
    uv_loop_t *loop;
    const struct store_backend_ops *ops;
    void *backend;
    struct store_limits limits; /* the loop thread's copy */

    uv_async_t async;
    uv_prepare_t prepare;
    uv_idle_t idle;
    uv_timer_t tick;
    bool has_tick;
    int open_handles; /* while closing: handles whose close callback is still due */

    uv_mutex_t done_lock;
    struct store_queue done;
    struct store_queue local; /* completions of the loop-thread backend */
    size_t outstanding;

    struct store_worker *workers;
    unsigned n_workers;
    bool closing;
    store_observer_fn observer;
};

static void store_queue_push(struct store_queue *q, struct store_req *req)
{
    req->next = NULL;
    if (q->tail)
        q->tail->next = req;
    else
        q->head = req;
    q->tail = req;
}

static struct store_req *store_queue_pop(struct store_queue *q)
{
    struct store_req *req = q->head;
    if (req) {
        q->head = req->next;
        if (!q->head)
            q->tail = NULL;
        req->next = NULL;
    }
    return req;
}

/* Moves every request of src to the end of dst. */
static void store_queue_append(struct store_queue *dst, struct store_queue *src)
{
    if (!src->head)
        return;
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL;
}

/* Moves every request of src to the front of dst. */
static void store_queue_prepend(struct store_queue *dst, struct store_queue *src)
{
    store_queue_append(src, dst);
    *dst = *src;
    src->head = src->tail = NULL;
}

static void store_free_updates(struct store_req *req)
{
    for (size_t i = 0; i < req->n_updates; i++)
        free(req->updates[i].data);
    free(req->updates);
    req->updates = NULL;
    req->n_updates = 0;
}

/* Clears the results of req, as a backend expects them on entry. */
static void store_clear_results(struct store_req *req)
{
    store_free_updates(req);
    req->reset = false;
    req->host[0] = '\0';
    req->host_gen = 0;
    req->status = STORE_OK;
}

static void store_fail(struct store_req *req)
{
    store_clear_results(req);
    req->status = STORE_UNAVAILABLE;
}

struct store_req *store_req_new(enum store_op op)
{
    struct store_req *req = calloc(1, sizeof(*req));
    if (req)
        req->op = op;
    return req;
}

void store_req_free(struct store_req *req)
{
    if (!req)
        return;
    store_free_updates(req);
    free(req->data);
    free(req->acks);
    free(req);
}

unsigned store_route(const uint8_t uaid[IDS_BYTES], unsigned n_workers)
{
    uint64_t a, b;
    memcpy(&a, uaid, sizeof(a));
    memcpy(&b, uaid + 8, sizeof(b));
    uint64_t x = a ^ (b * 0x9e3779b97f4a7c15ULL);
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return n_workers ? (unsigned)(x % n_workers) : 0;
}

/* Hands req to its done callback (loop thread). */
static void store_deliver(struct store *st, struct store_req *req)
{
    if (--st->outstanding == 0 && !st->closing)
        uv_unref((uv_handle_t *)&st->async);
    if (st->closing)
        store_fail(req);
    if (st->observer)
        st->observer(req->op, req->status, uv_hrtime() - req->submitted_ns);
    if (req->done)
        req->done(req);
    else
        store_req_free(req);
}

static void store_on_async(uv_async_t *handle)
{
    struct store *st = handle->data;
    struct store_queue q;

    uv_mutex_lock(&st->done_lock);
    q = st->done;
    st->done.head = st->done.tail = NULL;
    uv_mutex_unlock(&st->done_lock);

    struct store_req *req;
    while (!st->closing && (req = store_queue_pop(&q)))
        store_deliver(st, req);
    if (q.head) {
        /* A callback closed the store: the rest is delivered by the close path, first. */
        uv_mutex_lock(&st->done_lock);
        store_queue_prepend(&st->done, &q);
        uv_mutex_unlock(&st->done_lock);
    }
}

/* Only keeps libuv from blocking in its poll while completions wait (see the invariants). */
static void store_on_idle(uv_idle_t *handle)
{
    (void)handle;
}

/*
 * Delivers the loop-thread backend's completions. What their callbacks submit is delivered
 * at the next turn of the loop, after I/O has had its turn, as with the async handle.
 */
static void store_on_prepare(uv_prepare_t *handle)
{
    struct store *st = handle->data;
    struct store_queue q = st->local;
    st->local.head = st->local.tail = NULL;

    struct store_req *req;
    while (!st->closing && (req = store_queue_pop(&q)))
        store_deliver(st, req);
    if (q.head) {
        /* A callback closed the store: the rest is delivered by the close path, first. */
        store_queue_prepend(&st->local, &q);
        return;
    }
    if (!st->local.head && !st->closing) {
        uv_prepare_stop(handle);
        uv_idle_stop(&st->idle);
    }
}

static void store_on_tick(uv_timer_t *handle)
{
    struct store *st = handle->data;
    st->ops->tick(st->backend);
}

static void store_worker_main(void *arg)
{
    struct store_worker *w = arg;
    struct store *st = w->st;

    uv_mutex_lock(&w->lock);
    for (;;) {
        while (!w->queue.head && !w->stop)
            uv_cond_wait(&w->cond, &w->lock);
        if (w->stop)
            break; /* what is still queued is failed by store_close() */
        struct store_req *req = store_queue_pop(&w->queue);
        struct store_limits limits = w->limits;
        uv_mutex_unlock(&w->lock);

        st->ops->exec(st->backend, w->index, &limits, req);

        uv_mutex_lock(&st->done_lock);
        store_queue_push(&st->done, req);
        uv_mutex_unlock(&st->done_lock);
        uv_async_send(&st->async);
        uv_mutex_lock(&w->lock);
    }
    uv_mutex_unlock(&w->lock);
}

/* Stops and joins the first n workers and releases their locks; returns what they left. */
static struct store_queue store_stop_workers(struct store *st, unsigned n)
{
    struct store_queue left = {NULL, NULL};
    for (unsigned i = 0; i < n; i++) {
        struct store_worker *w = &st->workers[i];
        uv_mutex_lock(&w->lock);
        w->stop = true;
        uv_cond_signal(&w->cond);
        uv_mutex_unlock(&w->lock);
    }
    for (unsigned i = 0; i < n; i++) {
        struct store_worker *w = &st->workers[i];
        uv_thread_join(&w->thread);
        store_queue_append(&left, &w->queue);
        uv_cond_destroy(&w->cond);
        uv_mutex_destroy(&w->lock);
    }
    free(st->workers);
    st->workers = NULL;
    st->n_workers = 0;
    return left;
}

/* Starts n workers; on failure, stops those already started and returns -1. */
static int store_start_workers(struct store *st, unsigned n)
{
    st->workers = calloc(n, sizeof(*st->workers));
    if (!st->workers)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        struct store_worker *w = &st->workers[i];
        w->st = st;
        w->index = i;
        w->limits = st->limits;
        if (uv_mutex_init(&w->lock) != 0)
            goto fail;
        if (uv_cond_init(&w->cond) != 0) {
            uv_mutex_destroy(&w->lock);
            goto fail;
        }
        if (uv_thread_create(&w->thread, store_worker_main, w) != 0) {
            uv_cond_destroy(&w->cond);
            uv_mutex_destroy(&w->lock);
            goto fail;
        }
        st->n_workers = i + 1;
    }
    return 0;

fail:
    store_stop_workers(st, st->n_workers);
    return -1;
}

struct store *store_create(uv_loop_t *loop, const struct store_backend_ops *ops, void *backend,
                           unsigned n_workers, const struct store_limits *limits)
{
    if (!loop || !ops || !ops->exec || !ops->free || !limits || (ops->tick && !ops->tick_ms))
        return NULL;
    struct store *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->loop = loop;
    st->ops = ops;
    st->backend = backend;
    st->limits = *limits;
    if (uv_mutex_init(&st->done_lock) != 0)
        goto fail_free;
    if (n_workers && store_start_workers(st, n_workers) != 0)
        goto fail_lock;
    /* The async handle last: everything before it can be undone synchronously. */
    if (uv_async_init(loop, &st->async, store_on_async) != 0)
        goto fail_workers;
    st->async.data = st;
    uv_unref((uv_handle_t *)&st->async);
    uv_prepare_init(loop, &st->prepare); /* cannot fail */
    st->prepare.data = st;
    uv_idle_init(loop, &st->idle); /* cannot fail */
    st->idle.data = st;
    if (ops->tick) {
        uv_timer_init(loop, &st->tick); /* cannot fail */
        st->tick.data = st;
        uv_timer_start(&st->tick, store_on_tick, ops->tick_ms, ops->tick_ms);
        uv_unref((uv_handle_t *)&st->tick);
        st->has_tick = true;
    }
    return st;

fail_workers:
    store_stop_workers(st, st->n_workers);
fail_lock:
    uv_mutex_destroy(&st->done_lock);
fail_free:
    free(st);
    return NULL;
}

void *store_backend(const struct store *st)
{
    return st->backend;
}

const struct store_backend_ops *store_ops(const struct store *st)
{
    return st->ops;
}

void store_submit(struct store *st, struct store_req *req)
{
    if (st->outstanding++ == 0 && !st->closing)
        uv_ref((uv_handle_t *)&st->async);
    store_clear_results(req);
    req->next = NULL;
    req->submitted_ns = uv_hrtime();

    if (st->closing) {
        store_fail(req);
        uv_mutex_lock(&st->done_lock);
        store_queue_push(&st->done, req);
        uv_mutex_unlock(&st->done_lock);
        return;
    }
    if (!st->n_workers) {
        st->ops->exec(st->backend, 0, &st->limits, req);
        if (!st->local.head) {
            uv_prepare_start(&st->prepare, store_on_prepare);
            uv_idle_start(&st->idle, store_on_idle);
        }
        store_queue_push(&st->local, req);
        return;
    }
    struct store_worker *w = &st->workers[store_route(req->uaid, st->n_workers)];
    uv_mutex_lock(&w->lock);
    store_queue_push(&w->queue, req);
    uv_cond_signal(&w->cond);
    uv_mutex_unlock(&w->lock);
}

void store_set_observer(struct store *st, store_observer_fn fn)
{
    st->observer = fn;
}

void store_set_limits(struct store *st, const struct store_limits *limits)
{
    st->limits = *limits;
    for (unsigned i = 0; i < st->n_workers; i++) {
        struct store_worker *w = &st->workers[i];
        uv_mutex_lock(&w->lock);
        w->limits = *limits;
        uv_mutex_unlock(&w->lock);
    }
}

const char *store_name(const struct store *st)
{
    return st->ops->name;
}

static void store_on_close(uv_handle_t *handle)
{
    struct store *st = handle->data;
    if (--st->open_handles > 0)
        return;

    /* Deliver everything, including what the callbacks submit meanwhile. */
    for (;;) {
        struct store_queue q = st->local;
        st->local.head = st->local.tail = NULL;
        uv_mutex_lock(&st->done_lock);
        store_queue_append(&q, &st->done);
        uv_mutex_unlock(&st->done_lock);
        if (!q.head)
            break;
        struct store_req *req;
        while ((req = store_queue_pop(&q)))
            store_deliver(st, req);
    }
    st->ops->free(st->backend);
    uv_mutex_destroy(&st->done_lock);
    free(st);
}

void store_close(struct store *st)
{
    if (!st || st->closing)
        return;
    st->closing = true;

    /* After the join no thread touches the store, so the queues are the loop's alone. */
    struct store_queue left = store_stop_workers(st, st->n_workers);
    uv_mutex_lock(&st->done_lock);
    store_queue_append(&st->done, &left);
    uv_mutex_unlock(&st->done_lock);

    if (st->has_tick) {
        uv_timer_stop(&st->tick);
        uv_close((uv_handle_t *)&st->tick, store_on_close);
        st->open_handles++;
    }
    uv_close((uv_handle_t *)&st->prepare, store_on_close);
    st->open_handles++;
    uv_close((uv_handle_t *)&st->idle, store_on_close);
    st->open_handles++;
    uv_close((uv_handle_t *)&st->async, store_on_close);
    st->open_handles++;
}
