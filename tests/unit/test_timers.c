/*
 * Unit tests of timers: arming, re-arming, cancelling (also from inside the fire callback),
 * many nodes, nodes more than a wheel turn ahead, catching up after a blocked loop, closing,
 * and one short run on a real libuv loop. All but the last use a fake clock and drive the
 * ticks by hand (timers_set_clock, timers_tick).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "simplepushd/timers.h"

enum action {
    ACT_NONE,
    ACT_REARM_NEXT,   /* re-arm itself for now + 1 */
    ACT_REARM_PAST,   /* re-arm itself for a second that has come */
    ACT_CANCEL_OTHER, /* cancel "other" */
    ACT_ARM_OTHER,    /* arm "other" for now + delta */
    ACT_CLOSE,        /* close the wheel */
};

struct tnode {
    struct timers_node node; /* first member */
    int fired;
    uint32_t fired_at;
    enum action action;
    struct tnode *other;
    uint32_t delta;
};

struct fx {
    uv_loop_t loop;
    struct timers *t;
    uint64_t ms;
    bool closed;
};

static struct fx *cur; /* the fixture the fire callback works on */

static uint64_t fake_clock(void *arg)
{
    return ((struct fx *)arg)->ms;
}

static void on_fire(struct timers_node *node, void *arg)
{
    struct fx *fx = arg;
    struct tnode *tn = (struct tnode *)node;
    assert_ptr_equal(fx, cur);
    assert_false(timers_armed(node)); /* disarmed before its callback */
    tn->fired++;
    tn->fired_at = timers_now(fx->t);
    switch (tn->action) {
    case ACT_NONE:
        break;
    case ACT_REARM_NEXT:
        timers_arm(fx->t, node, timers_now(fx->t) + 1);
        break;
    case ACT_REARM_PAST:
        timers_arm(fx->t, node, timers_now(fx->t));
        break;
    case ACT_CANCEL_OTHER:
        timers_cancel(fx->t, &tn->other->node);
        break;
    case ACT_ARM_OTHER:
        timers_arm(fx->t, &tn->other->node, timers_now(fx->t) + tn->delta);
        break;
    case ACT_CLOSE:
        timers_close(fx->t);
        fx->closed = true;
        break;
    }
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->t = timers_new(&fx->loop, on_fire, fx);
    assert_non_null(fx->t);
    fx->ms = 5000000; /* any start value */
    timers_set_clock(fx->t, fake_clock, fx);
    cur = fx;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    if (!fx->closed)
        timers_close(fx->t);
    /* The close callback frees the wheel; then nothing is left on the loop. */
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

/* Advances the fake clock by ms and runs one tick. */
static void advance_ms(struct fx *fx, uint64_t ms)
{
    fx->ms += ms;
    timers_tick(fx->t);
}

/* Advances second by second, one tick each, up to second "to". */
static void tick_to(struct fx *fx, uint32_t to)
{
    while (timers_now(fx->t) < to)
        advance_ms(fx, 1000);
}

static void test_now(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(timers_now(fx->t), 1);
    fx->ms += 999;
    assert_int_equal(timers_now(fx->t), 1);
    fx->ms += 1;
    assert_int_equal(timers_now(fx->t), 2);
    fx->ms += 3600 * 1000;
    assert_int_equal(timers_now(fx->t), 3602);
}

static void test_arm_fires_once(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {0};
    assert_false(timers_armed(&a.node));
    timers_arm(fx->t, &a.node, 5);
    assert_true(timers_armed(&a.node));
    assert_int_equal(a.node.due, 5);
    tick_to(fx, 4);
    assert_int_equal(a.fired, 0);
    tick_to(fx, 5);
    assert_int_equal(a.fired, 1);
    assert_int_equal(a.fired_at, 5);
    assert_false(timers_armed(&a.node));
    tick_to(fx, 2000);
    assert_int_equal(a.fired, 1);
}

static void test_sub_second_ticks(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {0};
    timers_arm(fx->t, &a.node, 3);
    /* Ticks within a second that was processed do nothing. */
    for (int i = 0; i < 10; i++)
        advance_ms(fx, 150);
    assert_int_equal(timers_now(fx->t), 2);
    assert_int_equal(a.fired, 0);
    advance_ms(fx, 500);
    assert_int_equal(a.fired, 1);
}

static void test_due_now_and_past(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {0}, b = {0};
    /* Due now: fires at the next tick, even within the same second. */
    timers_arm(fx->t, &a.node, timers_now(fx->t));
    timers_tick(fx->t);
    assert_int_equal(a.fired, 1);

    tick_to(fx, 10);
    timers_arm(fx->t, &b.node, 3); /* in the past */
    assert_true(timers_armed(&b.node));
    timers_tick(fx->t); /* same second: already processed */
    assert_int_equal(b.fired, 0);
    advance_ms(fx, 1000);
    assert_int_equal(b.fired, 1);
    assert_int_equal(b.fired_at, 11);

    /* Due 0 ("never" for owners) is in the past, too. */
    timers_arm(fx->t, &b.node, 0);
    advance_ms(fx, 1000);
    assert_int_equal(b.fired, 2);
}

static void test_rearm(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {0}, b = {0};
    timers_arm(fx->t, &a.node, 5);
    timers_arm(fx->t, &a.node, 10); /* later */
    timers_arm(fx->t, &b.node, 10);
    timers_arm(fx->t, &b.node, 3); /* earlier */
    tick_to(fx, 3);
    assert_int_equal(b.fired, 1);
    tick_to(fx, 9);
    assert_int_equal(a.fired, 0);
    tick_to(fx, 12);
    assert_int_equal(a.fired, 1);
    assert_int_equal(a.fired_at, 10);
    assert_int_equal(b.fired, 1);
}

static void test_cancel(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {0}, b = {0};
    timers_cancel(fx->t, &a.node); /* not armed: no-op */
    assert_false(timers_armed(&a.node));
    timers_arm(fx->t, &a.node, 4);
    timers_arm(fx->t, &b.node, 4);
    timers_cancel(fx->t, &a.node);
    assert_false(timers_armed(&a.node));
    timers_cancel(fx->t, &a.node);
    tick_to(fx, 10);
    assert_int_equal(a.fired, 0);
    assert_int_equal(b.fired, 1);
}

static void test_periodic(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {.action = ACT_REARM_NEXT};
    timers_arm(fx->t, &a.node, 2);
    tick_to(fx, 20);
    assert_int_equal(a.fired, 19);
    assert_true(timers_armed(&a.node));
    assert_int_equal(a.node.due, 21);
    timers_cancel(fx->t, &a.node); /* the node lives on this stack */
}

static void test_rearm_past_in_fire_once_per_tick(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {.action = ACT_REARM_PAST};
    timers_arm(fx->t, &a.node, 2);
    tick_to(fx, 2);
    assert_int_equal(a.fired, 1);
    /* A catch-up tick over 50 seconds fires it once, not once per second. */
    advance_ms(fx, 50 * 1000);
    assert_int_equal(a.fired, 2);
    /* Nor over more than a wheel turn. */
    advance_ms(fx, 3000 * 1000);
    assert_int_equal(a.fired, 3);
    advance_ms(fx, 1000);
    assert_int_equal(a.fired, 4);
    timers_tick(fx->t);
    assert_int_equal(a.fired, 4);
    timers_cancel(fx->t, &a.node);
}

/* Cancelling another node from a callback, in the same slot and in a later one. */
static void test_cancel_other_in_fire(void **state)
{
    static const struct {
        uint32_t due_b;
        uint64_t jump_ms; /* one tick from second 1 */
    } cases[] = {
        {5, 5000},  /* same slot as a */
        {7, 10000}, /* a later slot visited in the same catch-up tick */
        {8, 5000},  /* a later tick */
    };
    struct fx *fx = *state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tnode a = {.action = ACT_CANCEL_OTHER}, b = {0};
        a.other = &b;
        uint32_t base = timers_now(fx->t);
        timers_arm(fx->t, &a.node, base + 4);
        timers_arm(fx->t, &b.node, base + cases[i].due_b - 1);
        advance_ms(fx, cases[i].jump_ms);
        assert_int_equal(a.fired, 1);
        assert_false(timers_armed(&b.node));
        tick_to(fx, timers_now(fx->t) + 20);
        assert_int_equal(b.fired, 0);
    }
}

/* A node cancelling itself is not armed in its callback; a sibling cancelling it first wins. */
static void test_cancel_sibling_same_slot_both_orders(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {.action = ACT_CANCEL_OTHER}, b = {.action = ACT_CANCEL_OTHER};
    a.other = &b;
    b.other = &a;
    timers_arm(fx->t, &a.node, 3);
    timers_arm(fx->t, &b.node, 3);
    tick_to(fx, 3);
    assert_int_equal(a.fired + b.fired, 1); /* whichever fires first cancels the other */
}

static void test_arm_other_in_fire(void **state)
{
    struct fx *fx = *state;
    struct tnode c = {0}, d = {0};
    struct tnode a = {.action = ACT_ARM_OTHER, .other = &c, .delta = 0};
    struct tnode b = {.action = ACT_ARM_OTHER, .other = &d, .delta = 2};
    timers_arm(fx->t, &a.node, 4);
    timers_arm(fx->t, &b.node, 4);
    tick_to(fx, 4);
    assert_int_equal(a.fired, 1);
    assert_int_equal(c.fired, 0); /* armed for now: next tick */
    assert_true(timers_armed(&c.node));
    tick_to(fx, 5);
    assert_int_equal(c.fired, 1);
    assert_int_equal(d.fired, 0);
    tick_to(fx, 6);
    assert_int_equal(d.fired, 1);
    assert_int_equal(d.fired_at, 6);
}

static void test_many_nodes(void **state)
{
    enum { N = 100000, SPAN = 3000 };
    struct fx *fx = *state;
    struct tnode *nodes = calloc(N, sizeof(*nodes));
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        timers_arm(fx->t, &nodes[i].node, 2 + (uint32_t)(x % SPAN));
    }
    /* Cancel every tenth. */
    for (size_t i = 0; i < N; i += 10)
        timers_cancel(fx->t, &nodes[i].node);
    tick_to(fx, SPAN + 2);
    for (size_t i = 0; i < N; i++) {
        if (i % 10 == 0) {
            assert_int_equal(nodes[i].fired, 0);
        } else {
            assert_int_equal(nodes[i].fired, 1);
            assert_int_equal(nodes[i].fired_at, nodes[i].node.due);
        }
        assert_false(timers_armed(&nodes[i].node));
    }
    free(nodes);
}

static void test_far_future(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {0}, b = {0};
    timers_arm(fx->t, &a.node, 5001);     /* almost five turns ahead */
    timers_arm(fx->t, &b.node, 1 + 1024); /* exactly one turn: same slot as second 1 */
    tick_to(fx, 1024);
    assert_int_equal(b.fired, 0);
    tick_to(fx, 1025);
    assert_int_equal(b.fired, 1);
    tick_to(fx, 5000);
    assert_int_equal(a.fired, 0);
    assert_true(timers_armed(&a.node));
    tick_to(fx, 5001);
    assert_int_equal(a.fired, 1);
    assert_int_equal(a.fired_at, 5001);
}

static void test_blocked_loop_catch_up(void **state)
{
    struct fx *fx = *state;
    struct tnode n[9], late = {0};
    memset(n, 0, sizeof(n));
    for (int i = 0; i < 9; i++)
        timers_arm(fx->t, &n[i].node, 2 + i); /* 2 .. 10 */
    timers_arm(fx->t, &late.node, 20);
    advance_ms(fx, 9500); /* one tick at second 10 */
    assert_int_equal(timers_now(fx->t), 10);
    for (int i = 0; i < 9; i++) {
        assert_int_equal(n[i].fired, 1);
        assert_int_equal(n[i].fired_at, 10);
    }
    assert_int_equal(late.fired, 0);

    /* Blocked for more than a wheel turn. */
    struct tnode m[6];
    memset(m, 0, sizeof(m));
    const uint32_t dues[6] = {1500, 2999, 3000, 3001, 5000, 3000 + 1024};
    for (int i = 0; i < 6; i++)
        timers_arm(fx->t, &m[i].node, dues[i]);
    fx->ms += (3000 - 10) * 1000ULL;
    timers_tick(fx->t);
    assert_int_equal(timers_now(fx->t), 3000);
    assert_int_equal(late.fired, 1);
    const int expect[6] = {1, 1, 1, 0, 0, 0};
    for (int i = 0; i < 6; i++)
        assert_int_equal(m[i].fired, expect[i]);
    tick_to(fx, 3001);
    assert_int_equal(m[3].fired, 1);
    tick_to(fx, 4023);
    assert_int_equal(m[5].fired, 0);
    tick_to(fx, 4024);
    assert_int_equal(m[5].fired, 1);
    tick_to(fx, 5000);
    assert_int_equal(m[4].fired, 1);
}

static void test_close_in_fire(void **state)
{
    struct fx *fx = *state;
    struct tnode a = {.action = ACT_CLOSE}, b = {0}, c = {0}, d = {0};
    timers_arm(fx->t, &a.node, 3);
    timers_arm(fx->t, &b.node, 3); /* same slot, after a */
    timers_arm(fx->t, &c.node, 4); /* a later slot of the same catch-up tick */
    timers_arm(fx->t, &d.node, 50);
    advance_ms(fx, 5000);
    assert_true(fx->closed);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired + c.fired + d.fired, 0);
    assert_false(timers_armed(&b.node));
    assert_false(timers_armed(&c.node));
    assert_false(timers_armed(&d.node));
    /* Arming after close leaves the node disarmed; ticks and cancels do nothing. */
    timers_arm(fx->t, &b.node, 7);
    assert_false(timers_armed(&b.node));
    timers_cancel(fx->t, &b.node);
    advance_ms(fx, 5000);
    assert_int_equal(b.fired, 0);
}

static void test_close_disarms(void **state)
{
    struct fx *fx = *state;
    struct tnode n[5];
    memset(n, 0, sizeof(n));
    for (int i = 0; i < 5; i++)
        timers_arm(fx->t, &n[i].node, 2 + 700 * (uint32_t)i);
    timers_close(fx->t);
    timers_close(fx->t); /* a second close before the callback is harmless */
    fx->closed = true;
    for (int i = 0; i < 5; i++)
        assert_false(timers_armed(&n[i].node));
    timers_close(NULL);
}

/* The real clock and libuv timer: a node due at the next second fires about a second later. */
static void stop_loop(uv_timer_t *h)
{
    uv_stop(h->loop);
}

static int real_fired;
static void real_fire(struct timers_node *node, void *arg)
{
    real_fired++;
    uv_stop(arg);
}

static void test_real_loop(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct timers *t = timers_new(&loop, real_fire, &loop);
    assert_non_null(t);
    assert_int_equal(timers_now(t), 1);
    /* The wheel alone does not keep the loop alive. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);

    struct timers_node node = {0};
    timers_arm(t, &node, timers_now(t) + 1);
    uv_timer_t guard; /* stops the loop if the wheel never fires */
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, stop_loop, 3000, 0);
    uint64_t t0 = uv_hrtime();
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t elapsed_ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(real_fired, 1);
    assert_true(elapsed_ms >= 900 && elapsed_ms < 2900);
    assert_true(timers_now(t) >= 2);

    timers_close(t);
    uv_close((uv_handle_t *)&guard, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arm_fires_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sub_second_ticks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_due_now_and_past, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rearm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_periodic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rearm_past_in_fire_once_per_tick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_other_in_fire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_sibling_same_slot_both_orders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arm_other_in_fire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_far_future, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blocked_loop_catch_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_in_fire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_disarms, setup, teardown),
        cmocka_unit_test(test_real_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
