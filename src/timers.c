/*
 * timers: a hashed timing wheel of TIMERS_SLOTS one-second slots.
 *
 * Each slot is a circular doubly-linked list with a sentinel head; an armed node is in
 * exactly one slot, an unarmed node has next == prev == NULL. Invariants: "processed" is the
 * last second whose slot was visited; a node with due > processed lies in slot due % SLOTS,
 * a node armed with due <= processed lies in slot (processed + 1) % SLOTS. A tick at second
 * now visits the slots of seconds processed + 1 .. now (all slots when that is a full turn or
 * more) and fires the nodes there whose due <= now; nodes due a turn or more later stay.
 * Nodes armed during a tick for a second <= now go to the slot of now + 1, which this tick
 * does not visit (or visits first, after a full turn), so no node fires twice in one tick.
 *
 * A visited slot is first moved onto a local list, and nodes are popped from it one at a
 * time, so the fire callback may cancel or re-arm any node (a cancelled node simply leaves the
 * local list) and a node re-armed into the slot being visited is not seen again in this tick.
 */
#include "simplepushd/timers.h"

#include <stdlib.h>

#define TIMERS_SLOTS   1024u /* a power of two */
#define TIMERS_TICK_MS 1000

struct timers {
    uv_loop_t *loop;
    uv_timer_t handle;
    timers_fire_cb fire;
    void *arg;
    timers_clock_fn clock; /* NULL: uv_now(loop) */
    void *clock_arg;
    uint64_t start_ms; /* the clock at second 1 */
    uint32_t processed;
    bool closing;
    struct timers_node slots[TIMERS_SLOTS];
};

static uint64_t timers_clock_ms(const struct timers *t)
{
    return t->clock ? t->clock(t->clock_arg) : uv_now(t->loop);
}

static void timers_list_init(struct timers_node *head)
{
    head->next = head->prev = head;
}

static void timers_link(struct timers_node *head, struct timers_node *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static void timers_unlink(struct timers_node *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node->prev = NULL;
}

static void timers_on_timer(uv_timer_t *handle)
{
    timers_tick(handle->data);
}

static void timers_on_close(uv_handle_t *handle)
{
    free(handle->data);
}

struct timers *timers_new(uv_loop_t *loop, timers_fire_cb fire, void *arg)
{
    struct timers *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->loop = loop;
    t->fire = fire;
    t->arg = arg;
    t->start_ms = uv_now(loop);
    for (size_t i = 0; i < TIMERS_SLOTS; i++)
        timers_list_init(&t->slots[i]);
    uv_timer_init(loop, &t->handle); /* cannot fail */
    t->handle.data = t;
    uv_timer_start(&t->handle, timers_on_timer, TIMERS_TICK_MS, TIMERS_TICK_MS);
    uv_unref((uv_handle_t *)&t->handle);
    return t;
}

void timers_close(struct timers *t)
{
    if (!t || t->closing)
        return;
    t->closing = true;
    for (size_t i = 0; i < TIMERS_SLOTS; i++)
        while (t->slots[i].next != &t->slots[i])
            timers_unlink(t->slots[i].next);
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, timers_on_close);
}

uint32_t timers_now(const struct timers *t)
{
    return (uint32_t)((timers_clock_ms(t) - t->start_ms) / 1000 + 1);
}

void timers_arm(struct timers *t, struct timers_node *node, uint32_t due)
{
    if (timers_armed(node))
        timers_unlink(node);
    node->due = due;
    if (t->closing)
        return;
    uint32_t second = due > t->processed ? due : t->processed + 1;
    timers_link(&t->slots[second & (TIMERS_SLOTS - 1)], node);
}

void timers_cancel(struct timers *t, struct timers_node *node)
{
    if (timers_armed(node))
        timers_unlink(node);
}

void timers_set_clock(struct timers *t, timers_clock_fn now_ms, void *arg)
{
    t->clock = now_ms;
    t->clock_arg = arg;
    t->start_ms = timers_clock_ms(t);
    t->processed = 0;
}

/* Visits the slot of one second; returns false when the wheel was closed meanwhile. */
static bool timers_visit(struct timers *t, struct timers_node *head, uint32_t now)
{
    if (head->next == head)
        return true;
    struct timers_node local;
    local.next = head->next;
    local.prev = head->prev;
    local.next->prev = &local;
    local.prev->next = &local;
    timers_list_init(head);

    while (local.next != &local) {
        struct timers_node *node = local.next;
        timers_unlink(node);
        if (t->closing)
            continue; /* dropped, as timers_close() dropped the others */
        if (node->due <= now)
            t->fire(node, t->arg);
        else
            timers_link(head, node);
    }
    return !t->closing;
}

void timers_tick(struct timers *t)
{
    uint32_t now = timers_now(t);
    if (t->closing || now <= t->processed)
        return;
    /*
     * After a full turn or more, every slot is visited once, starting with the slot of second
     * now + 1: nodes the callbacks arm for a second that has come go there, and must wait for
     * the next tick.
     */
    uint32_t n = now - t->processed;
    if (n > TIMERS_SLOTS)
        n = TIMERS_SLOTS;
    uint32_t first = now - n + 1;
    t->processed = now;
    for (uint32_t i = 0; i < n; i++)
        if (!timers_visit(t, &t->slots[(first + i) & (TIMERS_SLOTS - 1)], now))
            return;
}
